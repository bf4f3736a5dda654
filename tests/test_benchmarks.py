"""The benchmark commands: each answers --help and their helpers run here (the benchmarks read
../shared and take minutes to hours; ``test_benchmark_runs.py``, slow, runs each on tiny data)."""

from __future__ import annotations

import importlib
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from sweep.benchmarks.models import markdown
from sweep.benchmarks.search_efficiency import Reference, hypervolume, summary


def test_hypervolume_of_a_staircase():
    # Points (log params, accuracy): (1, 50), (2, 80), (3, 70 dominated), ref x = 4.
    hv = hypervolume(np.array([50.0, 80.0, 70.0]), np.array([1.0, 2.0, 3.0]), 4.0)
    assert hv == pytest.approx(1 * 50 + 2 * 80)


def test_hypervolume_grows_with_a_better_front():
    base = hypervolume(np.array([60.0]), np.array([2.0]), 4.0)
    assert hypervolume(np.array([60.0, 70.0]), np.array([2.0, 3.0]), 4.0) > base
    assert hypervolume(np.array([60.0, 50.0]), np.array([2.0, 3.0]), 4.0) == base


def test_search_oracle_is_the_cheapest_subset_of_the_grid_that_reaches_99pct():
    # A hand-made grid: five trials on the front, one dominated (and slow). The 75.2% trial
    # adds 0.3% of the area (under the 1% slack), the largest none (it is the reference size).
    grid = pd.DataFrame({
        "state": ["COMPLETE"] * 6,
        "val_accuracy": [60.0, 75.0, 75.2, 84.0, 85.0, 70.0],
        "params_total": [1e3, 1e4, 1e5, 1e6, 1e7, 1e6],
        "duration_seconds": [1.0, 2.0, 4.0, 30.0, 60.0, 90.0],
        "pareto": [True, True, True, True, True, False],
        "recommended": [False, False, False, True, False, False],
    })  # fmt: skip
    ref = Reference(grid.assign(seconds=grid["duration_seconds"].cumsum()), tolerance=0.5)
    oracle = ref.oracle(grid)
    # Brute force over every subset of the grid with the benchmark's own hypervolume.
    best = min(
        (sum(grid["duration_seconds"][list(s)]), len(s))
        for n in range(1, 7) for s in itertools.combinations(range(6), n)
        if ref.of(grid.iloc[list(s)]) >= 0.99 * ref.hv
    )  # fmt: skip
    assert (oracle["seconds_to_99pct_hv"], oracle["complete"]) == best == (33.0, 3)
    assert 99.0 <= oracle["final_hv_pct"] <= 100.0
    # The cheapest right trial: 84% at 1e6 params (85% at 1e7 is over 1.5x its params).
    assert oracle["seconds_to_right_pick"] == 30.0 and oracle["final_pick_right"]
    # Past 22 front trials the exhaustive search would not fit: no oracle, not a crash.
    n = 23
    wide = pd.DataFrame({"state": ["COMPLETE"] * n, "val_accuracy": np.linspace(50, 90, n),
                         "params_total": np.logspace(3, 7, n), "duration_seconds": [1.0] * n,
                         "pareto": [True] * n, "recommended": [True] + [False] * (n - 1)})  # fmt: skip
    assert Reference(wide.assign(seconds=1.0), tolerance=0.5).oracle(wide) is None


def test_search_summary_medians_seeds_and_gives_no_ratio_to_a_reseeded_grid():
    runs = pd.DataFrame({
        "set": ["trec"] * 7,
        "strategy": ["tpe", "tpe", "tpe", "ehvi", "ehvi", "grid-reseeded", "grid-reseeded"],
        "seconds_to_99pct_hv": [20.0, 30.0, np.nan, 5.0, 10.0, 25.0, np.nan],
        "seconds_to_right_pick": [10.0, 20.0, 30.0, 4.0, 6.0, 2.0, 3.0],
        "final_hv_pct": [99.5, 100.0, 98.0, 101.0, 102.0, 99.2, 96.6],
        "run_seconds": [40.0] * 7,
        "pruned": [0] * 7,
    })  # fmt: skip
    table = summary(runs).set_index("strategy")
    # A run that never got there counts as the slowest: tpe's median is its second, 30 s.
    assert table.loc["tpe", "seconds_to_99pct_hv"] == 30.0
    assert table.loc["tpe", "reached_99pct_hv"] == "2/3"
    assert table.loc["ehvi", "ratio_to_tpe_99pct_hv"] == pytest.approx(7.5 / 30.0, abs=0.01)
    assert table.loc["ehvi", "ratio_to_tpe_right_pick"] == pytest.approx(5.0 / 20.0)
    # The reseeded grid is the grid's own noise, not a search: its share, no ratio.
    assert table.loc["grid-reseeded", "final_hv_pct"] == pytest.approx(97.9)
    assert table.loc["grid-reseeded", "reached_99pct_hv"] == "1/2"
    assert table[["ratio_to_tpe_99pct_hv", "ratio_to_tpe_right_pick"]].loc[
        "grid-reseeded"].isna().all()  # fmt: skip


def test_markdown_table():
    text = markdown(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    assert text.splitlines() == ["| a | b |", "| --- | --- |", "| 1 | x |", "| 2 | y |"]


def test_data_prep_benchmark_prints_time_and_memory(tmp_path, capsys):
    from sweep.benchmarks import data_prep

    data_prep.main(["--docs", "3000", "--out", str(tmp_path)])
    row = pd.read_csv(tmp_path / "data_prep.csv").iloc[0]
    assert row["documents"] == 3000 and row["all_tokens_kept"] > 3000 * 40
    assert 0 < row["total_s"] < 60 and row["peak_rss_mb"] >= row["rss_after_imports_mb"] > 0
    assert "peak_rss_mb" in capsys.readouterr().out


def test_speed_benchmark_pieces_train_both_sides_on_the_same_data(tiny_cfg):
    from sweep.benchmarks import speed
    from sweep.benchmarks.reference import reference_trial
    from sweep.data import vocab
    from sweep.data.corpus import load_corpus
    from sweep.data.prepared import PreparedData

    corpus = load_corpus(tiny_cfg.data, 0)
    encoded = vocab.build(corpus, tiny_cfg.data.tokenizer, tiny_cfg.data.max_length)
    data = PreparedData.from_encoded(encoded, "tiny", corpus.stats, "cpu")
    train = {**speed.TRAIN, "epochs": 3, "eval_batch_size": 256, "bucket": True}
    ours = speed.our_trial(speed.trial_config(tiny_cfg, {}, train), data, 8, 0, curve=True)
    labels = {s: encoded.labels[s].tolist() for s in corpus.texts}
    settings = {k: v for k, v in train.items() if k not in ("eval_batch_size", "bucket")}
    theirs = reference_trial(
        corpus.texts, labels, vocab.Tokenizer.from_config(tiny_cfg.data.tokenizer),
        vocab_size=encoded.full_vocab_size, embedding_dim=8, num_classes=encoded.num_classes,
        max_length=tiny_cfg.data.max_length, seed=0, curve=True, **settings,
    )  # fmt: skip
    for run in (ours, theirs):
        assert run["seconds"] > 0 and 0 <= run["test_accuracy"] <= 100
        assert 1 <= len(run["curve"]) <= 3
        times = [t for t, _ in run["curve"]]
        assert times == sorted(times) and times[-1] <= run["seconds"]
    assert 0 < ours["cutoff_seconds"] < ours["seconds"]


def test_time_to_reach_and_reach():
    from sweep.benchmarks.speed import reach, time_to_reach

    curve = [(0.1, 50.0), (0.2, 70.0), (0.3, 65.0), (0.4, 80.0)]
    assert time_to_reach(curve, 70.0) == 0.2 and time_to_reach(curve, 75.0) == 0.4
    assert np.isnan(time_to_reach(curve, 81.0))
    mean, reached = reach([{"curve": curve}, {"curve": [(1.0, 60.0)]}], 70.0)
    assert mean == 0.2 and reached == "1/2"


def test_gpu_command_steps_keep_their_figures_through_a_failure_or_a_timeout(monkeypatch, tmp_path):
    import sys

    import torch

    from sweep.benchmarks import gpu

    ok = gpu.step("ok", [sys.executable, "-c", "print('12 passed, 1 failed')"], 30)
    assert ok["exit"] == 0 and "12 passed" in ok["output"]
    slow = gpu.step("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 1)
    assert slow["exit"] == "timeout" and slow["seconds"] < 10
    # A sweep's rate comes from its progress lines: cut by its limit, it still gives one.
    line = "trial {0}/12 (#{0}) complete in 0.5s: embedding_dim=4 ...\n"
    lines = "".join(line.format(i) for i in range(1, 4)) + "trial 4/12 (#4) fail in 0.1s\n"
    cut = gpu.step("cut", [sys.executable, "-c", f"print({lines!r}, flush=True); "
                           "import time; time.sleep(30)"], 2)  # fmt: skip
    assert gpu.sweep_figure(cut).endswith(f"(3 trials in {cut['seconds']} s, timed out)")
    assert gpu.sweep_figure({"exit": 0, "seconds": 36.0, "output": lines}) == "300 trials/h"
    assert gpu.sweep_figure({"exit": 1, "seconds": 3.0, "output": "Traceback"}) == "failed"
    # The pytest step: its summary, or what its verbose lines said before it was cut.
    verbose = ("tests/test_gpu.py::test_a[bag] PASSED [ 10%]\n"
               "tests/test_gpu.py::test_a[cnn] FAILED [ 20%]\n")  # fmt: skip
    summary = "==== 1 failed, 1 passed, 3 deselected in 40.12s ====\nwarning on stderr\n"
    assert gpu.gpu_tests_figure({"exit": 1, "output": verbose + summary}) == "1 failed, 1 passed"
    assert gpu.gpu_tests_figure({"exit": "timeout", "output": verbose}) == (
        "1 passed, 1 failed (timed out)"
    )
    # The memory table: the rows written before the step was cut (one model at a time).
    rows = pd.DataFrame({"est / measured": [0.9, 1.1], "probe / measured": [0.99, 1.01]})
    rows.to_csv(tmp_path / "memory.csv", index=False)
    assert gpu.memory_figure({"exit": "timeout"}, tmp_path / "memory.csv") == (
        "est/measured 0.90-1.10, probe/measured 0.990-1.010 (2 rows, timed out)"
    )
    assert gpu.memory_figure({"exit": 0}, tmp_path / "none.csv") == "failed"
    pd.DataFrame([]).to_csv(tmp_path / "empty.csv", index=False)  # no model had a row yet
    assert gpu.memory_figure({"exit": "timeout"}, tmp_path / "empty.csv") == "no row"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu.main(["--out", "unused"])


def test_shipping_benchmark_writes_fasttext_files_of_our_tokens(tmp_path):
    from conftest import compose_config

    from sweep.benchmarks.shipping import fasttext_files

    cfg = compose_config(["data.synthetic.num_docs=300", f"data.cache_dir={tmp_path / 'c'}"])
    files = fasttext_files(cfg, tmp_path / "ft")
    lines = files["train"].read_text(encoding="utf-8").splitlines()
    assert len(lines) > 100 and all(line.startswith("__label__") for line in lines)
    assert set(files) == {"train", "validation", "test"}


def test_packing_benchmark_controlled_trains_the_same_configurations_alone_and_packed(tmp_path):
    from sweep.benchmarks.packing import controlled

    tiny = ["data=synthetic", "data.synthetic.num_docs=400", "train.epochs=2"]
    row = controlled(tiny, 4, tmp_path)
    assert row["trials"] == 4 and row["same val_accuracy"] == "4/4"
    assert row["packs"] < 4 and row["trained alone"] < 4  # some trials shared a pack
    # Sparse tables train alone (model.sparse=true: every trial), and the row says so.
    assert controlled([*tiny, "model.sparse=true"], 2, tmp_path)["trained alone"] == 2


# The commands: modules with a main (reference is a library of the others), the fastText peer
# aside (it runs in fastText's own virtual environment).
BENCHMARKS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parents[1] / "sweep" / "benchmarks").glob("*.py")
    if "\ndef main(" in p.read_text() and p.stem != "fasttext_peer"
)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_command_answers_help(name, capsys):
    """``python -m sweep.benchmarks.<name> --help``: each imports and parses its arguments."""
    module = importlib.import_module(f"sweep.benchmarks.{name}")
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


def test_defaults_benchmark_tunes_fasttext_on_the_sweeps_tokens(tmp_path, monkeypatch):
    """The fastText side of ``python -m sweep.benchmarks.defaults`` up to fastText itself (its
    own virtual environment): the config composes, the corpus loads and tokenizes, the best
    validation run is picked; fastText reads our words alone (it makes its own n-grams)."""
    from sweep.benchmarks import defaults, speed

    seen = {}

    def runs(python, encoded, tokens, folder, dim, threads, grid, word_ngrams):
        seen["splits"] = {s: len(t) for s, t in tokens.items()}
        seen["grid"], seen["threads"] = grid, threads
        seen["bigrams"] = any(" " in w for doc in tokens["train"] for w in doc)  # ours: "a b"
        return pd.DataFrame({"lr": [0.1, 0.5], "epoch": [5, 25], "val_accuracy": [60.0, 70.0 + dim],
                             "test_accuracy": [58.0, 69.0], "train_seconds": [1.0, 2.0]})  # fmt: skip

    monkeypatch.setattr(speed, "ensure_fasttext", lambda venv: "python")
    monkeypatch.setattr(speed, "fasttext_runs", runs)
    data = [*TINY, "data.tokenizer.word_ngrams=auto"]
    table = defaults.fasttext_grid("synthetic", data, tmp_path, [10, 50], [1, 2], tmp_path / "v")
    assert (
        len(table) == 2 * 2 * 2 and seen["threads"] == 2 and seen["grid"] == defaults.FASTTEXT_GRID
    )
    assert len(defaults.FASTTEXT_GRID) == 4 * 3 and not seen["bigrams"]
    got = defaults.fasttext_best(table)
    assert got["fastText test acc"] == 69.0 and got["fastText grid s"] == 4 * (1.0 + 2.0)
    assert got["fastText dim, lr, epochs, ngrams"] == "50, 0.5, 25, 1"
    # the grid is cached: a second call reads it back without running fastText
    monkeypatch.setattr(speed, "fasttext_runs", None)
    cached = defaults.fasttext_grid("synthetic", data, tmp_path, [10], [1], tmp_path / "v")
    assert len(cached) == 2 and set(cached["dim"]) == {10}
    assert set(seen["splits"]) == {"train", "validation", "test"} and seen["splits"]["train"] > 0


def test_defaults_benchmark_averages_seeds_with_the_differences_standard_error():
    """``--seeds``: one mean row per set and variant run at several seeds, with the standard
    error of ``pick - fastText`` across them; a set run at one seed gets no mean row, and one
    without fastText no difference."""
    from sweep.benchmarks import defaults

    rows = pd.DataFrame([
        {"data": "trec", "variant": "v", "seed": 0, "best-val trial: test acc": 88.0,
         "recommended: test acc": 87.0, "wall s": 30.0, "fastText test acc": 90.0,
         "pick - fastText": -2.0},
        {"data": "trec", "variant": "v", "seed": 1, "best-val trial: test acc": 91.0,
         "recommended: test acc": 90.0, "wall s": 40.0, "fastText test acc": 90.0,
         "pick - fastText": 1.0},
        {"data": "synthetic", "variant": "v", "seed": 0, "best-val trial: test acc": 80.0,
         "recommended: test acc": 80.0, "wall s": 50.0},
        {"data": "synthetic", "variant": "v", "seed": 1, "best-val trial: test acc": 82.0,
         "recommended: test acc": 81.0, "wall s": 70.0},
        {"data": "sst2", "variant": "v", "seed": 0, "best-val trial: test acc": 80.0,
         "recommended: test acc": 80.0, "wall s": 20.0, "fastText test acc": 79.0,
         "pick - fastText": 1.0},
    ])  # fmt: skip
    means = defaults.over_seeds(rows).set_index("data")
    assert list(means.index) == ["trec", "synthetic"] and set(means["seed"]) == {"mean"}
    trec = means.loc["trec"]
    assert (trec["best-val trial: test acc"], trec["wall s"], trec["pick - fastText"]) == (
        89.5, 35.0, -0.5)  # fmt: skip
    assert trec["pick - fastText ±"] == 1.5  # std of (-2, 1) is 2.12; / sqrt(2)
    assert means.loc["synthetic", "recommended: test acc"] == 80.5
    assert pd.isna(means.loc["synthetic", "pick - fastText ±"])
    assert defaults.seeded("trec", 0) == "trec" and defaults.seeded("trec", 2) == "trec-s2"


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux's /proc")
def test_corpus_scale_measures_a_process_trees_memory_once(tmp_path):
    """A parent holding 200 MiB forks two children that touch 100 MiB each of their own: the
    largest process's peak is a child's (the parent's pages and its own), the tree's Pss counts
    the parent's pages once and each child's own: what the run takes from the machine."""
    from sweep.benchmarks import corpus_scale

    script = ("import os, time\n"
              "def touch(mib):\n"
              "    a = bytearray(mib << 20); a[::4096] = b'1' * len(a[::4096]); return a\n"
              "held = touch(200)\n"
              "for _ in range(2):\n"
              "    if os.fork() == 0:\n"
              "        own = touch(100); time.sleep(2.5); os._exit(0)\n"
              "os.wait(); os.wait()\n")  # fmt: skip
    result, wall, memory = corpus_scale.measured([sys.executable, "-c", script], tmp_path)
    assert result.returncode == 0 and wall > 2.5
    assert 290 <= memory["peak_rss_mb"] <= 380  # one child: the parent's 200, its own 100
    assert 390 <= memory["peak_pss_mb"] <= 480  # 200 once, and 100 for each child
    assert 0 < memory["peak_pss_at_s"] < wall


def test_probe_sample_prints_each_limits_pick_against_every_texts(tmp_path):
    from sweep.benchmarks import probe_sample

    tiny = [o for o in TINY if not o.startswith(("data.synthetic.num_docs", "train.lr"))]
    probe_sample.main(["--docs", "400", "--seeds", "0", "--limits", "null", "100", "--out",
                       str(tmp_path), "--", *tiny, "train.lr=auto",
                       "train.recipe.lr=[0.01,0.03]"])  # fmt: skip
    table = pd.read_csv(tmp_path / "probe_sample-400.csv")
    assert table["max_texts"].astype(str).tolist() == ["every", "100"]
    assert table["train_texts"].tolist() == [320, 100] and (table["fits"] >= 3).all()
    assert set(table["lr"]) <= {0.01, 0.03}
    summary = pd.read_csv(tmp_path / "probe_sample-400-summary.csv")
    assert summary.loc[summary["max_texts"] == "every", "same pick as every text"].item() == 1


def test_corpus_scale_exponents_and_the_step_timer():
    """The growth exponent per 10x is log10 of the time ratio (1.0: linear; tiny phases are
    left out), and the step timer trains a real step on a table of the given rows."""
    from sweep.benchmarks import corpus_scale

    table = pd.DataFrame([
        {"documents": 10_000, "wall_s": 10.0, "peak_rss_mb": 500, "data_s": 1.0, "training_s": 0.01},
        {"documents": 100_000, "wall_s": 100.0, "peak_rss_mb": 1000, "data_s": 12.0, "training_s": 5.0},
    ])  # fmt: skip
    row = corpus_scale.exponents(table).iloc[0]
    assert row["wall_s"] == 1.0 and row["data_s"] == pytest.approx(1.08)
    assert row["peak_rss_mb"] == pytest.approx(0.3, abs=0.01)
    assert np.isnan(row["training_s"])  # 0.01 s: too small to say
    assert corpus_scale.step_ms(5_000, steps=2) > 0


def test_ngram_bound_benchmark_trains_each_bound_on_one_word_encoding(tmp_path, monkeypatch):
    """The bound benchmark on a tiny synthetic set: a row per min count and width, the
    rows shrinking as the bound rises."""
    from sweep.benchmarks import ngram_bound

    monkeypatch.setattr(ngram_bound, "RECIPE", [*ngram_bound.RECIPE, "train.epochs=1",
                                               "data.synthetic.num_docs=300"])  # fmt: skip
    args = type("Args", (), {"min_counts": [1, 3], "dims": [4], "seeds": [0]})()
    rows = ngram_bound.bench_set("synthetic", tmp_path, args, str(tmp_path / "cache"))
    assert [r["min_count"] for r in rows] == [1, 3]
    assert rows[0]["words_and_ngrams"] > rows[1]["words_and_ngrams"]


def test_fasttext_zip_compares_the_best_file_under_each_budget_by_validation():
    """Each side's file of best validation accuracy within 100 KB and 1 MB (ties to the smaller
    file), its test accuracy reported; our files at every precision that was measured; a
    budget no file fits gives no row's figures, not an error."""
    import pandas as pd

    from sweep.benchmarks import fasttext_zip

    word = pd.DataFrame({
        "trial": [0, 1], "val_accuracy": [80.0, 85.0], "test_accuracy": [79.0, 84.0],
        "file_bytes_fp32": [400_000, 2_000_000], "file_bytes_int8": [100_000, 500_000],
        "val_accuracy_int8": [79.5, None], "test_accuracy_int8": [78.0, None],
    })  # fmt: skip
    mixed = pd.DataFrame({"trial": [0], "val_accuracy": [79.5], "test_accuracy": [81.0],
                          "file_bytes_fp32": [90_000]})  # fmt: skip
    files = fasttext_zip.our_files({"word": word, "mixed": mixed})
    assert len(files) == 4  # trial 1's int8 accuracy was not measured
    ftz = pd.DataFrame({
        "quantized": [False, True, True], "cutoff": [None, 1000, 10000],
        "dsub": [None, 2, 2], "qnorm": [None, True, False], "retrain": [None, True, True],
        "file_bytes": [5_000_000, 60_000, 300_000], "val_accuracy": [86.0, 78.0, 84.0],
        "test_accuracy": [85.0, 77.0, 83.0],
    })  # fmt: skip
    rows = {
        r["budget"]: r for r in fasttext_zip.compare("s", 0, {"word": word, "mixed": mixed}, ftz)
    }
    small, large = rows["100 KB"], rows["1 MB"]
    # 100 KB: word int8 of trial 0 (79.5, 100,000 B) ties mixed fp32 (79.5, 90,000 B): smaller
    assert (
        small["ours: kind, precision, trial"] == "mixed, fp32, 0" and small["ours: bytes"] == 90_000
    )
    assert small["ftz: test acc"] == 77.0 and small["ours - ftz"] == 4.0
    assert large["ours: kind, precision, trial"] == "word, fp32, 0"  # 80.0 at 400 KB
    assert large["ftz: cutoff, dsub, qnorm, retrain"] == "10000, 2, False, True"
    assert large["ours - ftz"] == 79.0 - 83.0
    assert fasttext_zip.best_under(files, 1_000, "val", "bytes") is None
