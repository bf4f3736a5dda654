"""Robust search: kill -9 and resume, stale workers, samplers, duplicates, out of memory, seeds."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose_config, default_study

from sweep import runner
from sweep.search import settings as search
from sweep.search import study as study_module
from sweep.search.storage import journal_storage
from sweep.trial import lone as trial_module

State = optuna.trial.TrialState


def load(storage_dir, name=None):
    name = name or default_study()
    storage = journal_storage(storage_dir / name / "journal.log")
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_kill_9_mid_trial_then_resume(tmp_path):
    """A real subprocess, a real SIGKILL in the middle of a trial, the same command again."""
    overrides = [*TINY, "data.synthetic.num_docs=3000", "train.epochs=40", "train.patience=40",
                 "search.n_trials=4"]  # fmt: skip
    args = [sys.executable, str(ROOT / "run_sweep.py"), *overrides, "hydra.run.dir=run"]
    name = default_study(overrides)
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    killed_trial = None
    while time.time() < deadline and killed_trial is None:
        time.sleep(0.3)
        if not (tmp_path / "studies" / name / "journal.log").exists():
            continue
        try:
            study = load(tmp_path / "studies", name)
        except KeyError:  # the journal exists, its study record is not written yet
            continue
        done = study.get_trials(states=(State.COMPLETE,))
        running = [
            t for t in study.get_trials(states=(State.RUNNING,)) if "params_total" in t.user_attrs
        ]
        if done and running:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_trial = running[0].number
    assert killed_trial is not None, "never saw a trial running after a finished one"
    before = {
        t.number: (t.datetime_start, t.values)
        for t in load(tmp_path / "studies", name).get_trials(states=(State.COMPLETE,))
    }
    assert (tmp_path / "run" / "trials.csv").is_file()  # the killed run left valid reports
    pd.read_csv(tmp_path / "run" / "trials.csv")

    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    study = load(tmp_path / "studies", name)
    killed = study.trials[killed_trial]
    assert killed.state == State.FAIL
    assert killed.user_attrs["fail_reason"].startswith("interrupted: its worker")
    assert study_module.count_finished(study) == 4
    for number, (start, values) in before.items():  # finished trials were not retrained
        assert (
            study.trials[number].datetime_start == start and study.trials[number].values == values
        )
    table = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert table.loc[table["trial"] == killed_trial, "state"].item() == "FAIL"


def test_stale_trials_are_failed_and_live_ones_kept(tmp_path):
    storage = journal_storage(tmp_path / "j.log")
    study = optuna.create_study(storage=storage, study_name="s")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cases = {
        "dead pid here": (f"{study_module.socket.gethostname()}:{dead.pid}", time.time()),
        "live pid here": (study_module.worker(), time.time()),
        "other host, stale": ("elsewhere:12", time.time() - 3600),
        "other host, fresh": ("elsewhere:13", time.time()),
    }
    numbers = {}
    for name, (worker, beat) in cases.items():
        trial = study.ask()
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("heartbeat", beat)
        numbers[name] = trial.number
    failed = study_module.fail_stale_trials(study, stale_after_s=600)
    assert sorted(failed) == sorted([numbers["dead pid here"], numbers["other host, stale"]])
    by_number = {t.number: t for t in study.get_trials()}
    assert "is gone" in by_number[numbers["dead pid here"]].user_attrs["fail_reason"]
    assert "no heartbeat" in by_number[numbers["other host, stale"]].user_attrs["fail_reason"]
    assert by_number[numbers["live pid here"]].state == State.RUNNING
    assert by_number[numbers["other host, fresh"]].state == State.RUNNING


@pytest.mark.parametrize("sampler", ["ehvi", "tpe", "nsga2", "random", "qmc"])
def test_sampler_presets_run_seeded(sampler, tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, f"search/sampler={sampler}"]
    a = runner.run(compose_config(overrides), tmp_path / "a")
    b = runner.run(compose_config([*overrides, f"search.storage_dir={tmp_path}/b"]), tmp_path / "b")
    assert (a.table["state"] == "COMPLETE").all() and len(a.table) == 3
    assert a.table["embedding_dim"].tolist() == b.table["embedding_dim"].tolist()
    assert a.table["vocab_size"].tolist() == b.table["vocab_size"].tolist()


def test_grid_covers_every_point_and_never_retrains(tiny_overrides, tmp_path, count_fits):
    grid = ["search/sampler=grid", "search.sampler.values.embedding_dim=[4,8]",
            "search.sampler.values.vocab_size=[50,1000000,null]", "search.n_trials=20"]  # fmt: skip
    result = runner.run(compose_config([*tiny_overrides, *grid]), tmp_path / "out")
    table = result.table
    # 1000000 and null both mean the full vocabulary: one grid point each, 4 in all.
    assert len(table) == 4 and (table["state"] == "COMPLETE").all()  # capped at the grid size
    full = int(table["vocab_size"].max())
    assert sorted(zip(table["embedding_dim"], table["vocab_size"], strict=True)) == [
        (4, 50), (4, full), (8, 50), (8, full)]  # fmt: skip
    assert len(count_fits) == 4
    runner.run(compose_config([*tiny_overrides, *grid]), tmp_path / "again")
    assert len(count_fits) == 4  # resumed: the grid is done, nothing trained


def test_a_finished_configuration_is_reused_not_retrained(tiny_overrides, tmp_path, count_fits):
    tiny_space = ["search/sampler=random", "search.n_trials=5",
                  "search.space.embedding_dim.low=4", "search.space.embedding_dim.high=5",
                  "search.space.vocab_size.low=50", "search.space.vocab_size.high=50"]  # fmt: skip
    table = runner.run(compose_config([*tiny_overrides, *tiny_space]), tmp_path / "out").table
    assert (table["state"] == "COMPLETE").sum() == 5
    assert len(count_fits) == table["reused_from"].isna().sum() <= 2
    for row in table[table["reused_from"].notna()].itertuples():
        original = table[table["trial"] == row.reused_from].iloc[0]
        assert (row.embedding_dim, row.val_accuracy) == (
            original["embedding_dim"],
            original["val_accuracy"],
        )


def test_out_of_memory_is_recorded_and_larger_configs_are_skipped(
    tiny_overrides, tmp_path, monkeypatch
):
    real_fit, trained = trial_module.fit, []

    def small_gpu_fit(model, *args, **kwargs):
        size = model.frontend.embed.weight.shape[1]
        if size >= 16:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        trained.append(size)
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(trial_module, "fit", small_gpu_fit)
    cfg = compose_config([*tiny_overrides, "search/sampler=random", "search.n_trials=6",
                          "search.max_failures=50", "search.space.embedding_dim.high=64"])  # fmt: skip
    result = runner.run(cfg, tmp_path / "out")
    table = result.table
    ooms = table[table["state"] == "FAIL"]
    skipped = table[table["state"] == "SKIPPED"]
    assert len(ooms) >= 1 and ooms["fail_reason"].str.contains("out of memory").all()
    assert (table["state"] == "COMPLETE").sum() == 6
    first_oom = ooms["trial"].min()
    limit = ooms["memory_mb"].min()
    later = table[table["trial"] > first_oom]
    # After the first out-of-memory failure, nothing as large as it was trained again.
    assert (
        later.loc[later["state"] == "COMPLETE", "memory_mb"]
        < ooms.loc[ooms["trial"] == first_oom, "memory_mb"].item()
    ).all()
    assert (skipped["memory_mb"] >= limit).all()
    assert skipped["fail_reason"].str.startswith("skipped: memory_mb").all()
    assert all(size < 16 for size in trained)


def test_hyperband_pruner(tiny_overrides, tmp_path):
    cfg = compose_config([*tiny_overrides, "search=accuracy", "search/pruner=hyperband",
                          "search.n_trials=6", "train.epochs=4", "train.patience=4"])  # fmt: skip
    result = runner.run(cfg, tmp_path / "out")
    assert result.table["state"].isin(["COMPLETE", "PRUNED"]).sum() == 6
    pruned = result.table[result.table["state"] == "PRUNED"]
    assert pruned["pruned_epoch"].between(1, 4).all()


def test_multi_objective_rejects_a_pruner(tiny_overrides, tmp_path):
    with pytest.raises(
        search.SearchError, match=r"search\.pruner=median but the study has several"
    ):
        runner.run(compose_config([*tiny_overrides, "search/pruner=median"]), tmp_path / "out")


def test_front_is_retrained_with_more_seeds(tiny_overrides, tmp_path, count_fits):
    cfg = compose_config(
        [*tiny_overrides, "search.n_trials=4", "report.repeats=2", "report.top_k=2"]
    )
    result = runner.run(cfg, tmp_path / "out")
    table = result.table
    repeated = table[table["seeds"].notna()]
    assert 1 <= len(repeated) <= 2 and (repeated["seeds"] == 3).all()
    assert repeated["pareto"].all()
    assert len(count_fits) == 4 + 2 * len(repeated)
    assert sorted({c["seed"] for c in count_fits}) == [0, 1, 2]
    for row in repeated.itertuples():
        assert row.val_accuracy_std >= 0 and 0 <= row.val_accuracy_mean <= 100
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Seed noise" in page
    runner.run(cfg, tmp_path / "again")  # resumed: stored repeats are not run again
    assert len(count_fits) == 4 + 2 * len(repeated)


def test_heartbeat_is_recorded(tiny_cfg, tmp_path):
    runner.run(tiny_cfg, tmp_path / "out")
    study = load(tmp_path / "studies")
    for trial in study.trials:
        assert trial.user_attrs["worker"] == study_module.worker()
        assert trial.user_attrs["heartbeat"] <= datetime.datetime.now().timestamp()
