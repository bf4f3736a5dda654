"""The study in-process: tiny sweeps, resume, failures, config checks, extra search keys."""

from __future__ import annotations

import json
import logging
import math
import re

import pandas as pd
import param_oracles
import pytest
from conftest import compose_config

from sweep import runner
from sweep.config import ConfigError
from sweep.report import build as report
from sweep.search.settings import SearchError
from sweep.trial import lone as trial_module
from sweep.trial import recipe

REQUIRED = ["trial", "state", "embedding_dim", "vocab_size", "num_embeddings", "params_total",
            "params_embedding", "val_accuracy", "test_accuracy", "gpu_peak_mb", "train_seconds",
            "tokens_per_second", "pareto", "recommended", "fail_reason", "min_freq",
            "train_coverage", "val_oov_rate", "embedding_share", "model_mb", "val_loss",
            "epochs", "est_peak_mb", "device", "seed"]  # fmt: skip


def test_tiny_sweep_writes_every_report(tiny_cfg, tmp_path):
    result = runner.run(tiny_cfg, tmp_path / "out")
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert set(REQUIRED) <= set(trials.columns)
    assert len(trials) == 3 and (trials["state"] == "COMPLETE").all()
    assert trials["gpu_peak_mb"].isna().all()  # CPU: missing, never 0
    assert (trials["est_peak_mb"] > 0).all()
    assert trials["val_accuracy"].between(0, 100).all()
    assert (trials["tokens_per_second"] > 0).all()
    assert (trials["num_embeddings"] == trials["vocab_size"] + 2).all()
    for row in trials.itertuples():
        expected = param_oracles.bag(
            row.num_embeddings,
            row.embedding_dim,
            4,
            hidden_dim=recipe.fixed(tiny_cfg).model.hidden_dim,
        )
        assert (row.params_total, row.params_embedding) == (
            expected["total"],
            expected["embedding"],
        )
    assert trials["recommended"].sum() == 1 and trials["pareto"].sum() >= 1
    pareto = pd.read_csv(tmp_path / "out" / "pareto.csv")
    assert pareto["trial"].tolist() == trials.loc[trials["pareto"], "trial"].tolist()
    # The cutoff view is a tiny part of a trial (summed over the trials, against their whole
    # durations: one pause of the machine in a 5 ms view must not fail it; against training
    # alone, 55 ms here, it did with four processes on the 2 cores); the split adds up.
    assert trials["cutoff_seconds"].sum() < 0.05 * trials["duration_seconds"].sum()
    timing = json.loads((tmp_path / "out" / "timing.json").read_text())
    assert timing["trials"] == 3 and timing["training_s"] >= trials["train_seconds"].sum()
    parts = ("training_s", "data_s", "cutoff_s", "reports_s", "recipe_s", "search_and_storage_s",
             "repeats_s", "precisions_s", "export_s", "other_s")  # fmt: skip
    assert sum(timing[k] for k in parts) == pytest.approx(timing["total_s"])
    # Each phase is its own: the front's precisions and the export are measured, the rest
    # (start-up, opening the study) is a small remainder, never negative.
    assert timing["precisions_s"] > 0 and timing["export_s"] > 0
    assert 0 <= timing["other_s"] < 0.5 * timing["total_s"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Recommended configuration" in page
    # The page's time line: every phase, adding up to the run up to the page's last write (the
    # export and that write itself come after it; each row rounded to 0.1 s).
    timeline = re.search(r'<table id="timeline">.*?</table>', page, re.S).group(0)
    seconds = [float(x) for x in re.findall(r"<td>(-?[0-9.]+) s</td>", timeline)]
    assert len(seconds) == 10 and min(seconds) >= 0
    late = timing["export_s"] + timing["reports_s"]
    assert timing["total_s"] - late - 0.5 <= sum(seconds) <= timing["total_s"] + 0.5
    # Per-class counts for every split (400 documents: 320 / 40 / 40, stratified).
    classes = re.search(r'<table id="classes".*?</table>', page, re.S).group(0)
    assert classes.count("<tr>") == 1 + 4 + 1  # header, four classes, total
    assert '<td data-v="all">all</td><td data-v="320">320</td><td data-v="40">40</td>' in classes
    assert result.recommended["trial"] == int(trials.loc[trials["recommended"], "trial"].iloc[0])


def test_seed_repeats_side_by_side_store_what_one_after_another_stores(tiny_overrides, tmp_path):
    """``processes=2``: a round's seed repeats train two at a time in forked children; the
    repeats stored, the table's means and the time line's count of fits are those of one after
    another."""
    got = {}
    for processes in (1, 2):
        overrides = [*tiny_overrides, "report.repeats=2", "report.top_k=3", "search.n_trials=4",
                     f"processes={processes}", f"search.storage_dir={tmp_path / str(processes)}"]  # fmt: skip
        result = runner.run(compose_config(overrides), tmp_path / f"out-{processes}")
        timing = json.loads((tmp_path / f"out-{processes}" / "timing.json").read_text())
        means = result.table[["trial", "seeds", "val_accuracy_mean", "test_accuracy_std"]]
        got[processes] = (means.fillna(-1).to_dict("list"), timing["repeat_fits"])
    assert got[2] == got[1] and got[1][1] >= 2


def test_reports_are_rewritten_within_their_share_of_the_time(
    tiny_overrides, tmp_path, monkeypatch, caplog
):
    """report.time_share=1: after every trial; a share no write fits: after the first trial and
    at the end only. The progress line's best and front come from the storage either way."""
    writes, lines = {}, {}
    real = report.write_reports
    for share in (1, 1e-9):
        calls = writes[share] = []

        def counted(frame, *args, calls=calls, **kwargs):
            calls.append(len(frame))
            return real(frame, *args, **kwargs)

        monkeypatch.setattr(report, "write_reports", counted)
        cfg = compose_config([*tiny_overrides, f"report.time_share={share}",
                              f"search.storage_dir={tmp_path / str(share)}"])  # fmt: skip
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sweep.runner"):
            runner.run(cfg, tmp_path / str(share) / "out")
        lines[share] = re.findall(r"val_accuracy=\S+ \| best \S+, front \d+", caplog.text)
        assert len(pd.read_csv(tmp_path / str(share) / "out" / "trials.csv")) == 3
    assert writes == {1: [1, 2, 3, 3], 1e-9: [1, 3]}
    assert len(lines[1]) == 3 and lines[1e-9] == lines[1]


def test_resume_tops_up_and_never_retrains(tiny_overrides, tmp_path, count_fits):
    runner.run(compose_config(tiny_overrides), tmp_path / "first")
    first = pd.read_csv(tmp_path / "first" / "trials.csv")
    assert len(count_fits) == 3

    runner.run(compose_config([*tiny_overrides, "search.n_trials=5"]), tmp_path / "second")
    second = pd.read_csv(tmp_path / "second" / "trials.csv")
    assert len(count_fits) == 5  # only the two new trials were trained
    assert second["trial"].tolist() == [0, 1, 2, 3, 4]
    kept = second[second["trial"] < 3].reset_index(drop=True)
    for column in ("embedding_dim", "vocab_size", "val_accuracy", "datetime_start"):
        assert kept[column].tolist() == first[column].tolist()

    runner.run(compose_config([*tiny_overrides, "search.n_trials=5"]), tmp_path / "third")
    assert len(count_fits) == 5  # target reached: nothing to train
    assert len(pd.read_csv(tmp_path / "third" / "trials.csv")) == 5


def test_resume_refuses_a_different_setup(tiny_overrides, tmp_path):
    # A named study is checked strictly: a changed setup under the same name stops.
    named = [*tiny_overrides, "search.study_name=mine"]
    runner.run(compose_config(named), tmp_path / "a")
    with pytest.raises(SearchError, match=r"search\.study_name=.*different setup"):
        runner.run(compose_config([*named, "train.lr=0.1"]), tmp_path / "b")


def test_default_study_name_follows_the_setup(tiny_overrides, tmp_path):
    first = compose_config(tiny_overrides)
    runner.run(first, tmp_path / "a")
    # A changed training key (or data file, or seed) is another study: it starts fresh.
    changed = compose_config([*tiny_overrides, "train.lr=0.1"])
    assert changed.search.study_name != first.search.study_name
    assert changed.search.study_name.startswith("synthetic-bag-pareto-")
    result = runner.run(changed, tmp_path / "b")
    assert len(result.table) == 3
    # What may change between runs of one study keeps its name: the same command resumes.
    same = compose_config([*tiny_overrides, "search.n_trials=4", "device=cpu", "threads=1"])
    assert same.search.study_name == first.search.study_name


def test_failed_trial_is_recorded_and_the_sweep_goes_on(tiny_cfg, tmp_path, monkeypatch):
    # (Out-of-memory failures also skip larger configurations: tests/test_robust.py.)
    real_fit, calls = trial_module.fit, []

    def flaky_fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(trial_module, "fit", flaky_fit)
    runner.run(tiny_cfg, tmp_path / "out")
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert trials["state"].tolist() == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert (
        trials.loc[1, "fail_reason"] == "RuntimeError: cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"
    )
    assert trials.loc[1, "params_total"] > 0  # planning figures survive the failure


def test_max_failures_stops_the_sweep_and_keeps_the_reports(tiny_overrides, tmp_path, monkeypatch):
    def broken_fit(*args, **kwargs):
        raise FloatingPointError("training loss became nan in epoch 1")

    monkeypatch.setattr(trial_module, "fit", broken_fit)
    cfg = compose_config([*tiny_overrides, "search.max_failures=2"])
    with pytest.raises(SearchError, match=r"search\.max_failures=2.*loss became nan"):
        runner.run(cfg, tmp_path / "out")
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert trials["state"].tolist() == ["FAIL", "FAIL"]


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "search.space.embedding_dim.low=300",
            r"search\.space\.embedding_dim: low=300 is above high=32",
        ),
        ("search.space.embedding_dim.low=0", r"search\.space\.embedding_dim\.low=0 is below 1"),
        ("search.space.vocab_size.low=-5", r"search\.space\.vocab_size\.low=-5 is below 1"),
        ("train.epochs=0", r"train\.epochs=0 must be an integer >= 1"),
        ("train.lr=-1", r"train\.lr=-1 must be positive"),
        ("search.n_trials=0", r"search\.n_trials=0 must be an integer >= 1"),
        ("report.tolerance=-1", r"report\.tolerance=-1 must be >= 0"),
        ("report.time_share=0", r"report\.time_share=0 must be a number in \(0, 1\]"),
        ("device=tpu", r"device='tpu' is not"),
        ("processes=0", r"processes=0 must be an integer >= 1, or auto"),
        ("processes=many", r"processes='many' must be an integer >= 1, or auto"),
    ],
)
def test_impossible_config_fails_before_reading_data(tiny_overrides, tmp_path, override, message):
    with pytest.raises((ConfigError, SearchError, ValueError), match=message):
        runner.run(compose_config([*tiny_overrides, override]), tmp_path / "out")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "studies").exists()


def test_cutoff_above_vocabulary_is_clamped_and_logged(tiny_overrides, tmp_path, caplog):
    cfg = compose_config([*tiny_overrides, "search.space.vocab_size.high=1000000"])
    result = runner.run(cfg, tmp_path / "out")
    assert "search.space.vocab_size.high=1000000 is above the" in caplog.text
    full = int(re.search(r"above the (\d+) words of the train split; clamped", caplog.text)[1])
    assert (result.table["vocab_size"] <= full).all()
    assert (result.table["num_embeddings"] <= full + 2).all()


def test_accuracy_search_with_median_pruner(tiny_overrides, tmp_path):
    cfg = compose_config([*tiny_overrides, "search=accuracy", "search.n_trials=5",
                          "search.pruner.n_startup_trials=1", "train.epochs=3"])  # fmt: skip
    result = runner.run(cfg, tmp_path / "out")
    finished = result.table["state"].isin(["COMPLETE", "PRUNED"]).sum()
    assert finished == 5
    pruned = result.table[result.table["state"] == "PRUNED"]
    assert pruned["pruned_epoch"].notna().all()


def test_extra_search_key_reaches_the_training_config(tiny_overrides, tmp_path, count_fits):
    extra = "+search.space.lr={type:float,low:0.001,high:0.01,log:true,key:train.lr}"
    result = runner.run(compose_config([*tiny_overrides, extra]), tmp_path / "out")
    assert result.table["lr"].between(0.001, 0.01).all()
    assert [c["lr"] for c in count_fits] == result.table["lr"].tolist()


def test_extra_search_key_must_name_its_config_key(tiny_overrides, tmp_path):
    extra = "+search.space.lr={type:float,low:0.001,high:0.01}"
    with pytest.raises(SearchError, match=r"search\.space\.lr\.key is missing"):
        runner.run(compose_config([*tiny_overrides, extra]), tmp_path / "out")


def test_seeded_sweeps_repeat_exactly(tiny_overrides, tmp_path):
    a = runner.run(
        compose_config([*tiny_overrides, f"search.storage_dir={tmp_path}/a"]), tmp_path / "a"
    )
    b = runner.run(
        compose_config([*tiny_overrides, f"search.storage_dir={tmp_path}/b"]), tmp_path / "b"
    )
    for column in ("embedding_dim", "vocab_size", "val_accuracy", "test_accuracy"):
        assert a.table[column].tolist() == b.table[column].tolist()
    assert not math.isnan(a.table["val_accuracy"].iloc[0])


def test_the_model_itself_can_be_searched(tiny_overrides, tmp_path, count_fits):
    extra = "+search.space.arch={type:categorical,choices:[bag,cnn],key:model}"
    cfg = compose_config([*tiny_overrides, extra, "search.n_trials=4", "search/sampler=random"])
    table = runner.run(cfg, tmp_path / "out").table
    assert set(table["arch"]) <= {"bag", "cnn"} and (table["model"] == table["arch"]).all()
    assert (table["state"] == "COMPLETE").all()
    # each trial's size comes from its own model's config (CNN: 100 filters of widths 3, 4, 5)
    for row in table.itertuples():
        d = row.embedding_dim
        body = sum(d * k * 100 + 100 for k in (3, 4, 5)) + 300 * 4 + 4 if row.arch == "cnn" else (
            d * 64 + 64 + 64 * 4 + 4)  # fmt: skip
        assert row.params_total - row.params_embedding == body


def test_unknown_model_choice_fails_the_trial_with_its_name(tiny_overrides, tmp_path):
    extra = "+search.space.arch={type:categorical,choices:[nope],key:model}"
    cfg = compose_config([*tiny_overrides, extra, "search.max_failures=1"])
    with pytest.raises(SearchError, match=r"model 'nope' is not an option"):
        runner.run(cfg, tmp_path / "out")


def _front(values, recommended):
    """A hand-made front: the more accurate, the larger (as a front is)."""
    return pd.DataFrame({
        "trial": range(len(values)), "state": "COMPLETE", "val_accuracy": values,
        "params_total": [10_000 // (i + 1) for i in range(len(values))], "pareto": True,
        "recommended": [i == recommended for i in range(len(values))],
    })  # fmt: skip


def test_seed_repeats_go_only_where_they_could_change_the_recommendation():
    """Best 90.0, tolerance 0.5: the edge of the ties is 89.5 and the smallest trial within it,
    trial 1, is recommended. With seed noise 0.1 a repeat can move the answer for the best (0),
    the recommended (1) and the trial 0.05 under the edge (2); not for 85.0 or 70.0, 25 and 100
    noise-widths away. With noise 3 the 85.0 trial could overtake the best too."""
    from sweep.schema import DEFAULT_OBJECTIVES as objectives
    from sweep.search.loop import Deciding, accuracy_noise, deciding_trials

    frame = _front([90.0, 89.8, 89.45, 85.0, 70.0], recommended=1)
    assert deciding_trials(frame, 5, objectives, 0.5, 0.1) == Deciding([1, 0, 2], [3, 4], [])
    assert deciding_trials(frame, 5, objectives, 0.5, 3.0) == Deciding([1, 0, 2, 3], [4], [])
    assert deciding_trials(frame, 2, objectives, 0.5, 3.0) == Deciding([1, 0], [4], [2, 3])
    # No repeats yet: the noise is first the validation split's sampling error at the best
    # accuracy (3.0 points on 100 texts at 90%, 0.03 on a million).
    assert accuracy_noise(90.0, 100) == pytest.approx(3.0)
    cfg = compose_config(["report.tolerance=0.5", "report.top_k=5"])
    assert runner.deciding(frame, cfg, objectives, 100) == Deciding([1, 0, 2, 3], [4], [])
    assert runner.deciding(frame, cfg, objectives, 1_000_000) == Deciding([1, 0, 2], [3, 4], [])
    # Means over seeds may recommend a trial the one-seed front left out: it is repeated first.
    off = _front([90.0, 89.8, 89.45, 85.0, 70.0, 89.0], recommended=5)
    off.loc[5, ["pareto", "params_total"]] = [False, 20_000]
    assert deciding_trials(off, 5, objectives, 0.5, 0.05) == Deciding([5, 0, 2], [1, 3, 4], [])


def test_seed_repeats_are_decided_by_the_means_and_never_go_to_a_reused_trial():
    """Trial 0: 90.0 on seed 0, 88.0 over seeds. By the means the best is 89.6 (trial 1), the
    edge 89.1, trial 2 (89.2) recommended, and trial 3 (89.0, 0.1 under the edge) could cross
    it; by seed 0 it would be 0.5 under the edge 89.5, and left out. A reused trial (a copy of
    trial 0's result) is never repeated: its original is. Under a byte budget the recommendation
    ranks by the shipped file, never by means: the report.top_k best front trials."""
    from sweep.schema import DEFAULT_OBJECTIVES as objectives
    from sweep.search.loop import Deciding, deciding_trials

    frame = _front([90.0, 89.6, 89.2, 89.0], recommended=2)
    frame["val_accuracy_mean"] = [88.0, None, None, None]
    assert deciding_trials(frame, 5, objectives, 0.5, 0.1) == Deciding([2, 1, 3], [0], [])
    copied = _front([90.0, 89.8, 70.0, 90.0], recommended=3)
    copied["reused_from"] = [None, None, None, 0]
    assert deciding_trials(copied, 5, objectives, 0.5, 0.1) == Deciding([0, 1], [2], [])
    budget = compose_config(["search.max_model_bytes=250kB", "report.top_k=2"])
    assert runner.deciding(frame, budget, objectives, 100) == Deciding([0, 1], [], [2, 3])


@pytest.mark.parametrize("top_k, repeated", [(2, 2), (1, 1)])
def test_seed_repeats_go_on_in_rounds_while_the_recommendation_can_move(
    tiny_overrides, tmp_path, count_fits, monkeypatch, top_k, repeated
):
    """Round 1 repeats what could change the recommendation then; once those repeats have moved
    the means, a trial that now could (here: the next front trial, by hand) is repeated in
    round 2, and the rounds end when nothing new could; report.top_k trials in all at most."""
    from sweep.search.loop import Deciding

    calls = []

    def deciding(table, cfg, objectives, validation_docs):
        front = sorted(table.loc[table["pareto"], "trial"].astype(int))
        calls.append(front)
        return Deciding(front[:1], [], []) if len(calls) == 1 else Deciding(front[:2], [], [])

    monkeypatch.setattr(runner, "deciding", deciding)
    cfg = compose_config([*tiny_overrides, "search.n_trials=4", "report.repeats=1",
                          f"report.top_k={top_k}"])  # fmt: skip
    table = runner.run(cfg, tmp_path / "out").table
    assert len(calls[0]) >= 2  # (seeded: a front of two trials at least, for a second round)
    assert set(table.loc[table["seeds"] == 2, "trial"]) == set(calls[0][:repeated])
    assert len(count_fits) == 4 + repeated and len(calls) == 1 + repeated
