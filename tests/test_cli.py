"""run_sweep.py as a user runs it: a real sweep in a temp folder, resume, help, bad input."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import TINY, compose_config, default_study, run_cli


def test_sweep_then_resume_from_the_default_storage(tmp_path):
    first = run_cli([*TINY, "hydra.run.dir=run1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr
    assert "trial 3/3" in log and "ETA" in log
    assert "recommended: embedding_dim=" in log
    assert "run1/report.html" in log
    for name in ("trials.csv", "pareto.csv", "report.html", "run_sweep.log"):
        assert (tmp_path / "run1" / name).is_file(), name
    trials = pd.read_csv(tmp_path / "run1" / "trials.csv")
    assert len(trials) == 3 and (trials["state"] == "COMPLETE").all()
    pareto = pd.read_csv(tmp_path / "run1" / "pareto.csv")
    assert 1 <= len(pareto) <= 3
    # The default storage lives in a stable folder per study, relative to where you run.
    assert (tmp_path / "studies" / default_study() / "journal.log").is_file()
    assert (tmp_path / "data" / "cache").is_dir()
    assert not list((tmp_path / "run1").glob(".*.tmp"))

    again = run_cli([*TINY, "search.n_trials=4", "hydra.run.dir=run2"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 finished trials, target 4" in again.stdout + again.stderr
    assert "loaded from cache" in again.stdout + again.stderr
    resumed = pd.read_csv(tmp_path / "run2" / "trials.csv")
    assert resumed["trial"].tolist() == [0, 1, 2, 3]
    assert resumed["val_accuracy"].head(3).tolist() == trials["val_accuracy"].tolist()


def test_a_resumed_run_says_what_it_kept_and_what_it_did(tmp_path):
    """The same command twice: the second says it resumed, trains nothing, keeps the seed
    repeats and precisions of the first, and its time line still adds up."""
    import json

    args = [*TINY, "report.repeats=1", "report.top_k=2"]
    first = run_cli([*args, "hydra.run.dir=run1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr
    assert "0 finished trials, target 3: a new study" in log
    assert "fits to train" in log and "stored by an earlier run" not in log
    again = run_cli([*args, "hydra.run.dir=run2"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "3 finished trials, target 3: resumed; nothing to train" in log
    assert "0 fits to train; " in log and "stored by an earlier run, kept" in log
    assert "were measured by an earlier run" in log
    assert "trials 0.0s (0 fits" in log or "(0 fits: training 0.0s" in log
    timing = json.loads((tmp_path / "run2" / "timing.json").read_text())
    parts = [v for k, v in timing.items() if k.endswith("_s") and k != "total_s"]
    assert sum(parts) == pytest.approx(timing["total_s"]) and timing["repeat_fits"] == 0


def test_help_and_cfg_job(tmp_path):
    shown = run_cli(["--help"], cwd=tmp_path)
    assert shown.returncode == 0
    assert (
        "data: 20newsgroups, ag_news, dbpedia, files, imdb, sst2, [synthetic], trec, yelp_polarity"
        in shown.stdout
        and "search: accuracy, [pareto]" in shown.stdout
    )
    assert "common" not in shown.stdout.split("== Keys")[0]  # internal groups are not options
    # Every key with its comment, for the chosen options.
    assert "lr: auto                  # Adam learning rate" in shown.stdout
    assert "hidden_dim: auto" in shown.stdout and "kernel_sizes" not in shown.stdout
    cnn = run_cli(["--help", "model=cnn"], cwd=tmp_path)
    assert "model: bag, [cnn], rnn, transformer" in cnn.stdout and "kernel_sizes" in cnn.stdout
    job = run_cli(["--cfg", "job", "model.hidden_dim=5", "train.lr=0.01"], cwd=tmp_path)
    assert job.returncode == 0 and "hidden_dim: 5" in job.stdout
    name = compose_config(["model.hidden_dim=5", "train.lr=0.01"]).search.study_name
    assert f"study_name: {name}" in job.stdout  # resolved: the name this command would use
    assert not (tmp_path / "studies").exists()  # printing the config trains nothing


def test_unknown_keys_name_the_nearest_valid_ones(tmp_path):
    for args, expected in (
        (["train.epoch=1"], "unknown config key train.epoch; did you mean train.epochs?"),
        (["+train.epoch=1"], "+train.epoch adds a key that nothing reads"),
        (["search.space.embeding_dim.high=5"], "did you mean search.space.embedding_dim.high"),
    ):
        result = run_cli(args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "To append to your config" not in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()


def test_unknown_group_option_names_the_group(tmp_path):
    result = run_cli(["model=nope"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr and "bag" in result.stderr


def test_bad_input_exits_with_one_clear_message(tmp_path):
    result = run_cli(["data=files", "data.train=missing.csv"], cwd=tmp_path)
    assert result.returncode == 2
    assert "data.train: file 'missing.csv' not found" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()


@pytest.mark.slow
def test_default_sweep_with_no_arguments(tmp_path):
    """The README's first command, exactly: 12 trials on the default synthetic data."""
    result = run_cli(["hydra.run.dir=out"], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert len(trials) == 12 and (trials["state"] == "COMPLETE").all()
    # The synthetic data makes the trade-off real: the front spans a wide accuracy range.
    front = trials[trials["pareto"]]
    assert front["val_accuracy"].max() - front["val_accuracy"].min() > 10
    assert trials["val_accuracy"].max() > 75


def test_reports_rebuild_from_the_storage_alone(tiny_cfg, tmp_path):
    import subprocess
    import sys

    from sweep.runner import run

    run(tiny_cfg, tmp_path / "out")
    name = tiny_cfg.search.study_name
    journal = tmp_path / "studies" / name / "journal.log"
    result = subprocess.run(
        [sys.executable, "-m", "sweep.report", "--storage", str(journal),
         "--study", name, "--out", str(tmp_path / "rebuilt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    original = pd.read_csv(tmp_path / "out" / "trials.csv")
    rebuilt = pd.read_csv(tmp_path / "rebuilt" / "trials.csv")
    pd.testing.assert_frame_equal(original, rebuilt)
    page = (tmp_path / "rebuilt" / "report.html").read_text()
    assert "Recommended configuration" in page and "chart-coverage" in page
    missing = subprocess.run(
        [sys.executable, "-m", "sweep.report", "--storage", str(journal), "--study", "nope",
         "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode != 0 and "no study 'nope'" in missing.stderr
