"""Packed trials (search.pack): each trial gets the numbers it gets alone, fails alone, and the
sweep around packs keeps its promises (counts, the pack column, kill -9 and resume)."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import torch
from conftest import ROOT, TINY, compose_config, default_study, watch_study
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from sweep import runner
from sweep.data.prepared import PreparedData, SplitTensors
from sweep.models.classifiers import (
    BagClassifier,
    CNNClassifier,
    RNNClassifier,
    TransformerClassifier,
)
from sweep.models.optim import Optimizers, fused_kernel_works
from sweep.models.pack import fit as pack_fit
from sweep.models.pack import grouping
from sweep.models.pack.member import Member
from sweep.models.pack.optim import PackedOptimizer
from sweep.search import study as study_module
from sweep.search.storage import journal_storage
from sweep.trial import TrialRunner
from sweep.trial import pack as trial_pack

# Four trials of different width and cutoff; the one of width 9 diverges (see poison).
PARAMS = [
    {"embedding_dim": d, "vocab_size": k} for d, k in ((4, 50), (9, 300), (16, 1000), (32, 120))
]


def poison(model: torch.nn.Module) -> torch.nn.Module:
    """Make the width-9 trial diverge: a NaN in its classifier, as an exploding step would."""
    if model.frontend.embed.weight.shape[1] == 9:
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if not n.startswith("frontend")).fill_(
                math.nan
            )
    return model


def runner_for(tiny_overrides, *extra) -> TrialRunner:
    cfg = compose_config([*tiny_overrides, "data.synthetic.num_docs=1200", "train.epochs=6",
                          "train.patience=1", *extra])  # fmt: skip
    return TrialRunner(cfg, PreparedData.load(cfg.data, cfg.seed, torch.device("cpu")))


def alone_and_packed(trial_runner: TrialRunner):
    alone = []
    for params in PARAMS:
        try:
            alone.append(trial_runner.train(params, wrap_model=poison))
        except Exception as error:
            alone.append(error)
    packed = trial_runner.train_pack(PARAMS, [None] * 4, [7, 8, 9, 10], wrap_model=poison)
    return alone, packed


@pytest.fixture
def exact():
    """Float64 for a test that asks a packed trial for exactly its lone numbers over epochs.

    Packing computes the same function, not the same float32 sums: a grouped convolution over
    zero-padded widths, a block-diagonal RNN, stacked layers in a batched product and the fused
    Adam kernel each reduce in another order than the lone kernels. The gap of one float32 step
    is no larger than the lone step's own rounding (CNN: logits 6e-8 from float64 against the
    lone step's 5e-8), but over epochs it can move a borderline validation document, and which
    kernel the CPU picks decides when: the CNN's history differed at epoch 5 on a machine whose
    oneDNN ran AVX2 kernels at one thread (``ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1``
    reproduces it here), equal at 2 threads and with AVX-512. In float64 every model's pack is
    bit-equal to its lone runs on each of those; the one-step test checks float32."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


MODELS = {
    "bag": [],
    "cnn": ["model=cnn", "data.max_length=32"],
    "gru": ["model=rnn", "data.max_length=32", "model.hidden_size=16"],
    "lstm-2-mean": ["model=rnn", "data.max_length=32", "model.hidden_size=8", "model.cell=lstm",
                    "model.num_layers=2", "model.dropout=0", "model.pooling=mean"],
    "transformer": ["model=transformer", "data.max_length=32", "model.ff_dim=32"],
}  # fmt: skip


@pytest.mark.parametrize("model", list(MODELS))
def test_a_packed_trial_gets_the_numbers_it_gets_alone(tiny_overrides, monkeypatch, exact, model):
    """Each packable model (with its dropout: each trial's masks from its own stream), in float64
    (see ``exact``). The CNN and the RNN pack on CUDA only (grouping.PACKABLE); their packed
    models run here on the CPU all the same."""
    monkeypatch.setattr(grouping, "PACKABLE", dict.fromkeys(grouping.PACKABLE))  # any device
    extra = MODELS[model]
    # search.pack_padding=100: all four in one pack, widths 4 to 32.
    trial_runner = runner_for(
        tiny_overrides, "model.sparse=false", "search.pack_padding=100", *extra
    )
    assert grouping.pack_key(trial_runner.cfg) is not None
    alone, packed = alone_and_packed(trial_runner)
    diverged = [i for i, r in enumerate(packed) if isinstance(r, BaseException)]
    assert diverged == [1] and isinstance(alone[1], FloatingPointError)
    assert isinstance(packed[1], FloatingPointError) and "training loss became nan" in str(
        packed[1]
    )
    epochs = {alone[i]["epochs"] for i in (0, 2, 3)}
    assert len(epochs) > 1 and min(epochs) < 6  # early stopping differs per trial
    for i in (0, 2, 3):
        a, b = alone[i], packed[i]
        assert b["pack"] == 7 and "pack" not in a
        assert b["val_accuracy"] == a["val_accuracy"] and b["test_accuracy"] == a["test_accuracy"]
        assert (b["epochs"], b["best_epoch"]) == (a["epochs"], a["best_epoch"])
        assert b["val_history"] == a["val_history"]
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)


def lone_model(model: str, rows: int, width: int) -> torch.nn.Module:
    kinds = {
        "bag": lambda: BagClassifier(rows, width, 3, hidden_dim=6, sparse=False),
        "cnn": lambda: CNNClassifier(rows, width, 3, num_filters=5, sparse=False),
        "gru": lambda: RNNClassifier(rows, width, 3, hidden_size=6, sparse=False),
        "lstm": lambda: RNNClassifier(
            rows, width, 3, cell="lstm", hidden_size=5, num_layers=2, dropout=0.0, sparse=False
        ),  # fmt: skip
        "transformer": lambda: TransformerClassifier(
            rows, width, 3, num_layers=2, ff_dim=12, max_length=8, sparse=False
        ),  # fmt: skip
    }
    return kinds[model]()


@pytest.mark.parametrize("model", ["bag", "cnn", "gru", "lstm", "transformer"])
def test_one_packed_step_gives_each_trial_its_own_gradient_and_nothing_else(model):
    """Forward and backward of a pack of three (widths 4, 9, 16; dropout on, each trial's masks
    from its own stream) against each trial alone: the same logits and gradients, and exactly
    zero gradient everywhere in the packed tensors outside the trials' own pieces (padding,
    a block-diagonal layer's other blocks), so Adam leaves those at zero."""
    members, batch, length = [], 5, 7
    for width, rows in ((4, 50), (9, 30), (16, 70)):
        torch.manual_seed(width)
        member = Member(lone_model(model, rows, width), None, None, None, None)
        member.rng = torch.Generator().manual_seed(100 + width)
        members.append(member)
    lengths = torch.tensor([7, 3, 1, 5, 6])
    ids = [torch.randint(2, m.table.shape[0], (batch, length)) for m in members]
    for t in ids:
        t[torch.arange(length)[None] >= lengths[:, None]] = 0
    labels = torch.randint(0, 3, (batch,))
    packed = pack_fit.packed_model(members)
    packed.load(members)
    packed.train()
    stacked = torch.stack(
        [torch.where(t == 0, t, t + o) for t, o in zip(ids, packed.offsets, strict=True)]
    )
    logits = packed(stacked, lengths)
    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), labels.repeat(3), reduction="none"
    )
    loss.view(3, -1).mean(dim=1).sum().backward()
    for i, member in enumerate(members):
        member.model.train()
        torch.set_rng_state(torch.Generator().manual_seed(100 + member.table.shape[1]).get_state())
        alone = member.model(ids[i])
        torch.nn.functional.cross_entropy(alone, labels).backward()
        assert torch.allclose(logits[i], alone, atol=1e-5)
    covered = {id(p): torch.zeros_like(p, dtype=torch.bool) for p in packed.parameters()}
    for piece in packed.pieces(members):
        covered[id(piece.packed)][piece.where] = True
        assert torch.allclose(piece.packed.grad[piece.where], piece.own_part(piece.own.grad),
                              atol=1e-5)  # fmt: skip
    for name, param in packed.named_parameters():
        assert not param.grad[~covered[id(param)]].any(), name


def test_trials_with_their_own_learning_rates_share_a_pack(tiny_overrides, exact):
    """A searched train.lr: each trial of the pack steps with its own rate, as alone."""
    axis = "+search.space.lr={type:float,low:0.001,high:0.1,log:true,key:train.lr}"
    trial_runner = runner_for(tiny_overrides, "model.sparse=false", "search.pack_padding=100", axis)
    params = [{**p, "lr": lr} for p, lr in zip(PARAMS, (0.003, 0.01, 0.03, 0.01), strict=True)]
    alone = [trial_runner.train(p) for p in params]
    packed = trial_runner.train_pack(params, [None] * 4, [1, 2, 3, 4])
    assert {r["pack"] for r in packed} == {1}  # one pack, four rates
    for a, b in zip(alone, packed, strict=True):
        assert b["val_history"] == a["val_history"] and b["test_accuracy"] == a["test_accuracy"]
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
    assert len({a["val_loss"] for a in alone}) == 4  # the rates made a difference


@pytest.mark.parametrize("model", ["cnn", "rnn", "transformer"])
def test_other_models_train_alone_inside_a_pack(tiny_overrides, model):
    """The CNN, the RNN and the Transformer pack on CUDA only; on a CPU they train alone."""
    extra = [f"model={model}", "data.max_length=32"]
    trial_runner = runner_for(tiny_overrides, *extra, "train.epochs=2")
    assert grouping.pack_key(trial_runner.cfg) is None  # not packed here: never refused
    params = PARAMS[:2]
    alone = [trial_runner.train(p) for p in params]
    packed = trial_runner.train_pack(params, [None, None], [0, 1])
    for a, b in zip(alone, packed, strict=True):
        assert b["val_accuracy"] == a["val_accuracy"] and "pack" not in b


def test_a_pack_that_fails_as_a_whole_trains_its_trials_alone(tiny_overrides, monkeypatch):
    """An error of the pack's shared step (out of memory: a pack needs more than its trials
    alone) is not the trials' failure: each trains alone, with its lone numbers, no pack."""
    trial_runner = runner_for(tiny_overrides, "model.sparse=false", "train.epochs=2",
                              "search.pack_padding=100")  # fmt: skip
    params = PARAMS[:3]
    alone = [trial_runner.train(p) for p in params]

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trial_pack, "fit_pack", out_of_memory)
    packed = trial_runner.train_pack(params, [None] * 3, [4, 5, 6])
    for a, b in zip(alone, packed, strict=True):
        assert isinstance(b, dict) and "pack" not in b
        assert b["val_history"] == a["val_history"] and b["test_accuracy"] == a["test_accuracy"]


def test_a_trial_that_ends_early_in_a_pack_is_settled_while_the_others_train(
    tiny_overrides, monkeypatch
):
    """Each result goes out as soon as its trial ends (the sweep tells it then: a kill of the
    pack loses none of them); what the receiver raises (a sweep that must stop) ends the pack
    and is not taken for the pack's failure (nothing retrains alone)."""
    trial_runner = runner_for(tiny_overrides, "model.sparse=false", "search.pack_padding=100")
    events = []

    def on_epoch(i):
        return lambda epoch, value: events.append(("epoch", i, epoch))

    def on_result(i, result):
        events.append(("result", i, type(result).__name__))

    results = trial_runner.train_pack(PARAMS, [on_epoch(i) for i in range(4)], [0, 1, 2, 3],
                                      wrap_model=poison, on_result=on_result)  # fmt: skip
    assert isinstance(results[1], FloatingPointError)
    settled = events.index(("result", 1, "FloatingPointError"))  # diverged in epoch 1
    assert any(e[0] == "epoch" and e[2] > 1 for e in events[settled:])  # the others went on
    assert sorted(e[1] for e in events if e[0] == "result") == [0, 1, 2, 3]

    def stop(i, result):
        raise RuntimeError("the sweep stops here")

    trained_alone = []
    monkeypatch.setattr(TrialRunner, "train", lambda *a, **k: trained_alone.append(a))
    with pytest.raises(RuntimeError, match="the sweep stops here"):
        trial_runner.train_pack(PARAMS, [None] * 4, [0, 1, 2, 3], wrap_model=poison,
                                on_result=stop)  # fmt: skip
    assert not trained_alone


# Operations that read a tensor's values back to the host: ``.item()``, ``nonzero`` (and the
# boolean-mask indexing built on it) and the like. On a device tensor each is a sync on CUDA.
HOST_READS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.is_nonzero",
              "aten.equal", "aten._unique", "aten.unique", "aten.repeat_interleave")  # fmt: skip


class OpCounter(TorchDispatchMode):
    """Records the ATen operations dispatched inside it that compute (a kernel launch or more
    on CUDA each; views and detaches, which launch nothing, are left out), and the host reads
    (``HOST_READS``, indexing by a boolean mask) of tensors that would be on the device.

    On a CPU every tensor is on the host, so which ones a CUDA run keeps there is followed
    here: ``host`` (the tensors the code keeps on the host: batch lengths and indices), what is
    computed from them alone, and a PackedSequence's ``batch_sizes`` (on the CPU by PyTorch's
    contract). Everything else would be on the device. Unseen: ``.tolist()``, ``.numpy()`` and
    ``.cpu()`` of a CPU tensor dispatch nothing; the GPU test sees those."""

    def __init__(self, host=()):
        super().__init__()
        self.ops: list[str] = []
        self.host_reads: list[str] = []
        self.host = WeakIdKeyDictionary({t: True for t in host})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if not func.is_view and func is not torch.ops.aten.detach.default:
            self.ops.append(name)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_device = [t for t in inputs if t not in self.host]
        masks = name.startswith(("aten.index.", "aten.index_put")) and any(
            t.dtype == torch.bool for t in on_device
        )
        if on_device and (name.startswith(HOST_READS) or masks):
            self.host_reads.append(name)
        out = func(*args, **(kwargs or {}))
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if inputs and not on_device:
            self.host.update({t: True for t in outputs})
        elif name.startswith("aten._pack_padded_sequence"):
            self.host[outputs[1]] = True  # batch_sizes
        return out


def pack_ops(model: str, n: int, steps: int) -> OpCounter:
    """What ``steps`` training steps of a pack of ``n`` trials of ``model`` (widths and cutoffs
    all different, dropout on where the model has it) dispatch, optimizer included."""
    fused_kernel_works()  # its one-time check runs outside the count
    lengths = torch.randint(1, 7, (32,))
    ids = torch.randint(2, 20, (32, 6))
    ids[torch.arange(6)[None] >= lengths[:, None]] = 0
    train = SplitTensors(ids, torch.randint(0, 3, (32,)), lengths)
    members = []
    for i in range(n):
        torch.manual_seed(i)
        lone = lone_model(model, 20 + 7 * i, (4, 9, 16, 6, 8, 12, 5, 10)[i])
        member = Member(lone, Optimizers(lone, 0.01), {"train": train}, None, None)
        member.rng = torch.Generator().manual_seed(100 + i)
        members.append(member)
    packed = pack_fit.packed_model(members)
    packed.load(members)
    optimizer = PackedOptimizer(packed, members)
    packed_ids = pack_fit.packed_ids(members, packed)  # each trial's rows, as fit_pack moves them
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        idx = torch.randperm(32, generator=generator)[:8]
        batches.append((idx, int(lengths[idx].max())))
    with OpCounter(host=[lengths, *(idx for idx, _ in batches)]) as counter:
        losses = pack_fit.pack_epoch(packed, optimizer, packed_ids, train, batches)
    assert torch.isfinite(losses).all() and optimizer.steps == steps
    return counter


def test_a_bag_pack_step_launches_the_same_operations_whatever_the_pack_size():
    """Issue 18: a bag pack's kernel launches per step do not grow with N. One table, stacked
    layers in batched products, one fused Adam call: a per-trial loop sneaking into the step
    (a Python loop over members, a per-trial optimizer call) would add operations per trial."""
    two, eight = pack_ops("bag", 2, 3).ops, pack_ops("bag", 8, 3).ops
    assert two == eight
    per_step = (len(pack_ops("bag", 2, 5).ops) - len(two)) / 2
    assert 20 <= per_step <= 60, per_step  # 36 with torch 2.13 (a lone bag step on the H200: 36)
    if fused_kernel_works():
        assert sum(op.startswith("aten._fused_adam") for op in two) == 3  # one Adam call a step


@pytest.mark.parametrize("model", ["bag", "cnn", "gru", "lstm", "transformer"])
def test_a_pack_step_never_reads_a_value_back_to_the_host(model):
    """The CPU side of the GPU test's sync check (tests/test_gpu.py): no operation in a pack's
    step loop reads a device value back (``.item()``, ``nonzero``, a boolean mask), so on CUDA
    the host queues a whole epoch without waiting for the device."""
    counter = pack_ops(model, 3, 2)
    assert counter.ops and not counter.host_reads, sorted(set(counter.host_reads))


def test_packs_group_similar_widths():
    # (index, rows, width): widths 4 and 5 pack together; padding the small table of width 16
    # to 64 costs little beside the two wide tables, padding 5 to 16 would more than double it.
    sizes = [(0, 1000, 64), (1, 1000, 4), (2, 500, 5), (3, 800, 64), (4, 100, 16)]
    assert grouping.split_by_width(sizes, 1.5) == [[1, 2], [4, 0, 3]]
    assert grouping.split_by_width(sizes, max_padding=1000.0) == [[1, 2, 4, 0, 3]]


def test_which_models_share_a_pack_where(tiny_overrides):
    cfg = compose_config(tiny_overrides)
    assert grouping.pack_key(cfg) is not None
    for extra in (["model.dropout=0.1"], ["model.factorized_dim=8"], ["model=rnn"],
                  ["model=transformer"], ["model=cnn"]):  # fmt: skip
        assert grouping.pack_key(compose_config([*tiny_overrides, *extra])) is None
    cnn = compose_config([*tiny_overrides, "model=cnn"])  # dropout 0.5: its own masks
    assert grouping.pack_key(cnn, device="cuda") not in (None, grouping.pack_key(cfg))
    factorized = compose_config([*tiny_overrides, "model=cnn", "model.factorized_dim=8"])
    assert grouping.pack_key(factorized, device="cuda") is None
    for model in ("rnn", "transformer"):  # dropout 0.3 and 0.1: each trial's own masks
        assert grouping.pack_key(compose_config([*tiny_overrides, f"model={model}"]), device="cuda")
    deep = ["model=rnn", "model.num_layers=2"]  # dropout between layers: drawn inside cuDNN
    assert grouping.pack_key(compose_config([*tiny_overrides, *deep]), device="cuda") is None
    no_dropout = compose_config([*tiny_overrides, *deep, "model.dropout=0"])
    assert grouping.pack_key(no_dropout, device="cuda") is not None
    assert grouping.pack_key(cfg, sparse=True) is None  # a sparse table: alone, fused mean
    other_lr = compose_config([*tiny_overrides, "train.lr=0.02"])
    assert grouping.pack_key(other_lr) == grouping.pack_key(cfg)  # each keeps its own rate
    other_batch = compose_config([*tiny_overrides, "train.batch_size=32"])
    assert grouping.pack_key(other_batch) != grouping.pack_key(cfg)  # the batches are shared


def test_a_packed_sweep_fills_its_trials_and_names_their_packs(tiny_overrides, tmp_path, caplog):
    cfg = compose_config([*tiny_overrides, "search.n_trials=6", "search.pack=4"])
    with caplog.at_level(logging.INFO, logger="sweep.runner"):
        result = runner.run(cfg, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert len(table) == 6 and (table["state"] == "COMPLETE").all()
    # Rounds of 4 then 2 trials; a round's trials of similar width share a pack, named by its
    # first trial (a trial trained alone has none).
    packs = table.dropna(subset=["pack"]).groupby("pack")["trial"].apply(list)
    assert len(packs) >= 1 and all(number == min(members) for number, members in packs.items())
    assert all(max(members) < (4 if number < 4 else 6) for number, members in packs.items())
    assert len({(r.embedding_dim, r.vocab_size) for r in table.itertuples()}) == 6  # all differ
    assert result.recommended is not None
    # The progress line of a packed trial gives its own training time and its pack.
    for row in table.dropna(subset=["pack"]).itertuples():
        assert (
            f"(#{row.trial}) complete in {row.train_seconds:.1f}s (pack #{int(row.pack)})"
            in caplog.text
        )


@pytest.mark.parametrize("sampler", ["grid", "qmc", "nsga2"])
def test_packs_ask_from_every_sampler(tiny_overrides, tmp_path, sampler):
    """search.pack with the other samplers, as they are: a grid's points each trained once
    (the sweep ends with the grid), QMC's and NSGA-II's suggestions asked a round at a time."""
    grid = [
        "search.sampler.values.embedding_dim=[4,8]",
        "search.sampler.values.vocab_size=[50,null]",
    ]
    cfg = compose_config([*tiny_overrides, f"search/sampler={sampler}", "search.n_trials=6",
                          "search.pack=3", *(grid if sampler == "grid" else [])])  # fmt: skip
    runner.run(cfg, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert (table["state"] == "COMPLETE").all() and table["reused_from"].isna().all()
    assert len(table) == (4 if sampler == "grid" else 6)
    assert len({(r.embedding_dim, r.vocab_size) for r in table.itertuples()}) == len(table)
    assert table["pack"].notna().any()  # some of a round's trials shared a pack


def test_a_round_settles_its_over_budget_trials_and_packs_the_rest(tiny_overrides, tmp_path):
    cfg = compose_config([*tiny_overrides, "search.n_trials=6", "search.pack=4",
                          "search.max_params=8000"])  # fmt: skip
    runner.run(cfg, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    done, skipped = table[table["state"] == "COMPLETE"], table[table["state"] == "SKIPPED"]
    assert len(done) == 6 and (done["params_total"] <= 8000).all()  # skips do not count
    assert len(skipped) > 0 and (skipped["params_total"] > 8000).all()
    assert skipped["fail_reason"].str.contains("over budget").all()
    assert skipped["pack"].isna().all() and done["pack"].notna().any()


def test_seed_repeats_of_the_front_train_packed_with_the_numbers_they_get_alone(
    tiny_overrides, tmp_path, monkeypatch, exact
):
    """report.repeats with search.pack: the front trials of one seed train as one pack, and
    each repeat gets the figures it gets alone with that seed."""
    import statistics

    cfg = compose_config([*tiny_overrides, "search.n_trials=6", "report.repeats=2",
                          "report.top_k=6", "model.sparse=false", "search.pack=8",
                          "search.pack_padding=100"])  # fmt: skip
    packs = []
    real = TrialRunner._train_packed

    def spy(self, params_list, setups, on_epochs, wrap_model, seed, settle):
        packs.append((len(params_list), seed))
        return real(self, params_list, setups, on_epochs, wrap_model, seed, settle)

    monkeypatch.setattr(TrialRunner, "_train_packed", spy)
    table = runner.run(cfg, tmp_path / "out").table
    retrained = table[table["seeds"] == 3]
    repeat_packs = [(n, seed) for n, seed in packs if seed != cfg.seed]
    assert len(retrained) >= 2 and {seed for _, seed in repeat_packs} == {1, 2}
    assert sum(n for n, _ in repeat_packs) == 2 * len(retrained)  # every repeat in a pack
    monkeypatch.setattr(TrialRunner, "_train_packed", real)
    alone = TrialRunner(cfg, PreparedData.load(cfg.data, cfg.seed, torch.device("cpu")))
    for row in retrained.itertuples():
        params = {"embedding_dim": int(row.embedding_dim), "vocab_size": int(row.vocab_size)}
        values = [row.val_accuracy] + [alone.train(params, seed=s)["val_accuracy"] for s in (1, 2)]
        assert row.val_accuracy_mean == pytest.approx(statistics.fmean(values))
        assert row.val_accuracy_std == pytest.approx(statistics.stdev(values))


def test_search_pack_must_be_a_number_or_auto(tiny_overrides, tmp_path):
    from sweep.config import check_config

    with pytest.raises(ValueError, match=r"search\.pack=0"):
        check_config(compose_config([*tiny_overrides, "search.pack=0"]))
    for bad in ("0.5", "wide", "true"):
        with pytest.raises(ValueError, match=r"search\.pack_padding=.+ must be a number >= 1"):
            check_config(compose_config([*tiny_overrides, f"search.pack_padding={bad}"]))


def test_search_pack_padding_decides_which_widths_share_a_pack(tiny_overrides):
    trial_runner = runner_for(tiny_overrides, "model.sparse=false")
    setups = [trial_runner.setup(p) for p in PARAMS]  # widths 4, 9, 16, 32
    assert len(trial_runner.packs(setups)) > 1  # the default 1.5 splits them
    wide = runner_for(tiny_overrides, "model.sparse=false", "search.pack_padding=100")
    assert wide.packs([wide.setup(p) for p in PARAMS]) == [[0, 1, 2, 3]]
    exact = runner_for(tiny_overrides, "model.sparse=false", "search.pack_padding=1")
    assert exact.packs([exact.setup(p) for p in PARAMS]) == [[0], [1], [2], [3]]


@pytest.mark.slow
def test_kill_9_mid_pack_then_resume(tmp_path):
    """A pack killed mid-way leaves its trials FAILED as interrupted; the rerun asks new ones."""
    overrides = [*TINY, "data.synthetic.num_docs=3000", "train.epochs=40", "train.patience=40",
                 "search.n_trials=6", "search.pack=3"]  # fmt: skip
    args = [sys.executable, str(ROOT / "run_sweep.py"), *overrides, "hydra.run.dir=run"]
    name = default_study(overrides)
    journal = tmp_path / "studies" / name / "journal.log"
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def running(study):
        return study.get_trials(states=(optuna.trial.TrialState.RUNNING,))

    def a_pack_trains(study):
        return len(running(study)) == 3 and all("heartbeat" in t.user_attrs for t in running(study))

    study = watch_study(journal, name, a_pack_trains)
    assert study is not None, "never saw a pack of three running"
    time.sleep(1.0)  # inside the pack's training
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = [t.number for t in running(study)]
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=journal_storage(journal))
    for number in killed:
        trial = study.trials[number]
        assert trial.state == optuna.trial.TrialState.FAIL
        assert trial.user_attrs["fail_reason"].startswith("interrupted: its worker")
    assert study_module.count_finished(study) == 6
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def test_a_packs_training_time_leaves_out_what_settling_its_trials_takes(tiny_overrides):
    """timing.json's training_s: the study and the reports a trial is told to while its pack
    trains on (on_result) are not training time."""
    trial_runner = runner_for(tiny_overrides, "model.sparse=false", "train.epochs=2",
                              "search.pack_padding=100")  # fmt: skip
    started = time.perf_counter()
    results = trial_runner.train_pack(PARAMS, [None] * 4, [0, 1, 2, 3],
                                      on_result=lambda i, result: time.sleep(0.5))  # fmt: skip
    elapsed = time.perf_counter() - started
    assert len({r["pack"] for r in results}) == 1
    assert 0 < trial_runner.timing.training <= elapsed - 4 * 0.5
