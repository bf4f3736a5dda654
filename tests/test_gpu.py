"""GPU memory measurement on CUDA (marked gpu; skipped where there is no CUDA device).

Unverified: written on machines without a GPU (the last GPU run, ../shared/gpu/README.md,
predates the baseline/own-peak split and the probe). ``python -m sweep.benchmarks.gpu`` runs
these with the memory table.
"""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

from sweep import runner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", ["bag", "cnn", "rnn", "transformer"])
def test_measured_peak_and_estimate(name, tiny_overrides, tmp_path):
    grid = ["search/sampler=grid", "search.sampler.values.embedding_dim=[8,32]",
            "search.sampler.values.vocab_size=[50,null]"]  # fmt: skip
    cfg = compose_config([*tiny_overrides, f"model={name}", "device=cuda", *grid,
                          "search.n_trials=4"])  # fmt: skip
    table = runner.run(cfg, tmp_path / "out").table
    assert (table["state"] == "COMPLETE").all()
    assert (table["gpu_peak_mb"] > 0).all()
    assert (table["gpu_reserved_mb"] >= table["gpu_peak_mb"]).all()
    # The trial's own peak: the estimate within 15%, the probe (one step, measured) within 2%.
    ratio = table["est_peak_mb"] / table["gpu_peak_mb"]
    assert ratio.between(0.85, 1.15).all(), ratio.tolist()
    probe = table["probe_peak_mb"] / table["gpu_peak_mb"]
    assert probe.between(0.98, 1.02).all(), probe.tolist()
    # The baseline every trial runs on: the corpus and the cuBLAS workspaces, made before trial 0.
    assert table["gpu_baseline_mb"].nunique() == 1, table["gpu_baseline_mb"].tolist()
    base = table["est_baseline_mb"] / table["gpu_baseline_mb"]
    assert base.between(0.85, 1.15).all(), base.tolist()


def test_a_trial_figure_does_not_depend_on_the_previous_trial(tiny_overrides, tmp_path):
    # The same small configuration after a large one and alone: the same peak.
    big_first = ["search/sampler=grid", "search.sampler.values.embedding_dim=[256,8]",
                 "search.sampler.values.vocab_size=[null]"]  # fmt: skip
    cfg = compose_config([*tiny_overrides, "device=cuda", *big_first, "search.n_trials=2"])
    table = runner.run(cfg, tmp_path / "a").table
    alone = compose_config([*tiny_overrides, "device=cuda", "search/sampler=grid",
                            "search.sampler.values.embedding_dim=[8]",
                            "search.sampler.values.vocab_size=[null]", "search.n_trials=1",
                            f"search.storage_dir={tmp_path}/b"])  # fmt: skip
    single = runner.run(alone, tmp_path / "b").table
    after_big = table.loc[table["embedding_dim"] == 8, "gpu_peak_mb"].item()
    assert after_big == pytest.approx(single["gpu_peak_mb"].item(), rel=0.01)


@pytest.mark.parametrize("model", ["bag", "cnn", "rnn", "transformer"])
def test_a_pack_epoch_never_waits_for_the_device(tiny_overrides, model):
    """search.pack on CUDA: no host sync inside the step loop (torch's sync debug mode raises
    on one). Unverified here: written on a machine without a GPU."""
    from conftest import fixed_config

    from sweep.data.prepared import PreparedData
    from sweep.models.fit import EarlyStopping, plan_batches
    from sweep.models.kinds import build_model
    from sweep.models.optim import Optimizers
    from sweep.models.pack import fit as pack_fit
    from sweep.models.pack.member import Member, trial_generator
    from sweep.models.pack.optim import PackedOptimizer
    from sweep.trial import TrialRunner

    extra = [f"model={model}", "data.max_length=32"] if model != "bag" else []
    cfg = fixed_config([*tiny_overrides[:-1], "device=cuda", "model.sparse=false", *extra])
    runner = TrialRunner(cfg, PreparedData.load(cfg.data, cfg.seed, torch.device("cuda")))
    members = []
    for dim, cutoff in ((8, 100), (12, 300), (16, 500)):
        params = {"embedding_dim": dim, "vocab_size": cutoff}
        trial_cfg, sizes = runner.setup(params)
        model = build_model(trial_cfg.model, sizes.num_embeddings, dim, runner.data.num_classes)
        views = {s: runner.data.view(s, sizes.vocab_size) for s in ("train", "validation", "test")}
        stopping = EarlyStopping(patience=2)
        member = Member(model.cuda(), Optimizers(model, 0.01), views, None, stopping)
        member.rng = trial_generator(torch.device("cuda"), cfg.seed)
        members.append(member)
    packed = pack_fit.packed_model(members)
    packed.load(members)
    optimizer = PackedOptimizer(packed, members)
    ids = pack_fit.packed_ids(members, packed)
    train = members[0].views["train"]
    batches = plan_batches(train.lengths, 64, torch.Generator().manual_seed(0))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = pack_fit.pack_epoch(packed, optimizer, ids, train, batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(losses).all()
