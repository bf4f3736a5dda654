"""The report writer on hand-made frames: Pareto mask, recommendation, files, escaping."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sweep.report import build as report
from sweep.report import page


def frame(rows):
    columns = ["trial", "state", "embedding_dim", "vocab_size", "num_embeddings",
               "params_total", "params_embedding", "val_accuracy", "test_accuracy"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


ROWS = [
    # trial, state, D, K, K+2, params, emb params, val acc, test acc
    (0, "COMPLETE", 8, 100, 102, 1_000, 816, 70.0, 69.0),
    (1, "COMPLETE", 16, 1000, 1002, 20_000, 16032, 80.0, 79.0),
    (2, "COMPLETE", 64, 1000, 1002, 70_000, 64128, 80.4, 80.0),  # within 0.5 of the best
    (3, "COMPLETE", 256, 5000, 5002, 1_300_000, 1280512, 80.6, 80.1),  # best accuracy
    (4, "COMPLETE", 32, 5000, 5002, 170_000, 160064, 75.0, 74.0),  # dominated by 1 and 2
    (5, "FAIL", 512, 9000, 9002, 4_700_000, 4608512, math.nan, math.nan),
    (6, "PRUNED", 8, 9000, 9002, 72_000, 72016, 60.0, math.nan),
    (7, "COMPLETE", 16, 1000, 1002, 20_000, 16032, 80.0, 78.0),  # ties trial 1 exactly
]


def test_pareto_mask_keeps_only_non_dominated_points():
    accuracy = np.array([70.0, 80.0, 80.4, 80.6, 75.0, 80.0])
    params = np.array([1e3, 2e4, 7e4, 1.3e6, 1.7e5, 2e4])
    mask = report.pareto_mask(accuracy, params)
    assert mask.tolist() == [True, True, True, True, False, True]  # ties are not dominated


def test_annotate_flags_front_and_recommendation():
    table = report.annotate(frame(ROWS), tolerance=0.5)
    assert list(table.columns[: len(report.COLUMNS)]) == report.COLUMNS
    assert table.loc[table["pareto"], "trial"].tolist() == [0, 1, 2, 3, 7]
    # Smallest params within 0.5 points of 80.6 is trial 1 (80.0 is 0.6 away: not within).
    assert table.loc[table["recommended"], "trial"].tolist() == [2]
    assert not table.loc[table["state"] != "COMPLETE", "pareto"].any()


@pytest.mark.parametrize("tolerance,expected", [(0.0, 3), (0.6, 1), (20.0, 0)])
def test_recommendation_follows_tolerance(tolerance, expected):
    table = report.annotate(frame(ROWS), tolerance=tolerance)
    assert table.loc[table["recommended"], "trial"].tolist() == [expected]


def test_no_complete_trial_means_no_recommendation(tmp_path):
    table = report.write_reports(frame(ROWS[5:7]), tmp_path, tolerance=0.5, context={})
    assert not table["recommended"].any() and not table["pareto"].any()
    assert "No complete trial yet" in (tmp_path / "report.html").read_text()


def test_write_reports_files_and_no_temp_left(tmp_path):
    context = {"study_name": "s", "overrides": ["model=bag"], "space": {
        "embedding_dim": "embedding_dim", "vocab_size": "vocab_size"}}  # fmt: skip
    report.write_reports(frame(ROWS), tmp_path, tolerance=0.5, context=context)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.csv", "report.html", "trials.csv"]
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == len(ROWS)
    assert trials["state"].tolist() == [r[1] for r in ROWS]
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    assert pareto["trial"].tolist() == [0, 1, 2, 3, 7]
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page and "Pareto front (5 trials)" in page
    assert (
        "python run_sweep.py model=bag search.space.embedding_dim.low=64 "
        "search.space.embedding_dim.high=64 search.space.vocab_size.low=1000 "
        "search.space.vocab_size.high=1000 report.repeats=0 search.n_trials=1 "
        "search.study_name=s-recommended"
    ) in page


def test_reproduce_overrides_pin_searched_keys_the_recipe_and_the_seed_and_keep_the_rest():
    row = pd.Series({"embedding_dim": 32.0, "vocab_size": 500.0, "lr": 0.003, "study_name": "x",
                     "seed": 3})  # fmt: skip
    space = {"embedding_dim": "embedding_dim", "vocab_size": "vocab_size", "lr": "train.lr"}
    base = ["data=files", "data.train=a.csv", "search.n_trials=40", "model.hidden_dim=auto",
            "search.space.embedding_dim.high=512", "search.study_name=x", "seed=3"]  # fmt: skip
    recipe = {"choice": {"model.hidden_dim": 0, "data.tokenizer.word_ngrams": 2}}
    assert page.reproduce_overrides(row, base, space, recipe) == [
        "data=files", "data.train=a.csv",
        "model.hidden_dim=0", "data.tokenizer.word_ngrams=2", "seed=3",
        "search.space.embedding_dim.low=32", "search.space.embedding_dim.high=32",
        "search.space.vocab_size.low=500", "search.space.vocab_size.high=500",
        "~search.space.lr", "train.lr=0.003",
        "report.repeats=0", "search.n_trials=1", "search.study_name=x-recommended",
    ]  # fmt: skip


def test_user_text_is_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    rows = frame(ROWS[:2])
    rows["fail_reason"] = evil
    context = {"study_name": evil, "config": f"label: {evil}", "environment": {"x": evil}}
    report.write_reports(rows, tmp_path, tolerance=0.5, context=context)
    page = (tmp_path / "report.html").read_text()
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the report's own table sorter


def test_data_section_counts_classes_drops_and_leakage():
    from sweep.report.page import data_section

    table, notes = data_section({
        "classes": {"<b>a</b>": {"train": 3, "validation": 1, "test": 1},
                    "b": {"train": 5, "validation": 2, "test": 0}},
        "dropped_empty": {"train": 2, "test": 0},
        "leakage": {"validation": 0, "test": 4},
    })  # fmt: skip
    page = table + "\n".join(notes)
    assert "&lt;b&gt;a&lt;/b&gt;" in page and "<b>a</b>" not in page  # class names escaped
    assert '<td data-v="all">all</td><td data-v="8">8</td><td data-v="3">3</td>' in page
    assert "empty text or label: train 2." in page
    assert "optimistic): test 4." in page and "validation 0" not in page


def test_reports_get_the_mode_the_umask_allows(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        report.write_atomic(tmp_path / "r.html", "x")
        assert (tmp_path / "r.html").stat().st_mode & 0o777 == 0o644  # others on the box may read
        os.umask(0o077)
        report.write_atomic(tmp_path / "private.html", "x")
        assert (tmp_path / "private.html").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_headline_states_its_rule_and_agrees_with_it(tmp_path):
    table = frame(ROWS)
    context = {"study_name": "s", "space": {"embedding_dim": "embedding_dim",
                                            "vocab_size": "vocab_size"}}  # fmt: skip
    report.write_reports(table, tmp_path, tolerance=0.5, context=context)
    html_text = (tmp_path / "report.html").read_text()
    # Trial 2 (80.4%) is recommended: within 0.50 points of trial 3's 80.6%, fewer parameters.
    assert "validation accuracy 80.40% (one seed), test accuracy 80.00% (one seed)" in html_text
    assert (
        "within 0.50 points of the best validation accuracy, 80.60% (one seed) (trial 3) "
        "(report.tolerance)" in html_text
    )
    # With seed repeats the noise (here 1.0 point) sets the margin, and the headline says so.
    table = table.assign(
        val_accuracy_mean=[70.0, 80.0, 80.4, 80.6, 75.0, math.nan, math.nan, 80.0],
        val_accuracy_std=[1.0, 1.0, 1.0, 1.0, 1.0, math.nan, math.nan, 1.0],
        test_accuracy_mean=[69.0, 79.2, 80.0, 80.1, 74.0, math.nan, math.nan, 78.0],
        test_accuracy_std=[0.5] * 5 + [math.nan] * 2 + [0.5],
        seeds=[3] * 5 + [math.nan] * 2 + [3],
    )
    written = report.write_reports(table, tmp_path, tolerance=0.5, context=context)
    html_text = (tmp_path / "report.html").read_text()
    assert written.loc[written["recommended"], "trial"].tolist() == [1]  # 80.0 ties 80.6 at 1.0
    # The mean and its standard error (std / sqrt(seeds)), and the study's own seed's figure.
    assert (
        "validation accuracy 80.00% ± 0.58 (mean ± standard error over 3 seeds; the first "
        "seed: 80.00%), test accuracy 79.20% ± 0.29 (mean ± standard error over 3 seeds; the "
        "first seed: 79.00%)" in html_text
    )
    assert "1.00 points is the seed noise, larger than report.tolerance (0.50)" in html_text
    assert "vary by 1.00 points" in html_text and "+-" not in html_text


def test_the_reproduce_command_takes_only_the_recipes_keys_and_runs_alone():
    """What a stored context (read back from a storage) says is filtered: only the recipe's own
    keys, no override naming a _target_; the keys of a whole sweep (workers, a time budget)
    are left out, so the command trains one trial alone."""
    from sweep.trial import recipe

    assert set(page.RECIPE_KEYS) == set(recipe.KEYS.values())
    row = pd.Series({"embedding_dim": 8.0, "vocab_size": 50.0, "study_name": "s"})
    space = {"embedding_dim": "embedding_dim", "vocab_size": "vocab_size"}
    base = ["search.workers=4", "search.timeout_s=60", "+model.x={_target_: os.system}"]
    stored = {"choice": {"train.lr": 0.01, "model._target_": "os.system"}}
    out = page.reproduce_overrides(row, base, space, stored)
    assert "train.lr=0.01" in out and not any("_target_" in o for o in out)
    assert not any(o.startswith(("search.workers", "search.timeout_s")) for o in out)
