"""Memory and cost on any device: sizes, the analytic peak estimate, budgets, plan mode."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import torch
from conftest import TINY, compose_config, fixed_config, run_cli

from sweep import measure, runner
from sweep.data.prepared import PreparedData
from sweep.models.kinds import build_model
from sweep.search import study as study_module
from sweep.search.loop import own_mb
from sweep.search.space import SearchSpace
from sweep.search.storage import make_storage
from sweep.trial import TrialRunner, recipe, side_by_side
from sweep.trial import lone as trial_module

MODELS = ["bag", "cnn", "rnn", "transformer"]


def estimate(name: str, vocab: int, dim: int, batch: int = 64, length: int = 80) -> dict:
    cfg = fixed_config([f"model={name}"])
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
    cfg = fixed_config([f"model={name}"])
    with torch.device("meta"):
        model = build_model(cfg.model, 1002, 32, 4)
    base = measure.saved_activation_bytes(model, 32, 40)["total"]
    assert measure.saved_activation_bytes(model, 64, 40)["total"] == pytest.approx(
        2 * base, rel=0.05
    )
    assert measure.saved_activation_bytes(model, 32, 80)["total"] > 1.8 * base


def test_attention_runs_where_pytorch_would_run_it():
    """Float32 on CUDA: memory-efficient attention when the head width is a multiple of the
    GEMM alignment (4 from Ampere on, 1 before); the math path otherwise and on a CPU."""
    kernel = measure.attention_kernel
    assert kernel(None, 8) == "math"
    assert kernel((9, 0), 8) == kernel((8, 0), 4) == "efficient"
    assert kernel((9, 0), 10) == kernel((8, 6), 3) == "math"
    assert kernel((7, 5), 3) == "efficient"  # float32 without tensor cores: no alignment
    assert kernel((3, 7), 8) == "math"  # below compute capability 5.0


def test_efficient_attention_keeps_what_its_backward_needs():
    """By hand: q, k, v (4 x 2 heads x 20 queries x 8), the mask copied to a key length padded
    to 16 (20 -> 32), the output and one float32 log-sum-exp per query row padded to 32."""
    b, h, length, d = 4, 2, 20, 8
    q, k, v = (torch.empty(b, h, length, d, device="meta", requires_grad=True) for _ in range(3))
    mask = torch.zeros(b, h, 1, length, device="meta")
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.untyped_storage().nbytes()) or t, lambda t: t
    ):
        out = measure.efficient_attention(q, k, v, attn_mask=mask, dropout_p=0.1)
    assert out.shape == (b, h, length, d)
    qkv = b * h * length * d * 4
    assert sorted(saved) == sorted([qkv, qkv, qkv, b * h * 1 * 32 * 4, qkv, b * h * 32 * 4])


def test_a_cuda_transformer_estimate_keeps_no_attention_matrix():
    """On CUDA (traced as memory-efficient attention) a Transformer step keeps no (length x
    length) matrix and no dropout mask for it: its saved bytes grow linearly with the length;
    the math path's (a CPU; a head width of 10) grow faster and keep that mask too."""

    def saved(capability, length, dropout=0.1, width=32):
        cfg = compose_config(["model=transformer", f"model.dropout={dropout}"])
        with torch.device("meta"):
            model = build_model(cfg.model, 1002, width, 4)
        return measure.saved_activation_bytes(model, 16, length, capability)["total"]

    hopper = (9, 0)
    assert saved(hopper, 128) == pytest.approx(2 * saved(hopper, 64), rel=0.02)
    assert saved(None, 128) > 1.5 * saved(hopper, 128)
    # The math path also keeps the attention weights' dropout mask; the kernel redraws it.
    gap = saved(None, 128) - saved(hopper, 128)
    assert gap > saved(None, 128, dropout=0.0) - saved(hopper, 128, dropout=0.0)
    assert saved(None, 128) > 2.5 * saved(None, 64)
    assert saved(hopper, 128, width=30) == saved(None, 128, width=30)  # 3 heads of 10: math


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
    from sweep.search import settings as search

    # TPE and NSGA-II learn budgets as constraints (ehvi, the default, fits them: test_ehvi).
    cfg = compose_config([*tiny_overrides, "search.max_params=8000", "search.n_trials=2",
                          "search/sampler=tpe"])  # fmt: skip
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
                      "search.max_memory_mb=400", "search.max_model_bytes=50KB",
                      "hydra.run.dir=p"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "plan (no training), 9 points" in result.stdout + result.stderr
    plan = pd.read_csv(tmp_path / "p" / "plan.csv")
    assert len(plan) == 9
    assert sorted(plan["embedding_dim"].unique()) == [4, 11, 32]  # corners included
    assert plan["vocab_size"].min() == 20 and plan["vocab_size"].max() > 1000
    assert (plan["over_max_params"] == (plan["params_total"] > 20000)).all()
    assert (plan["over_max_memory_mb"] == (plan["memory_mb"] > 400)).all()
    # search.precision=best: a point fits the byte budget if its smallest (int4) file does.
    assert (plan["over_max_model_bytes"] == (plan["file_bytes_int4"] > 50_000)).all()
    assert plan["over_max_model_bytes"].any() and not plan["over_max_model_bytes"].all()
    assert (plan["file_bytes_fp32"] > plan["file_bytes_int8"]).all()
    assert plan["over_max_params"].any() and not plan["over_max_params"].all()
    assert not (tmp_path / "studies").exists()  # nothing trained, no study created


MiB = 2**20


def test_cublas_workspace_terms_by_hand():
    workspace = measure.cublas_workspace_bytes
    assert workspace(None, None) == 0  # no CUDA: no workspace
    assert workspace((9, 0), None) == 32 * MiB  # Hopper's default: 4096 KiB x 8
    assert workspace((8, 0), None) == 4096 * 1024 * 2 + 16 * 1024 * 8  # :4096:2:16:8
    assert workspace((9, 0), ":0:0") == 0
    assert workspace((8, 6), ":4096:8") == 32 * MiB
    assert workspace((8, 6), ":16:8") == 128 * 1024
    assert workspace((9, 0), "nonsense") == 32 * MiB  # PyTorch warns, uses the default
    assert workspace((8, 0), "nonsense") == 4096 * 1024 * 2 + 16 * 1024 * 8
    assert workspace((10, 0), None) == workspace((12, 0), None) == 32 * MiB  # Blackwell
    # Two handles (main thread, autograd's thread): the H200's 64 MiB after a first backward.
    assert measure.CUBLAS_HANDLES * workspace((9, 0), None) == 64 * MiB
    assert measure.baseline_bytes(torch.device("cpu"), 12345) == {
        "corpus": 12345,
        "cublas_workspaces": 0,
    }


def test_the_estimate_counts_state_by_hand():
    """A bag model with no hidden layer, dense table: every term computed by hand."""
    cfg = compose_config(["model=bag", "model.hidden_dim=0"])
    with torch.device("meta"):
        model = build_model(cfg.model, 1002, 16, 4)
    params = 1002 * 16 + 16 * 4 + 4
    saved = measure.saved_activation_bytes(model, 8, 10)
    est = measure.estimate_peak_mb(
        model, params_total=params, params_embedding=1002 * 16, embedding_dim=16, sparse=False,
        batch_size=8, eval_batch_size=8, max_length=10, data_bytes=1000,
    )  # fmt: skip
    # weights, two Adam moments, the best epoch's copy, dense gradients, activations, the view
    train = params * 4 * 4 + params * 4 + saved["total"] + 1000
    assert est["est_peak_mb"] * MiB == pytest.approx(max(train, train - saved["total"]
                                                         + 2 * saved["largest"]))  # fmt: skip
    assert est["est_embedding_mb"] * MiB == pytest.approx(1002 * 16 * 4 * 4)


class FakeMemory:
    """The CUDA allocator's counters, scripted: ``base`` allocated when a scope begins and a
    peak ``own`` above it; the measuring code runs on a CPU with it."""

    def __init__(self, base_mb: float, own_mb: float):
        self.base, self.own, self.resets = int(base_mb * MiB), int(own_mb * MiB), 0

    def synchronize(self):
        pass

    def allocated(self):
        return self.base

    def reset_peak(self):
        self.resets += 1

    def peak(self):
        return self.base + self.own

    def reserved_peak(self):
        return self.base + self.own + 2 * MiB


def test_a_measured_scope_reports_its_own_peak_and_the_baseline():
    fake = FakeMemory(base_mb=70, own_mb=12)
    with measure.gpu_peak(torch.device("cpu"), fake) as peak:
        pass
    assert fake.resets == 1
    assert peak == {"peak_mb": 12.0, "baseline_mb": 70.0, "reserved_mb": 84.0}


def test_the_probe_sets_what_budgets_compare(tiny_cfg, monkeypatch):
    from sweep.data.prepared import PreparedData
    from sweep.search.loop import skip_reason
    from sweep.trial import TrialRunner

    data = PreparedData.load(tiny_cfg.data, tiny_cfg.seed, "cpu")
    params = {"embedding_dim": 8, "vocab_size": 100}
    plain = TrialRunner(tiny_cfg, data)
    assert plain.memory is None  # a CPU has no counters: no probe, the estimate decides
    estimated = plain.describe(params)
    assert estimated["probe_peak_mb"] != estimated["probe_peak_mb"]  # NaN
    assert estimated["memory_mb"] == pytest.approx(
        estimated["est_peak_mb"] + estimated["est_baseline_mb"]
    )
    probed = TrialRunner(tiny_cfg, data)
    probed.memory = FakeMemory(base_mb=70, own_mb=300)  # the probe step really runs, here
    figures = probed.describe(params)
    assert figures["probe_peak_mb"] == 300.0
    assert figures["memory_mb"] == pytest.approx(300.0 + figures["est_baseline_mb"])
    search = compose_config(["search.max_memory_mb=200"]).search
    monkeypatch.setattr("sweep.search.loop.oom_limit", lambda study: None)
    assert skip_reason(None, estimated, search) is None
    assert "memory_mb=300 > search.max_memory_mb=200" in skip_reason(None, figures, search)
    record = probed.train(params)  # the trial's own peak and its baseline, from the counters
    assert record["gpu_peak_mb"] == 300.0 and record["gpu_baseline_mb"] == 70.0


def test_a_probe_out_of_memory_skips_the_trial_untrained(tiny_overrides, tmp_path, monkeypatch):
    trained = []
    real_fit = trial_module.fit

    def probe(self, setup):
        if setup[1].embedding_dim >= 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 5.0

    monkeypatch.setattr(measure, "memory_reader", lambda device: FakeMemory(70, 5))
    monkeypatch.setattr(TrialRunner, "_probe", probe)
    monkeypatch.setattr(
        trial_module, "fit", lambda m, *a, **k: trained.append(m) or real_fit(m, *a, **k)
    )
    cfg = compose_config([*tiny_overrides, "search/sampler=random", "search.n_trials=5",
                          "search.max_consecutive_skips=500", "search.space.embedding_dim.high=64"])  # fmt: skip
    table = runner.run(cfg, tmp_path / "out").table
    ooms = table[table["state"] == "SKIPPED"]  # it does not fit: skipped, as over a budget
    assert len(ooms) >= 1 and (ooms["embedding_dim"] >= 16).all()
    assert ooms["fail_reason"].str.contains("out of memory in the probe").all()
    assert (ooms["probe_peak_mb"] == float("inf")).all()
    assert (ooms["memory_mb"] == float("inf")).all() and (table["state"] != "FAIL").all()
    assert all(m.frontend.embed.weight.shape[1] < 16 for m in trained)
    done = table[table["state"] == "COMPLETE"]
    assert (done["probe_peak_mb"] == 5.0).all() and (done["gpu_baseline_mb"] == 70.0).all()


# search.max_memory_mb=auto: a trial its device cannot hold is never started.

GRID = ["search/sampler=grid", "search.sampler.values={embedding_dim: [4, 256], vocab_size: [null]}",
        "search.n_trials=2", "report.export=none", "report.quantize=none"]  # fmt: skip


def _memory_needs(tiny_overrides) -> dict[int, float]:
    """memory_mb of the grid's two trials (a narrow and a wide table), from plan mode."""
    cfg = compose_config([*tiny_overrides, *GRID, "plan=true", "plan_points=2",
                          "search.space.embedding_dim.high=256"])  # fmt: skip
    data = PreparedData.load(recipe.fixed(cfg).data, cfg.seed, "cpu")
    trial = TrialRunner(recipe.fixed(cfg), data)
    full = data.full_vocab
    return {d: trial.describe({"embedding_dim": d, "vocab_size": full}, probe=False)["memory_mb"]
            for d in (4, 256)}  # fmt: skip


def test_a_trial_over_the_memory_its_device_has_is_not_started(tiny_overrides, tmp_path,
                                                                monkeypatch, count_fits):  # fmt: skip
    """Available memory injected between the narrow and the wide trial's need: the wide one is
    SKIPPED untrained with the reason naming the bound and where it comes from, the narrow one
    trains; a number or null instead of auto is no device bound."""
    need = _memory_needs(tiny_overrides)
    assert need[4] < need[256]
    cfg = compose_config([*tiny_overrides, *GRID, "search.space.embedding_dim.high=256"])
    data = PreparedData.load(recipe.fixed(cfg).data, cfg.seed, "cpu")
    # memory_mb counts the corpus this process already holds; the bound adds it back.
    held = TrialRunner(recipe.fixed(cfg), data).describe(
        {"embedding_dim": 4, "vocab_size": data.full_vocab}, probe=False)["est_baseline_mb"]  # fmt: skip
    available = ((need[4] + need[256]) / 2 - held) / runner.MEMORY_HEADROOM
    monkeypatch.setattr(measure, "available_mb", lambda device: (available, "injected memory"))
    result = runner.run(cfg, tmp_path / "out")
    table = result.table  # a skipped point does not count: the grid may ask it again
    states = table.groupby("embedding_dim")["state"].agg(set).to_dict()
    assert "COMPLETE" in states[4] and states[256] == {"SKIPPED"}
    reason = table.loc[table["embedding_dim"] == 256, "fail_reason"].iloc[0]
    assert reason.startswith(f"skipped: memory_mb={need[256]:,.0f} > the ")
    assert "a trial may take on this device (injected memory" in reason
    assert len(count_fits) == 1  # the wide trial never trained
    for setting in ("search.max_memory_mb=null", "search.max_memory_mb=100000"):
        again = compose_config([*tiny_overrides, *GRID, "search.space.embedding_dim.high=256",
                                setting, f"search.study_name=other-{setting[-4:]}"])  # fmt: skip
        done = runner.run(again, tmp_path / setting).table
        assert (done["state"] == "COMPLETE").all(), setting


@pytest.mark.parametrize("value", ["-5", "lots", "true"])
def test_a_bad_memory_budget_names_its_key(value):
    from sweep.config import check_config
    from sweep.search.settings import SearchError

    with pytest.raises(SearchError, match=r"search\.max_memory_mb=.* must be auto"):
        check_config(compose_config([f"search.max_memory_mb={value}"]))


def test_workers_share_the_memory_their_device_has(tiny_overrides, tmp_path):
    """search.workers=2 on a CPU with little memory (injected through the environment every
    worker inherits): each worker's bound is half of it, the wide trial is skipped by whichever
    worker draws it, and the run still ends with code 0."""
    import os

    need = _memory_needs(tiny_overrides)
    available = (need[4] + need[256]) / runner.MEMORY_HEADROOM  # one worker would hold both
    env = {**os.environ, measure.AVAILABLE_VARIABLE: str(available)}
    result = run_cli([*TINY, *GRID, "search.space.embedding_dim.high=256", "search.workers=2",
                      "hydra.run.dir=out"], cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    states = table.groupby("embedding_dim")["state"].agg(set).to_dict()
    assert "COMPLETE" in states[4] and states[256] == {"SKIPPED"}
    reasons = table.loc[table["embedding_dim"] == 256, "fail_reason"]
    assert reasons.str.contains("shared by 2 workers").all()


def test_packs_are_cut_to_fit_the_memory_room():
    """Trials that each fit train together only as far as their own peaks, summed on the one
    baseline they share, fit the room; without a room they stay one pack."""
    from sweep.search.loop import MemoryRoom, fitting

    pending = [(n, {}, {"memory_mb": 40.0, "est_baseline_mb": 10.0}) for n in range(5)]
    room = MemoryRoom(limit_mb=100.0, available_mb=100.0, source="injected")
    assert [[n for n, _, _ in g] for g in fitting(pending, room)] == [[0, 1, 2], [3, 4]]
    assert fitting(pending, None) == [pending] and fitting([], None) == []


def test_trainings_side_by_side_take_no_more_memory_than_the_device_has(monkeypatch, caplog):
    """``processes``: the probe's choices and the seed repeats side by side, as many as the
    available memory holds with each training's own estimate (the children share the corpus)."""
    monkeypatch.setenv(measure.AVAILABLE_VARIABLE, "1000")  # 850 MiB with the headroom
    caplog.set_level(logging.INFO, logger=side_by_side.__name__)
    cpu = torch.device("cpu")
    assert side_by_side.within_memory(4, 200.0, cpu, "seed repeats") == 4
    assert side_by_side.within_memory(4, 300.0, cpu, "seed repeats") == 2
    assert side_by_side.within_memory(2, 5000.0, cpu, "recipe probe") == 1  # one always trains
    assert "recipe probe: 1 side by side, not 2" in caplog.text
    assert own_mb({"memory_mb": 120.0, "est_baseline_mb": 20.0}) == 100.0


def test_seed_repeats_cut_to_one_at_a_time_by_memory_count_each_fit_once(
    tiny_overrides, tmp_path, monkeypatch
):
    """``processes=2`` where the memory holds one training: the repeats train one at a time in
    this process, and the time line counts each of their fits once."""
    monkeypatch.setattr(side_by_side, "within_memory", lambda processes, own, device, what: 1)
    overrides = [
        *tiny_overrides,
        "report.repeats=1",
        "report.top_k=3",
        "search.n_trials=4",
        "processes=2",
    ]
    runner.run(compose_config(overrides), tmp_path / "out")
    timing = json.loads((tmp_path / "out" / "timing.json").read_text())
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert timing["repeat_fits"] == int(table["seeds"].notna().sum()) >= 1
