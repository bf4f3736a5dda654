"""Memory and cost on any device: sizes, the analytic peak estimate, budgets, plan mode."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import TINY, compose_config, run_cli

from sweep import measure, runner
from sweep import study as study_module
from sweep import trial as trial_module
from sweep.runner import build_model
from sweep.space import SearchSpace
from sweep.storage import make_storage

MODELS = ["bag", "cnn", "rnn", "transformer"]


def estimate(name: str, vocab: int, dim: int, batch: int = 64, length: int = 80) -> dict:
    cfg = compose_config([f"model={name}"])
    with torch.device("meta"):
        model = build_model(cfg.model, vocab + 2, dim, 4)
    counts = model.num_params()
    return measure.estimate_peak_mb(
        model, params_total=counts["total"], params_embedding=counts["embedding"],
        embedding_dim=dim, sparse=True, batch_size=batch, eval_batch_size=1024,
        max_length=length, data_bytes=0,
    ) | {"weights_mb": counts["total"] * 4 / 2**20}  # fmt: skip


def test_size_columns_per_precision():
    sizes = measure.size_columns(params_total=3_000_000, params_embedding=2_000_000)
    assert sizes["embedding_mb_fp32"] == pytest.approx(8e6 / 2**20)
    assert sizes["embedding_mb_fp16"] == pytest.approx(sizes["embedding_mb_fp32"] / 2)
    assert sizes["embedding_mb_int8"] == pytest.approx(sizes["embedding_mb_fp32"] / 4)
    assert sizes["rest_mb_fp32"] == pytest.approx(4e6 / 2**20)
    assert sizes["model_mb"] == pytest.approx(sizes["embedding_mb_fp32"] + sizes["rest_mb_fp32"])


@pytest.mark.parametrize("name", MODELS)
def test_estimate_counts_weights_moments_and_grows_with_the_table(name):
    small, wide, long_vocab = (
        estimate(name, 1000, 16),
        estimate(name, 1000, 256),
        estimate(name, 50_000, 16),
    )
    for est in (small, wide, long_vocab):
        # weights + two Adam moments at least, and the table's share inside the total
        assert est["est_peak_mb"] > 3 * est["weights_mb"]
        assert 0 < est["est_embedding_mb"] < est["est_peak_mb"]
    assert wide["est_peak_mb"] > small["est_peak_mb"]
    assert long_vocab["est_peak_mb"] > small["est_peak_mb"]
    # The table's share grows by exactly its extra rows: weights and two Adam moments.
    growth = (50_000 - 1000) * 16 * 4 * 3 / 2**20
    assert long_vocab["est_embedding_mb"] - small["est_embedding_mb"] == pytest.approx(growth)


@pytest.mark.parametrize("name", ["cnn", "rnn", "transformer"])
def test_activations_scale_with_batch_and_length(name):
    cfg = compose_config([f"model={name}"])
    with torch.device("meta"):
        model = build_model(cfg.model, 1002, 32, 4)
    base = measure.saved_activation_bytes(model, 32, 40)["total"]
    assert measure.saved_activation_bytes(model, 64, 40)["total"] == pytest.approx(
        2 * base, rel=0.05
    )
    assert measure.saved_activation_bytes(model, 32, 80)["total"] > 1.8 * base


def test_gpu_peak_is_missing_not_zero_on_cpu():
    with measure.gpu_peak(torch.device("cpu")) as peak:
        torch.ones(1000)
    assert all(v != v for v in peak.values())  # NaN


def test_sweep_records_sizes_estimates_and_throughput(tiny_cfg, tmp_path):
    table = runner.run(tiny_cfg, tmp_path / "out").table
    for column in ("embedding_mb_fp16", "rest_mb_int8", "est_peak_mb", "est_embedding_mb",
                   "tokens_per_second", "examples_per_second", "eval_tokens_per_second",
                   "eval_examples_per_second"):  # fmt: skip
        assert (table[column] > 0).all(), column
    assert table["gpu_peak_mb"].isna().all() and table["gpu_reserved_mb"].isna().all()


def test_budget_holds_during_the_sweep(tiny_overrides, tmp_path, monkeypatch):
    real_fit, trained = trial_module.fit, []

    def recording_fit(model, *args, **kwargs):
        trained.append(model.num_params()["total"])
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(trial_module, "fit", recording_fit)
    cfg = compose_config([*tiny_overrides, "search.max_params=8000", "search.n_trials=5",
                          "search/sampler=random"])  # fmt: skip
    table = runner.run(cfg, tmp_path / "out").table
    done = table[table["state"] == "COMPLETE"]
    skipped = table[table["state"] == "SKIPPED"]
    assert len(done) == 5 and (done["params_total"] <= 8000).all()
    assert len(skipped) >= 1 and (skipped["params_total"] > 8000).all()
    assert (
        skipped["fail_reason"]
        .str.contains(r"over budget, params_total=.* > search.max_params")
        .all()
    )
    assert max(trained) <= 8000 and len(trained) == 5  # over-budget configurations never trained
    assert (skipped["budget_excess"] > 0).all() and (done["budget_excess"] <= 0).all()


def test_budget_feeds_the_sampler_constraints(tiny_overrides, tmp_path):
    from sweep import search

    cfg = compose_config([*tiny_overrides, "search.max_params=8000", "search.n_trials=2"])
    runner.run(cfg, tmp_path / "out")
    study = study_module.load_study(make_storage(cfg.search), cfg.search.study_name)
    for trial in study.trials:  # every trial tells the sampler how far over budget it was
        if search.TRIAL_CONSTRAINTS:
            assert list(trial.constraints.values()) == [trial.user_attrs["budget_excess"]]
        else:
            assert (
                search.make_sampler(
                    cfg.search, 0, SearchSpace(cfg.search.space, 1000)
                )._constraints_func
                is not None
            )


def test_plan_mode_writes_plan_csv_without_training(tmp_path):
    result = run_cli([*TINY, "plan=true", "plan_points=3", "model=cnn", "search.max_params=20000",
                      "search.max_memory_mb=400", "hydra.run.dir=p"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "plan (no training), 9 points" in result.stdout + result.stderr
    plan = pd.read_csv(tmp_path / "p" / "plan.csv")
    assert len(plan) == 9
    assert sorted(plan["embedding_dim"].unique()) == [4, 11, 32]  # corners included
    assert plan["vocab_size"].min() == 20 and plan["vocab_size"].max() > 1000
    assert (plan["over_max_params"] == (plan["params_total"] > 20000)).all()
    assert (plan["over_max_memory_mb"] == (plan["est_peak_mb"] > 400)).all()
    assert plan["over_max_params"].any() and not plan["over_max_params"].all()
    assert not (tmp_path / "studies").exists()  # nothing trained, no study created
