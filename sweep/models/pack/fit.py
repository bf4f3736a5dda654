"""Packed trials: train several trials at once, on the same batches, in one step.

A sweep trains many small models on one data set, and a small model's step is mostly fixed cost
(Python, kernel launches, the optimizer call), not arithmetic. A pack trains N trials together
as one module (``sweep.models.pack.modules``: one table holding every trial's rows, the layers stacked,
grouped or block-diagonal per model): one loss (the sum of the trials' mean losses, so each
trial's gradient is its own), one backward and one optimizer step. Each trial keeps its own
embedding_dim, cutoff (its own cut of the shared batch), hash buckets, learning rate, dropout
masks (its own random stream), early stopping, pruning and failure.

Why a trial's numbers are the ones it gets alone: it is built alone (same seed, same init) and
copied in; every trial of a pack shares the batch plan a lone trial of that seed makes; its
parameters are disjoint from the others' (padding and other trials' blocks get exactly zero
gradient, so Adam leaves them at zero); Adam is element-wise with the same step count; a
trial's dropout masks come from a generator holding the random state it has alone after its
init, drawn in the shapes and order it draws them alone; and after every epoch the pack is
unpacked into each trial's own model, which is evaluated, early-stopped and pruned exactly as
alone. Summation order inside the batched kernels may differ from a lone trial's, and the fused
Adam kernel rounds an element by where it sits in its tensor (measured: one CNN step
bit-identical, a difference of 1e-9 from the third), so figures agree to float rounding, not
bit for bit: over a long training the rounding can move an early-stopping decision, as another
thread count would.

Trials that cannot share a pack train alone, so nothing is refused: a model off the devices
where its packing pays (``PACKABLE``), a sparse table, a bag with dropout, a factorized table,
an RNN with dropout between layers, other training settings (batch size, epochs; a learning
rate of its own packs). Packs are rebuilt at every epoch from the trials still training, so a
trial that stops costs nothing more.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from sweep.common.digest import json_digest
from sweep.data.prepared import SplitTensors
from sweep.data.vocab import PAD
from sweep.models.fit import EarlyStopping, Work, plan_batches
from sweep.models.kinds import BY_TARGET, kind_of
from sweep.models.optim import FusedAdam, Optimizers, adam_step
from sweep.models.pack.modules import Packed

__all__ = ["Member", "PackedOptimizer", "fit_pack", "pack_key", "packed_model", "split_by_width"]

log = logging.getLogger(__name__)

# The config targets whose trials pack, and the devices where they do (None: any; the reasons:
# sweep.models.kinds). Elsewhere a trial of that model trains alone.
PACKABLE: dict[str, frozenset[str] | None] = {
    target: kind.pack_devices for target, kind in BY_TARGET.items()
}


def pack_key(trial_cfg: DictConfig, sparse: bool | None = None, device=None) -> str | None:
    """Trials with equal keys may share a pack; None: this trial trains alone.

    Packable: the models of ``PACKABLE`` on their devices (``device``: where the trials train;
    default CPU), with a dense table (``sparse``: the trial's resolved ``model.sparse``) and
    without a factorized table; the bag without dropout (its masks would come from the pack's
    stream), the CNN, the RNN and the Transformer with any (each trial draws its masks from its
    own generator, as alone), but not the RNN's dropout between layers (drawn inside the
    recurrent kernel). The key holds the rest of the model config and the training config
    but the learning rate (batches and epochs must be shared; each trial keeps its own lr).
    """
    model = OmegaConf.to_container(trial_cfg.model, resolve=True)
    target = model.get("_target_")
    if target not in PACKABLE or sparse:
        # Sparse tables (above model.sparse's row threshold) train alone: there the lone
        # trial's fused count-matrix mean is faster than a packed sparse embedding_bag.
        return None
    devices = PACKABLE[target]
    if devices is not None and torch.device(device or "cpu").type not in devices:
        return None
    if model.get("factorized_dim"):
        return None
    dropout = float(model.get("dropout") or 0)
    kind = BY_TARGET[target].name
    if kind == "bag" and dropout > 0:
        return None
    if kind == "rnn" and dropout > 0 and model.get("num_layers", 1) > 1:
        return None
    shared = {k: v for k, v in model.items() if k not in ("num_embeddings", "embedding_dim")}
    # Each trial keeps its own learning rate (PackedOptimizer); the rest is shared.
    train = {k: v for k, v in OmegaConf.to_container(trial_cfg.train).items() if k != "lr"}
    return json_digest({"model": shared, "train": train}, 16)


def split_by_width(sizes: list[tuple[int, int, int]], max_padding: float):
    """Packs of similar width from (index, rows, width) of trials that may share one: sorted by
    width, a pack grows while its table padded to its widest trial stays within ``max_padding``
    times the trials' own tables (rows x width summed; ``search.pack_padding``)."""
    packs: list[list[int]] = []
    rows_sum = real = 0
    for index, rows, width in sorted(sizes, key=lambda s: (s[2], s[0])):
        if packs and (rows_sum + rows) * width > max_padding * (real + rows * width):
            packs.append([])
            rows_sum = real = 0
        if not packs:
            packs.append([])
        packs[-1].append(index)
        rows_sum, real = rows_sum + rows, real + rows * width
    return packs


@dataclass
class Member:
    """One trial in a pack: its own model and optimizer (the trial alone), views and progress."""

    model: nn.Module  # a TextClassifier of a PACKABLE kind
    optimizers: Optimizers
    views: dict[str, SplitTensors]
    on_epoch: Callable[[int, float], None] | None
    stopping: EarlyStopping
    work: Work = field(default_factory=Work)
    done: bool = False
    outcome: Any = None  # FitResult, or the exception that ended the trial
    # Dropout masks: drawn from this generator, which holds the global random state the
    # trial alone would have after building its model, so the masks are the lone trial's.
    rng: torch.Generator | None = None

    @property
    def table(self) -> nn.Parameter:
        return self.model.frontend.embed.weight

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.model.head if isinstance(m, nn.Linear)]


def packed_model(members: Sequence[Member]) -> Packed:
    """The packed form of the members' model (all of one kind: ``pack_key``)."""
    return kind_of(members[0].model).packed(members)


def adam_state(member: Member, param: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(exp_avg, exp_avg_sq, steps taken) of ``param`` in the member's own FusedAdam (a model
    with a dense table has that one optimizer)."""
    (optimizer,) = member.optimizers.optimizers
    i = next(i for i, p in enumerate(optimizer.params) if p is param)
    return optimizer.exp_avg[i], optimizer.exp_avg_sq[i], int(optimizer.steps[i])


def trial_generator(device: torch.device, seed: int) -> torch.Generator:
    """The random stream a trial's dropout draws from in a pack: on a CPU the global state as
    the trial alone has it right after building its model (call this then), so its masks are
    the lone trial's; on CUDA, whose dropout kernel draws differently, a generator seeded with
    the trial's seed (the same distribution, not the same masks)."""
    if torch.device(device).type == "cpu":
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        return generator
    return torch.Generator(device=device).manual_seed(seed)


class PackedOptimizer:
    """The pack's Adam (FusedAdam, as each trial alone uses for its dense tensors), built from
    and written back to each trial's own Adam state. Trials of one pack may have their own
    learning rates (a searched ``train.lr``): then each step updates each learning rate's trials
    by their slices of the packed tensors, one fused call per distinct rate."""

    def __init__(self, packed: Packed, members: Sequence[Member]):
        self.packed, self.members = packed, members
        rates = [m.optimizers.optimizers[0].lr for m in members]
        self.adam = FusedAdam(list(packed.parameters()), lr=rates[0])
        self.steps = 0
        with torch.no_grad():
            for piece in packed.pieces(members):
                m, v, self.steps = adam_state(piece.member, piece.own)  # equal for all
                exp_avg, exp_avg_sq = self.moments(piece.packed)
                exp_avg[piece.where] = piece.own_part(m)
                exp_avg_sq[piece.where] = piece.own_part(v)
        for counter in self.adam.steps:
            counter.fill_(self.steps)
        # {lr: [(packed tensor index, the trial's leading slice)]}; None: one rate for all.
        # A leading slice (rows of the table, the trial's filters, gates or stacked layer) is
        # whole rows, so contiguous; its other columns (padding; in a block-diagonal layer the
        # other trials' blocks) have zero gradient and stay zero.
        self.by_rate: dict[float, list] | None = None
        if len(set(rates)) > 1:
            self.by_rate = {}
            index = {id(p): i for i, p in enumerate(self.adam.params)}
            rate_of = {id(m): rate for m, rate in zip(members, rates, strict=True)}
            seen = set()
            for piece in packed.pieces(members):
                rows = piece.where[0]
                key = (index[id(piece.packed)], rows if isinstance(rows, int) else rows.start)
                if key not in seen:  # a row block may hold several parts of one tensor
                    seen.add(key)
                    self.by_rate.setdefault(rate_of[id(piece.member)], []).append((key[0], rows))

    def moments(self, target: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor]:
        i = next(i for i, p in enumerate(self.adam.params) if p is target)
        return self.adam.exp_avg[i], self.adam.exp_avg_sq[i]

    def zero_grad(self) -> None:
        self.adam.zero_grad()

    @torch.no_grad()
    def step(self) -> None:
        if self.by_rate is None:
            self.adam.step()
        else:
            adam = self.adam
            torch._foreach_add_(adam.steps, 1.0)
            for rate, slices in self.by_rate.items():
                adam_step(
                    [adam.params[i][w] for i, w in slices],
                    [adam.params[i].grad[w] for i, w in slices],
                    [adam.exp_avg[i][w] for i, w in slices],
                    [adam.exp_avg_sq[i][w] for i, w in slices],
                    [adam.steps[i] for i, _ in slices],
                    lr=rate, beta1=adam.betas[0], beta2=adam.betas[1], eps=adam.eps,
                )  # fmt: skip
        self.steps += 1

    @torch.no_grad()
    def store(self, only: Sequence[Member] | None = None) -> None:
        """Write the moments and the step count back into each member's own optimizer (``only``:
        into these members')."""
        only = self.members if only is None else only
        for piece in self.packed.pieces(self.members):
            if not any(piece.member is m for m in only):
                continue
            m, v, _ = adam_state(piece.member, piece.own)
            exp_avg, exp_avg_sq = self.moments(piece.packed)
            for own, packed in ((m, exp_avg), (v, exp_avg_sq)):
                packed = packed[piece.where]
                own[piece.part].copy_(packed.t() if piece.transposed else packed)
        for member in only:
            for counter in member.optimizers.optimizers[0].steps:
                counter.fill_(self.steps)


def packed_ids(members: Sequence[Member], packed: Packed, split: str = "train") -> torch.Tensor:
    """(N, docs, length): each member's cut of the split, moved to its rows; padding to row 0."""
    out = []
    for member, offset in zip(members, packed.offsets, strict=True):
        ids = member.views[split].ids.long()
        out.append(torch.where(ids == PAD, torch.zeros_like(ids), ids + offset))
    return torch.stack(out)


def fit_pack(
    members: list[Member],
    train_cfg,
    seed: int,
    on_done: Callable[[Member], None] | None = None,
) -> None:
    """Train the members together with the shared training settings ``train_cfg`` (``cfg.train``:
    epochs, batch size, bucketing, eval batch size; each member's optimizer holds its own lr);
    each ends with ``outcome``: its FitResult, or the exception that ended it alone (a non-finite
    loss, a pruning decision, any error of its callback), and is passed to ``on_done`` as soon
    as it ends, while the others train on.

    A trial whose epoch loss is not finite reruns that epoch alone, from its state at the
    epoch's start (its own model and optimizer: the pack's epoch is not stored into them), on
    the same batches and random stream: one that really diverged fails alone with its reason;
    one that a diverging neighbour poisoned (a block-diagonal layer's 0 x NaN: ``PackedRNN``)
    goes on with the numbers it gets alone."""
    train = members[0].views["train"]
    generator = torch.Generator().manual_seed(seed)  # the batch plan every lone trial makes
    for epoch in range(1, train_cfg.epochs + 1):
        active = [m for m in members if not m.done]
        if not active:
            break
        batches = plan_batches(train.lengths, train_cfg.batch_size, generator, train_cfg.bucket)
        streams = [m.rng.get_state() if m.rng is not None else None for m in active]
        t0 = time.perf_counter()
        losses = train_epoch(active, train, batches)
        seconds = time.perf_counter() - t0
        for i, (member, stream) in enumerate(zip(active, streams, strict=True)):
            t0 = time.perf_counter()
            if not math.isfinite(losses[i]) and len(active) > 1:
                if stream is not None:
                    member.rng.set_state(stream)
                (losses[i],) = train_epoch([member], train, batches)
            member.work.step_seconds += seconds + time.perf_counter() - t0
            member.work.train_tokens += int(train.lengths.sum())
            member.work.train_examples += len(train.lengths)
        for member, loss_sum in zip(active, losses, strict=True):
            end_epoch(member, epoch, loss_sum, train_cfg.eval_batch_size)
            if member.done and on_done is not None:
                on_done(member)
    for member in members:
        if not member.done:
            finish(member, train_cfg.eval_batch_size)
            if on_done is not None:
                on_done(member)


def train_epoch(members: list[Member], train: SplitTensors, batches) -> list[float]:
    """One epoch of the members as one pack; each member's summed loss. Only the members whose
    loss is finite get the epoch's state (weights and Adam moments) stored back."""
    packed = packed_model(members)
    packed.load(members)
    optimizer = PackedOptimizer(packed, members)
    losses = pack_epoch(packed, optimizer, packed_ids(members, packed), train, batches).tolist()
    finite = [m for m, loss in zip(members, losses, strict=True) if math.isfinite(loss)]
    packed.store(members, finite)
    optimizer.store(finite)
    return losses


def pack_epoch(packed: Packed, optimizer, ids: torch.Tensor, train: SplitTensors, batches):
    """One pass of the pack over ``batches``: per step one forward, one backward (the sum of
    the trials' mean losses: disjoint parameters, so each trial gets its own gradient) and one
    Adam step. Returns each trial's summed loss, on the device: no host sync inside the loop."""
    losses = torch.zeros(ids.shape[0], device=ids.device)
    packed.train()
    for host_idx, width in batches:
        idx = host_idx.to(ids.device, non_blocking=True)
        optimizer.zero_grad()
        logits = packed(ids[:, idx, :width], train.lengths[host_idx])  # (N, batch, classes)
        labels = train.labels[idx].repeat(ids.shape[0])
        loss = F.cross_entropy(logits.flatten(0, 1), labels, reduction="none")
        per_trial = loss.view(ids.shape[0], -1).mean(dim=1)
        # A trial whose loss is not finite sends no gradient: through a block-diagonal layer
        # its NaN would reach the others' (0 x NaN). It fails (or reruns) after the epoch.
        torch.where(torch.isfinite(per_trial), per_trial, 0.0).sum().backward()
        optimizer.step()
        losses += per_trial.detach()
    return losses


def end_epoch(member: Member, epoch: int, loss_sum: float, eval_batch_size: int) -> None:
    """What a lone trial does after an epoch (``train.fit``): check the loss, evaluate, then
    its early stopping (pruning, patience); an exception ends this trial, not the pack."""
    try:
        if not torch.isfinite(torch.tensor(loss_sum)):
            raise FloatingPointError(f"training loss became {loss_sum} in epoch {epoch}")
        val_acc, _ = member.work.evaluate(member.model, member.views["validation"], eval_batch_size)
        if member.stopping.after_epoch(member.model, epoch, val_acc, member.on_epoch):
            finish(member, eval_batch_size)
    except Exception as error:  # optuna.TrialPruned too
        member.done, member.outcome = True, error


def finish(member: Member, eval_batch_size: int) -> None:
    views = member.views
    member.outcome = member.stopping.result(member.model, views["validation"], views["test"],
                                            member.work, eval_batch_size)  # fmt: skip
    member.done = True
