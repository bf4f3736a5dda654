"""Packed trials: train several trials at once, on the same batches, in one step.

A sweep trains many small models on one data set, and a small model's step is mostly fixed cost
(Python, kernel launches, the optimizer call), not arithmetic. A pack trains N trials together
as one module (``sweep.models.pack.modules``: one table holding every trial's rows, the layers
stacked, grouped or block-diagonal per model): one loss (the sum of the trials' mean losses, so
each trial's gradient is its own), one backward and one optimizer step. Each trial keeps its own
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

Which trials share a pack: ``sweep.models.pack.grouping``. Packs are rebuilt at every epoch
from the trials still training, so a trial that stops costs nothing more. The epoch loop is the
lone trial's (``sweep.models.fit.fit_members``: the batch plan, the finite-loss check, the
evaluation, early stopping and the result), and so is the step loop
(``sweep.models.fit.run_batches``); a pack only steps its epoch its own way (``train_packed``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

from sweep.data.prepared import SplitTensors
from sweep.data.vocab import PAD
from sweep.models.fit import fit_members, run_batches
from sweep.models.kinds import kind_of
from sweep.models.pack.member import Member
from sweep.models.pack.modules import Packed
from sweep.models.pack.optim import PackedOptimizer

__all__ = ["fit_pack", "pack_epoch", "packed_ids", "packed_model", "train_packed"]


def packed_model(members: Sequence[Member]) -> Packed:
    """The packed form of the members' model (all of one kind: ``pack_key``)."""
    return kind_of(members[0].model).packed(members)


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
    epochs, batch size, bucketing, eval batch size; each member's optimizer holds its own lr),
    through the lone trial's epoch loop (``fit_members``): each ends with ``outcome``, its
    FitResult or the exception that ended it alone, and is passed to ``on_done`` as soon as it
    ends, while the others train on. Each epoch is ``train_packed``."""
    fit_members(members, train_packed, epochs=train_cfg.epochs, batch_size=train_cfg.batch_size,
                eval_batch_size=train_cfg.eval_batch_size, bucket=train_cfg.bucket, seed=seed,
                on_done=on_done)  # fmt: skip


def train_packed(active: list[Member], train: SplitTensors, batches) -> list[float]:
    """One epoch of the members still training, as one pack (``train_together``); each
    member's summed loss.

    A trial whose epoch loss is not finite reruns that epoch alone, from its state at the
    epoch's start (its own model and optimizer: the pack's epoch is not stored into them), on
    the same batches and random stream: one that really diverged fails alone with its reason;
    one that a diverging neighbour poisoned (a block-diagonal layer's 0 x NaN: ``PackedRNN``)
    goes on with the numbers it gets alone."""
    streams = [m.rng.get_state() if m.rng is not None else None for m in active]
    t0 = time.perf_counter()
    losses = train_together(active, train, batches)
    seconds = time.perf_counter() - t0
    for i, (member, stream) in enumerate(zip(active, streams, strict=True)):
        t0 = time.perf_counter()
        if not math.isfinite(losses[i]) and len(active) > 1:
            if stream is not None:
                member.rng.set_state(stream)
            (losses[i],) = train_together([member], train, batches)
        member.work.step_seconds += seconds + time.perf_counter() - t0
        member.work.count_epoch(train)
    return losses


def train_together(members: list[Member], train: SplitTensors, batches) -> list[float]:
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
    """One pass of the pack over ``batches`` (``run_batches``, the lone trial's step loop): per
    step one forward, one backward (the sum of the trials' mean losses: disjoint parameters, so
    each trial gets its own gradient) and one Adam step. Returns each trial's summed loss, on
    the device: no host sync inside the loop."""
    size = ids.shape[0]
    packed.train()

    def batch_loss(host_idx, idx, width):
        logits = packed(ids[:, idx, :width], train.lengths[host_idx])  # (N, batch, classes)
        labels = train.labels[idx].repeat(size)
        loss = F.cross_entropy(logits.flatten(0, 1), labels, reduction="none")
        per_trial = loss.view(size, -1).mean(dim=1)
        # A trial whose loss is not finite sends no gradient: through a block-diagonal layer
        # its NaN would reach the others' (0 x NaN). It fails (or reruns) after the epoch.
        return torch.where(torch.isfinite(per_trial), per_trial, 0.0).sum(), per_trial

    return run_batches(batches, ids.device, optimizer, batch_loss, shape=(size,))
