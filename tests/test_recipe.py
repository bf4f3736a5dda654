"""The training recipe (issue 29): keys left at ``auto`` (learning rate, head, word bigrams) are
picked once per study by a short probe, stored with the study, recorded by every trial, reused on
resume and by every worker; keys set by hand are never probed."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys
import threading
import time

import optuna
import pandas as pd
import pytest
import torch
from conftest import TINY, assert_refused, compose_config, default_study

from sweep import runner
from sweep.config import ConfigError
from sweep.data import vocab
from sweep.data.prepared import PreparedData
from sweep.models.frontends import frontend_of
from sweep.models.frontends.kind import Sizes
from sweep.search import study as study_module
from sweep.search.storage import journal_storage
from sweep.ship import export
from sweep.trial import lone as lone_module
from sweep.trial import recipe
from sweep.trial.recipe_fits import RecipeFits

# Every recipe key left at auto, with two choices each (conftest's TINY fixes them).
AUTO = [
    "train.lr=auto",
    "data.tokenizer.word_ngrams=auto",
    "train.recipe.hidden_dim=[64,0]",
    "processes=1",
]  # one after another: the spies below count in this process
# Enough documents (150 for validation) and epochs that learning shows past the probe's noise.
LEARNS = ["data.synthetic.num_docs=1500", "train.epochs=4", "train.patience=4"]


def right(pattern: str) -> torch.Tensor:
    """Per-document correctness from a string of 1s and 0s."""
    return torch.tensor([c == "1" for c in pattern])


def test_the_default_is_kept_within_the_paired_noise_and_replaced_beyond_it(tiny_cfg):
    rows = lambda *accs: [{"val_accuracy": a} for a in accs]  # noqa: E731
    default = right("1" * 80 + "0" * 20)  # 80%
    # 82%: two documents more, four that flip: one standard error is 100 * sqrt(4) / 100 = 2.0
    close = right("1" * 79 + "0" + "1" * 3 + "0" * 17)
    assert recipe.margin_points(tiny_cfg, default, close) == pytest.approx(2.0)
    assert recipe.pick(tiny_cfg, rows(80.0, 82.0), [default, close]) == 0
    # 90%: ten more right, none lost: the gain (10) beats sqrt(10) = 3.2 points
    better = right("1" * 90 + "0" * 10)
    assert recipe.pick(tiny_cfg, rows(80.0, 82.0, 90.0), [default, close, better]) == 2
    # a tie, or a worse challenger, keeps the default (the old behaviour)
    assert recipe.pick(tiny_cfg, rows(80.0, 80.0), [default, right("0" + "1" * 80 + "0" * 19)]) == 0
    assert recipe.pick(tiny_cfg, rows(80.0, 70.0), [default, right("1" * 70 + "0" * 30)]) == 0
    # a fixed margin in points replaces the paired one
    tiny_cfg.train.recipe.margin = 0
    assert recipe.pick(tiny_cfg, rows(80.0, 82.0), [default, close]) == 1


def test_recipe_settings_are_checked_with_their_key(tiny_overrides, tmp_path):
    bad = {"train.recipe.lr=[]": r"train\.recipe\.lr=\[\] must be a non-empty list",
           "train.recipe.lr=[0.01,-1]": r"train\.recipe\.lr=.* positive numbers",
           "train.recipe.hidden_dim=[64,-2]": r"train\.recipe\.hidden_dim=.* integers >= 0",
           "train.recipe.word_ngrams=[0]": r"train\.recipe\.word_ngrams=.* integers >= 1",
           "train.recipe.margin=-1": r"train\.recipe\.margin=-1",
           "train.recipe.stop_behind=-1": r"train\.recipe\.stop_behind=-1 must be a number",
           "train.recipe.embedding_dim=0": r"train\.recipe\.embedding_dim=0",
           "train.recipe.max_texts=5": r"train\.recipe\.max_texts=5 must be an integer >= 100",
           "train.lr=fast": r"train\.lr='fast' must be positive, or auto",
           "model.hidden_dim=wide": r"model\.hidden_dim='wide'",
           "data.tokenizer.word_ngrams=0": r"data\.tokenizer\.word_ngrams=0"}  # fmt: skip
    assert_refused(tiny_overrides, bad, ConfigError, tmp_path / "out")


def test_the_probe_takes_a_clearly_better_choice_and_otherwise_keeps_the_first(tiny_overrides):
    base = [*tiny_overrides, *LEARNS]
    # 1e-6 cannot learn in four epochs; 0.01 can, far past the noise of 150 documents
    slow_first = recipe.probe(compose_config([*base, "train.lr=auto", "train.recipe.lr=[1e-6,0.01]"]),
                              torch.device("cpu"))  # fmt: skip
    assert slow_first["choice"] == {"train.lr": 0.01}
    assert [row["lr"] for row in slow_first["probes"]] == [1e-6, 0.01]
    fast_first = recipe.probe(compose_config([*base, "train.lr=auto", "train.recipe.lr=[0.01,1e-6]"]),
                              torch.device("cpu"))  # fmt: skip
    assert fast_first["choice"] == {"train.lr": 0.01}
    # each choice trained at two cutoffs (the middle and the top of the axis), one width ...
    row = fast_first["probes"][0]
    assert len(row["vocab_sizes"]) == 2 and row["vocab_sizes"][0] < row["vocab_sizes"][1]
    assert fast_first["embedding_dim"] == 32 and len(row["epochs"]) == 2
    # ... but a challenger clearly behind at the first stops there; a better one trains both
    behind = fast_first["probes"][1]
    assert behind["stopped"] and behind["vocab_sizes"] == row["vocab_sizes"][:1]
    assert len(behind["epochs"]) == 1 and "stopped" not in slow_first["probes"][1]
    every = recipe.probe(compose_config([*base, "train.lr=auto", "train.recipe.lr=[0.01,1e-6]",
                                         "train.recipe.stop_behind=null"]), torch.device("cpu"))  # fmt: skip
    assert [len(r["vocab_sizes"]) for r in every["probes"]] == [2, 2] and every[
        "choice"
    ] == fast_first["choice"]


def test_a_challenger_is_stopped_only_when_clearly_behind_on_the_same_documents(tiny_cfg):
    incumbent = right("1" * 80 + "0" * 20)  # 80%
    # 60%: 20 fewer right, 20 that flip: one standard error is 100 * sqrt(20) / 100 = 4.5 points
    far = right("1" * 60 + "0" * 40)
    near = right("1" * 78 + "0" * 22)  # 2 behind, 2 flip: 1.4 points
    tiny_cfg.train.recipe.stop_behind = 2
    assert recipe.clearly_behind(tiny_cfg, incumbent, far)  # 20 > 2 x 4.5
    assert not recipe.clearly_behind(tiny_cfg, incumbent, near)  # 2 < 2 x 1.4
    assert not recipe.clearly_behind(tiny_cfg, incumbent, right("1" * 100))  # ahead
    tiny_cfg.train.recipe.stop_behind = 1
    assert recipe.clearly_behind(tiny_cfg, incumbent, near)  # 2 > 1.4
    tiny_cfg.train.recipe.stop_behind = None
    assert not recipe.clearly_behind(tiny_cfg, incumbent, far)
    # a stopped row is never picked, even with the best accuracy over its one fit
    rows = [{"val_accuracy": 60.0}, {"val_accuracy": 90.0, "stopped": True}]
    assert recipe.pick(tiny_cfg, rows, [far, incumbent]) == 0


def stored_recipe(tmp_path, overrides) -> dict:
    name = default_study(overrides) + study_module.RECIPE_SUFFIX
    journal = tmp_path / "studies" / default_study(overrides) / "journal.log"
    return optuna.load_study(study_name=name, storage=journal_storage(journal)).user_attrs


@pytest.fixture
def fits(monkeypatch):
    """Every training of a model: its learning rate and whether it has a hidden layer."""
    calls = []
    real_fit = lone_module.fit

    def spying_fit(model, *args, **kwargs):
        linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
        calls.append({"lr": kwargs["lr"], "hidden": linears > 1, "seed": kwargs["seed"]})
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(lone_module, "fit", spying_fit)
    return calls


def test_trials_and_seed_repeats_train_with_the_recipe_and_a_resume_reuses_it(
    tiny_overrides, tmp_path, fits, monkeypatch
):
    overrides = [*tiny_overrides, *AUTO, "report.repeats=1", "report.top_k=2"]
    monkeypatch.setattr(export.KeptStates, "drop", lambda self, params_list: None)  # keep all
    result = runner.run(compose_config(overrides), tmp_path / "out")
    attrs = stored_recipe(tmp_path, overrides)
    choice = attrs["recipe"]["choice"]
    assert set(choice) == {"train.lr", "model.hidden_dim", "data.tokenizer.word_ngrams"}
    probe_fits = sum(len(row["vocab_sizes"]) for row in attrs["recipe"]["probes"])
    assert probe_fits == 2 * (4 + 2)  # 2 x 2 structures, then the 2 other rates; 2 cutoffs
    # every trial records what it trained with: the recipe's pick
    table = result.table
    assert (table["recipe_lr"] == choice["train.lr"]).all()
    assert (table["recipe_hidden_dim"] == choice["model.hidden_dim"]).all()
    assert (table["recipe_word_ngrams"] == choice["data.tokenizer.word_ngrams"]).all()
    # ... and so does every fit after the probe: the one trial the probe did not train (its
    # fits of the pick answer the first two) and the seed repeats (seed 1; at most
    # report.top_k=2 repeated: those whose mean could change the recommendation)
    after, repeated = fits[probe_fits:], int(table["seeds"].notna().sum())
    assert 1 <= repeated <= 2 and len(after) == 1 + repeated
    assert [f["seed"] for f in after].count(1) == repeated
    assert {f["lr"] for f in after} == {choice["train.lr"]}
    assert {f["hidden"] for f in after} == {choice["model.hidden_dim"] > 0}
    # the study starts at the configurations the probe trained its pick at
    won = next(row for row in attrs["recipe"]["probes"]
               if all(row[name] == choice[key] for name, key in recipe.KEYS.items()))  # fmt: skip
    first = table.sort_values("trial").head(2)
    assert list(first["embedding_dim"]) == [attrs["recipe"]["embedding_dim"]] * 2
    assert list(first["vocab_size"]) == won["vocab_sizes"] and len(set(won["vocab_sizes"])) == 2
    assert table.sort_values("trial")["probe_fit"].fillna(False).tolist() == [True, True, False]
    # their weights are kept as a trained trial's are (the precisions and the export load them:
    # no fit above trained them again), and no other choice's are left
    kept = runner.kept_states(compose_config(overrides))
    assert all(kept.path({"embedding_dim": int(d), "vocab_size": int(k)}).is_file()
               for d, k in first[["embedding_dim", "vocab_size"]].itertuples(index=False))  # fmt: skip
    assert not (kept.folder / "probe").exists()
    # the page tells what the recipe picked
    assert "recipe" in (tmp_path / "out" / "report.html").read_text()

    # A resume reads the stored pick: no probe, the same recipe for the new trial.
    def no_probe(*args, **kwargs):
        raise AssertionError("a resumed study probed again")

    monkeypatch.setattr(recipe, "probe", no_probe)
    resumed = runner.run(compose_config([*overrides, "search.n_trials=4"]), tmp_path / "again")
    assert len(resumed.table) == 4 and (resumed.table["recipe_lr"] == choice["train.lr"]).all()
    assert (resumed.table["recipe_word_ngrams"] == choice["data.tokenizer.word_ngrams"]).all()


@pytest.mark.parametrize("pack", [1, 4])
def test_the_probes_fits_answer_the_first_trials_as_training_them_would(
    tmp_path, monkeypatch, pack
):
    """The study's first trials are the probe's configurations with its pick: the probe's fits
    answer them, with the figures training them again gives (same config, data and seed), and
    the sampler then goes on as it would have. Alone and in packs (the others train packed)."""
    base = [*TINY, "device=cpu", "train.lr=auto", "train.recipe.lr=[0.01,0.03]",
            "processes=1", "search.n_trials=5", f"search.pack={pack}"]  # fmt: skip
    fits, build = [], lone_module.Lone._build  # every model built, alone or in a pack

    def counted(self, *args, **kwargs):
        fits.append(1)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(lone_module.Lone, "_build", counted)

    def run(where: str):
        fits.clear()
        overrides = [*base, f"search.storage_dir={tmp_path / where}",
                     f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
        table = runner.run(compose_config(overrides), tmp_path / where / "out").table
        return table.sort_values("trial").reset_index(drop=True), len(fits)

    answered, answered_fits = run("answered")
    monkeypatch.setattr(RecipeFits, "answer", lambda self, params: None)  # as before: train
    trained, trained_fits = run("trained")
    assert answered["probe_fit"].fillna(False).tolist() == [True, True, False, False, False]
    assert (answered_fits, trained_fits) == (2 * 2 + 3, 2 * 2 + 5)  # 2 choices x 2 points
    # the sampler's first 4 (the probe's 2, then its Latin hypercube's) do not depend on timing
    same = ["embedding_dim", "vocab_size", "params_total", "epochs", "best_epoch"]
    pd.testing.assert_frame_equal(answered[same].head(4), trained[same].head(4))
    first = ["val_accuracy", "test_accuracy", "val_loss"]
    # one training: the same figures (a pack sums in another order: the loss to float noise)
    pd.testing.assert_frame_equal(answered[first].head(2), trained[first].head(2), rtol=1e-5)
    assert answered["val_history"].head(2).tolist() == trained["val_history"].head(2).tolist()


def test_the_probes_choices_side_by_side_pick_and_measure_as_one_after_another(
    tiny_overrides, tmp_path
):
    """``processes=2``: the choices of a stage train in two forked processes; the
    rows, the pick, the stop rule and the pick's fits (figures and kept weights) are those of
    one after another, and no child is left."""
    base = [*tiny_overrides, *LEARNS, "train.lr=auto", "train.recipe.lr=[0.01,1e-6,0.03]"]
    probed = {}
    for processes in (1, 2):
        cfg = compose_config([*base, f"processes={processes}"])
        kept = export.KeptStates(tmp_path / str(processes), cfg.seed)
        fits = RecipeFits(kept, cfg.seed)
        probed[processes] = recipe.probe(cfg, torch.device("cpu"), prepared={}, fits=fits), fits
        assert recipe.probe_processes(cfg, torch.device("cpu"), 2) == processes
    (alone, alone_fits), (side, side_fits) = probed[1], probed[2]
    clocked = ("train_seconds",)
    assert [{k: v for k, v in row.items() if k not in clocked} for row in side["probes"]] == [
        {k: v for k, v in row.items() if k not in clocked} for row in alone["probes"]]  # fmt: skip
    assert side["choice"] == alone["choice"] == {"train.lr": 0.01}
    assert side["probes"][1]["stopped"]  # 1e-6, beside 0.03, against the known incumbent
    assert len(side_fits.answers) == 2 and side_fits.answers.keys() == alone_fits.answers.keys()
    for key, figures in side_fits.answers.items():
        same = alone_fits.answers[key]
        assert figures["val_history"] == same["val_history"] and figures["epochs"] == same["epochs"]
    # the pick's weights, trained in a child, kept where the study keeps a trial's
    assert len(list((tmp_path / "2").glob("*.pt"))) == 2 and not (tmp_path / "2" / "probe").exists()
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("frontend", ["word", "subword"])
def test_a_sample_keeps_whole_documents_and_the_whole_corpus_vocabulary(tiny_overrides, frontend):
    """``PreparedData.sample``: at most the limit per split, seeded, each kept document exactly
    as in the whole data (word ids, or a subword view at any K), the same vocabulary."""
    extra = ["model.frontend=subword", "data.subword_vocab=400"] if frontend == "subword" else []
    cfg = compose_config([*tiny_overrides, *extra])
    kind = frontend_of(cfg.model)
    whole = PreparedData.load(cfg.data, cfg.seed, torch.device("cpu"), kind.encode)
    assert whole.sample(10_000, 0) is whole  # nothing over the limit: the data itself
    sample, again = whole.sample(30, 0), whole.sample(30, 0)
    assert sample.encoded.words == whole.encoded.words and sample.full_vocab == whole.full_vocab
    sizes = Sizes(embedding_dim=8, vocab_size=60, hash_buckets=0,
                  num_embeddings=60 + 2)  # fmt: skip
    for split in ("train", "validation", "test"):
        assert len(sample.labels[split]) == 30 and torch.equal(sample.ids[split], again.ids[split])
        n = len(whole.labels[split])
        rows = [i for i in range(n) if any(torch.equal(whole.ids[split][i], r)
                                           for r in sample.ids[split])]  # fmt: skip
        assert len(rows) >= 30  # every sampled row is one of the whole data's rows
        seen, kept = kind.view(whole, split, sizes), kind.view(sample, split, sizes)
        index = [find_row(whole.ids[split], r) for r in sample.ids[split]]
        assert index == sorted(index)  # corpus order
        assert torch.equal(kept.lengths, seen.lengths[index])
        width = int(kept.ids.shape[1])
        assert torch.equal(kept.ids, seen.ids[index][:, :width])
        assert torch.equal(sample.labels[split], whole.labels[split][index])
    assert not whole.sample(30, 1).ids["train"].equal(sample.ids["train"])  # another seed


def find_row(matrix: torch.Tensor, row: torch.Tensor) -> int:
    """The first index of ``row`` in ``matrix``: duplicates sort with their first."""
    return int(torch.nonzero((matrix == row).all(dim=1))[0])


def test_a_probe_on_a_sample_trains_on_it_and_its_fits_are_not_trials(tmp_path, monkeypatch):
    """``train.recipe.max_texts``: the probe's fits see at most that many texts per split, the
    study records it, and every trial trains (its fits answer nothing: not the same data)."""
    base = [*TINY, "device=cpu", "train.lr=auto", "train.recipe.lr=[0.01,0.03]",
            "data.tokenizer.word_ngrams=auto", "train.recipe.stop_behind=null",
            "processes=1", "search.n_trials=3", f"search.storage_dir={tmp_path / 'studies'}",
            f"data.cache_dir={tmp_path / 'cache'}", "train.recipe.max_texts=100"]  # fmt: skip
    seen, build = [], lone_module.Lone.train
    derived, derive = [], vocab.with_ngrams

    def counted(self, params, *args, **kwargs):
        seen.append(len(self.data.labels["train"]))
        return build(self, params, *args, **kwargs)

    def counted_ngrams(words, *args, **kwargs):
        derived.append(len(words.streams["train"][1]))
        return derive(words, *args, **kwargs)

    monkeypatch.setattr(lone_module.Lone, "train", counted)
    monkeypatch.setattr(vocab, "with_ngrams", counted_ngrams)
    result = runner.run(compose_config(base), tmp_path / "out")
    # words, bigrams, then the other rate: 3 choices x 2 points on the sample; 3 trials
    assert seen[:6] == [100] * 6 and seen[6:] == [320] * 3
    assert not result.table["probe_fit"].eq(True).any()
    # the probe's bigrams come from the sample's words; the whole corpus's only for a pick
    picked = int(result.table["recipe_word_ngrams"].iloc[0])
    assert derived == ([100, 320] if picked == 2 else [100])
    attrs = stored_recipe(tmp_path, base)["recipe"]
    assert attrs["train_texts"] == 100
    assert "on 100 training texts" in recipe.describe(attrs)


def test_a_challenger_beside_its_incumbent_gets_the_stop_rule_when_both_are_in(
    tiny_overrides, monkeypatch
):
    """Two processes: the first structure challenger trains beside the incumbent, before the
    incumbent's first fit is known; with every challenger clearly behind (forced here), its
    row is cut to its first fit when both are in: the table of one after another."""
    monkeypatch.setattr(recipe, "clearly_behind", lambda cfg, incumbent, challenger: True)
    base = [*tiny_overrides, "train.lr=auto", "train.recipe.lr=[0.01,0.03]",
            "data.tokenizer.word_ngrams=auto"]  # fmt: skip
    probed = [recipe.probe(compose_config([*base, f"processes={n}"]), torch.device("cpu"))
              for n in (1, 2)]  # fmt: skip
    rows = [[{k: v for k, v in row.items() if k != "train_seconds"} for row in p["probes"]]
            for p in probed]  # fmt: skip
    assert rows[0] == rows[1] and probed[0]["choice"] == probed[1]["choice"]
    assert [len(row["vocab_sizes"]) for row in rows[1]] == [2, 1, 1]  # every challenger stopped


def test_keys_set_by_hand_are_never_probed(tiny_overrides, tmp_path, fits):
    overrides = [*tiny_overrides, "train.lr=0.02", "model.hidden_dim=16",
                 "data.tokenizer.word_ngrams=auto", "processes=1"]  # fmt: skip
    table = runner.run(compose_config(overrides), tmp_path / "out").table
    stored = stored_recipe(tmp_path, overrides)["recipe"]
    assert set(stored["choice"]) == {"data.tokenizer.word_ngrams"}
    assert [row["word_ngrams"] for row in stored["probes"]] == [1, 2]
    assert (table["recipe_lr"] == 0.02).all() and (table["recipe_hidden_dim"] == 16).all()
    assert {f["lr"] for f in fits} == {0.02}  # the probe's fits too
    # every key fixed: no probe, no claim in the storage
    fixed = [*tiny_overrides, "train.lr=0.02", "model.hidden_dim=16"]
    runner.run(compose_config(fixed), tmp_path / "fixed")
    with pytest.raises(KeyError):
        stored_recipe(tmp_path, fixed)


def test_one_worker_probes_another_waits_and_a_dead_claim_is_taken_over(tiny_cfg, tmp_path):
    search = tiny_cfg.search.copy()
    search.storage = None  # the default: a journal file per study under storage_dir
    search.storage_dir = str(tmp_path / "studies")
    search.study_name = "s"
    calls = []

    def probe(beat):
        calls.append(1)
        beat()
        return {"choice": {"train.lr": 0.03}, "probes": [], "embedding_dim": 32, "seconds": 0.1}

    assert study_module.settle_recipe(search, probe)["choice"] == {"train.lr": 0.03}
    assert study_module.settle_recipe(search, probe)["choice"] == {"train.lr": 0.03}
    assert len(calls) == 1  # the second read the stored pick

    # A claim whose worker was killed mid-probe (this host, a pid that no longer exists).
    storage = journal_storage(tmp_path / "studies" / "t" / "journal.log")
    claim = optuna.create_study(storage=storage, study_name="t" + study_module.RECIPE_SUFFIX)
    claim.set_user_attr("worker", f"{socket.gethostname()}:{dead_pid()}")
    claim.set_user_attr("heartbeat", time.time())
    search.study_name = "t"
    assert study_module.settle_recipe(search, probe)["choice"] == {"train.lr": 0.03}
    assert len(calls) == 2


def test_a_worker_that_finds_a_live_claim_waits_for_its_pick(tiny_cfg, tmp_path):
    """Another worker (here: a thread of this live process) holds the claim and stores its pick
    a moment later: this one waits for it and never probes."""
    search = tiny_cfg.search.copy()
    search.storage, search.storage_dir, search.study_name = None, str(tmp_path / "studies"), "w"
    storage = journal_storage(tmp_path / "studies" / "w" / "journal.log")
    claim = optuna.create_study(storage=storage, study_name="w" + study_module.RECIPE_SUFFIX)
    claim.set_user_attr("worker", study_module.worker())
    claim.set_user_attr("heartbeat", time.time())
    pick = {"choice": {"model.hidden_dim": 0}, "probes": [], "embedding_dim": 32, "seconds": 1.0}
    later = threading.Timer(1.0, lambda: claim.set_user_attr("recipe", pick))
    later.start()

    def probe(beat):
        raise AssertionError("a second worker probed")

    started = time.time()
    assert study_module.settle_recipe(search, probe) == pick
    assert time.time() - started >= 0.9
    later.join()


def dead_pid() -> int:
    """A process id that no longer exists."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_plan_mode_probes_nothing_and_takes_the_first_choices(tiny_overrides, tmp_path, fits):
    cfg = compose_config([*tiny_overrides, *AUTO, "plan=true", "plan_points=2"])
    runner.run(cfg, tmp_path / "out")
    plan = pd.read_csv(tmp_path / "out" / "plan.csv")
    assert fits == [] and len(plan) == 4


def test_a_searched_key_or_a_single_choice_is_not_probed(tiny_overrides):
    every = compose_config([*tiny_overrides, *AUTO])
    assert recipe.to_probe(every) == ["word_ngrams", "hidden_dim", "lr"]
    searched = compose_config([*tiny_overrides, *AUTO, "+search.space.lr={type:float,low:0.001,"
                               "high:0.1,log:true,key:train.lr}"])  # fmt: skip
    assert recipe.to_probe(searched) == ["word_ngrams", "hidden_dim"]
    single = compose_config([*tiny_overrides, *AUTO, "train.recipe.word_ngrams=[2]"])
    assert recipe.to_probe(single) == ["hidden_dim", "lr"]
    assert recipe.fixed(single).data.tokenizer.word_ngrams == 2  # takes its one choice


def test_the_reproduce_command_trains_the_recommended_trial_again_exactly(tmp_path):
    """A probed sweep (every recipe key auto), run as a user runs it: the page's "Reproduce it
    alone" command, run as printed, probes nothing (the recipe's picks and the seed are in it)
    and trains the recommended configuration to the very same validation accuracy (CPU)."""
    import html
    import re
    import shlex

    from conftest import TINY, run_cli

    base = [*TINY, *AUTO, "device=cpu", "search.n_trials=4", "seed=3"]
    first = run_cli([*base, "hydra.run.dir=first"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    page = (tmp_path / "first" / "report.html").read_text()
    command = html.unescape(re.search(r"Reproduce it alone:</p><pre>(.*?)</pre>", page).group(1))
    argv = shlex.split(command)
    assert argv[:2] == ["python", "run_sweep.py"] and "seed=3" in argv
    picked = {a.split("=", 1)[0] for a in argv[2:]}
    assert {"train.lr", "data.tokenizer.word_ngrams", "model.hidden_dim"} <= picked
    again = run_cli([*argv[2:], "hydra.run.dir=again"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "recipe probe 1:" not in again.stdout + again.stderr  # nothing probed again
    trials = pd.read_csv(tmp_path / "first" / "trials.csv")
    rec = trials[trials["recommended"]].iloc[0]
    alone = pd.read_csv(tmp_path / "again" / "trials.csv")
    assert len(alone) == 1
    assert (alone.loc[0, "embedding_dim"], alone.loc[0, "vocab_size"]) == (
        rec["embedding_dim"],
        rec["vocab_size"],
    )
    assert alone.loc[0, "val_accuracy"] == rec["val_accuracy"]  # exactly
    assert alone.loc[0, "test_accuracy"] == rec["test_accuracy"]
