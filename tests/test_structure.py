"""The architecture's promises: a trial runs alone, one schema drives every report, any number
of axes works in plan mode and the report, and the report follows search.objectives."""

from __future__ import annotations

import dataclasses
import math

import optuna
import pandas as pd
import pytest
from conftest import compose_config
from test_report import ROWS, frame

from sweep import runner, schema
from sweep.data.prepared import PreparedData
from sweep.report import build as report
from sweep.search import study
from sweep.search.space import SearchError, SearchSpace
from sweep.trial import TrialRunner


@pytest.fixture
def trial_runner(tiny_cfg):
    data = PreparedData.load(tiny_cfg.data, tiny_cfg.seed, "cpu")
    return TrialRunner(tiny_cfg, data)


def test_a_trial_describes_and_trains_without_a_study(trial_runner):
    params = {"embedding_dim": 8, "vocab_size": 100}
    before = trial_runner.describe(params)
    assert set(before) == set(schema.names(known="sizes")) - {"budget_excess"}
    assert before["num_embeddings"] == 102 and before["params_embedding"] == 102 * 8
    after = trial_runner.train(params)
    precisions = {c for c in schema.names(known="trained") if c.endswith(("fp16", "int8", "int4"))}
    assert len(precisions) == 6  # measured here with report.quantize=all, else at the end
    assert set(after) == set(schema.names(known="trained")) - {"pack"} - precisions | {
        "val_history"
    }
    assert 0 <= after["val_accuracy"] <= 100 and len(after["val_history"]) == after["epochs"]
    assert math.isnan(after["gpu_peak_mb"])  # on a CPU: missing, never 0
    trial_runner.cfg.report.quantize = "all"
    again = trial_runner.train(params)  # same seed, same numbers
    assert again["val_accuracy"] == after["val_accuracy"]
    assert set(again) == set(after) | precisions
    assert trial_runner.timing.trials == 2


def test_a_trial_record_outside_the_schema_is_refused():
    with pytest.raises(AssertionError, match="unlisted"):
        schema.check_record({"params_total": 1, "not_a_column": 2}, "sizes")
    with pytest.raises(AssertionError, match="other moments"):
        schema.check_record({"val_accuracy": 50.0}, "sizes")


def test_every_column_says_what_it_means():
    """The docs' column reference is the schema's: a column without its meaning is refused."""
    assert [c.name for c in schema.COLUMNS if not c.doc] == []
    assert schema.BY_NAME["num_embeddings"].doc.startswith("rows of the table")


def test_a_new_column_is_one_schema_entry(tmp_path, monkeypatch):
    """Adding a derived column to the schema puts it in trials.csv, pareto.csv and the page."""
    column = schema.Column(
        "params_rest", "sizes", shown=True,
        derive=lambda row: row["params_total"] - row["params_embedding"],
    )  # fmt: skip
    columns = [*schema.COLUMNS[:12], column, *schema.COLUMNS[12:]]
    monkeypatch.setattr(schema, "COLUMNS", columns)
    monkeypatch.setattr(schema, "NAMES", [c.name for c in columns])
    monkeypatch.setattr(schema, "BY_NAME", {c.name: c for c in columns})
    report.write_reports(frame(ROWS), tmp_path, tolerance=0.5, context={})
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert list(trials.columns).index("params_rest") == 12
    assert trials.loc[0, "params_rest"] == 1_000 - 816
    assert "params_rest" in pd.read_csv(tmp_path / "pareto.csv")
    assert "<th>params_rest</th>" in (tmp_path / "report.html").read_text()


def test_plan_mode_covers_a_third_axis(tiny_overrides, tmp_path):
    cfg = compose_config([
        *tiny_overrides, "plan=true", "plan_points=2",
        "+search.space.lr={type: float, low: 0.001, high: 0.01, log: true, key: train.lr}",
        "+search.space.hidden={type: categorical, choices: [0, 16], key: model.hidden_dim}",
    ])  # fmt: skip
    result = runner.run(cfg, tmp_path / "out")
    plan = pd.read_csv(tmp_path / "out" / "plan.csv")
    assert len(plan) == 2 * 2 * 2 * 2 == len(result.table)
    assert list(plan.columns[:4]) == ["embedding_dim", "vocab_size", "lr", "hidden"]
    assert sorted(plan["lr"].unique()) == pytest.approx([0.001, 0.01])
    # The hidden layer is part of the size: with it the same table has more parameters.
    same = plan[(plan["embedding_dim"] == 4) & (plan["vocab_size"] == 20) & (plan["lr"] < 0.005)]
    assert same.set_index("hidden")["params_total"].diff().dropna().iloc[0] > 0


def test_a_third_axis_reaches_the_report(tiny_overrides, tmp_path):
    cfg = compose_config([
        *tiny_overrides, "search.n_trials=3",
        "+search.space.hidden={type: categorical, choices: [0, 16], key: model.hidden_dim}",
    ])  # fmt: skip
    runner.run(cfg, tmp_path / "out")
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert set(trials["hidden"]) <= {0, 16}
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<th>hidden</th>" in page and "hidden=" in page  # the tables and the recommendation


def test_search_space_checks_name_the_key():
    cfg = compose_config([])
    space = cfg.search.space.copy()
    space.embedding_dim.low = 0
    with pytest.raises(SearchError, match=r"search\.space\.embedding_dim\.low=0"):
        SearchSpace(space)
    bounded = SearchSpace(cfg.search.space).with_vocabulary(300)
    assert bounded.plan_points(2)[-1]["vocab_size"] == 300  # null = the full vocabulary


def _objectives(table: pd.DataFrame) -> tuple[list[int], list[int]]:
    return (
        table.loc[table["pareto"], "trial"].tolist(),
        table.loc[table["recommended"], "trial"].tolist(),
    )


def test_report_with_one_objective_recommends_the_best_trial(tmp_path):
    objectives = report.Objectives(("val_accuracy",), ("maximize",))
    table = report.annotate(frame(ROWS), tolerance=0.5, objectives=objectives)
    assert _objectives(table) == ([3], [3])  # the most accurate, not the smallest within 0.5
    context = {"objectives": objectives.pairs(), "space": {"embedding_dim": "embedding_dim"}}
    report.write_reports(frame(ROWS), tmp_path, tolerance=0.5, context=context)
    page = (tmp_path / "report.html").read_text()
    assert "the best val_accuracy (maximized), 80.60% (one seed) (trial 3)" in page


def test_report_follows_a_custom_second_objective(tmp_path):
    rows = frame(ROWS).assign(train_seconds=[5.0, 9.0, 1.0, 2.0, 3.0, math.nan, 1.0, 9.0])
    objectives = report.Objectives(("val_accuracy", "train_seconds"), ("maximize", "minimize"))
    table = report.annotate(rows, tolerance=0.5, objectives=objectives)
    # Trial 2 is both fast and within 0.5 of the best: it dominates 0, 1, 4 and 7.
    front, recommended = _objectives(table)
    assert front == [2, 3] and recommended == [2]
    report.write_reports(rows, tmp_path, tolerance=0.5, context={"objectives": objectives.pairs()})
    page = (tmp_path / "report.html").read_text()
    assert "the front is val_accuracy against train_seconds" in page
    assert "the fewest train_seconds among the trials within 0.50 points" in page


def test_accuracy_search_report_agrees_with_its_sampler(tiny_overrides, tmp_path):
    cfg = compose_config([*tiny_overrides, "search=accuracy", "search/pruner=none"])
    result = runner.run(cfg, tmp_path / "out")
    done = result.table[result.table["state"] == "COMPLETE"]
    best = done.loc[done["val_accuracy"].idxmax()]
    assert result.recommended["val_accuracy"] == best["val_accuracy"]
    # Rebuilt from the storage alone, the page follows the study's one objective too.
    opened = study.load_study(runner.storage.make_storage(cfg.search), cfg.search.study_name)
    rebuilt = report.rebuild_study(opened, tmp_path / "again", None, "storage")
    assert rebuilt["recommended"].tolist() == result.table["recommended"].tolist()


def test_private_optuna_names_the_study_adapter_needs_still_exist(tmp_path):
    made = optuna.create_study()
    trial = made.ask()
    made.tell(trial, 1.0)
    assert study.storage_of(made) is not None
    assert isinstance(made.trials[0]._trial_id, int)  # what fail_trial reads
    with pytest.raises(RuntimeError, match="optuna .* has no"):
        study._private(object(), "_storage")


def test_columns_have_one_moment_each():
    moments = {c.known for c in schema.COLUMNS}
    assert moments == {"sizes", "trained", "study", "report"}
    assert len(schema.NAMES) == len(set(schema.NAMES))
    assert all(dataclasses.is_dataclass(c) for c in schema.COLUMNS)


def test_no_function_in_the_package_is_longer_than_a_screen():
    """Issue 13's bar: a newcomer reads any function of sweep/ (benchmarks aside) at once."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "sweep"
    long = []
    for path in sorted(root.rglob("*.py")):
        if "benchmarks" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
