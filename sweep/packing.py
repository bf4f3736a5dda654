"""Packed trials: train several trials at once, on the same batches, in one step.

A sweep trains many small models on one data set, and a small model's step is mostly fixed cost
(Python, kernel launches, the optimizer call), not arithmetic. A pack trains N trials together:
one table holding every trial's rows (row offsets; widths padded to the widest trial with
columns held at zero) and the layers stacked per trial: for the bag model batched matrix
products (``PackedBag``), for the CNN grouped convolutions, one group per trial (``PackedCNN``).
One loss (the sum of the trials' mean losses, so each trial's gradient is its own), one backward
and one optimizer step. Each trial keeps its own embedding_dim, cutoff (its own cut of the shared
batch), hash buckets, dropout masks (its own random stream), early stopping, pruning and failure.

Why a trial's numbers are the ones it gets alone: it is built alone (same seed, same init) and
copied in; every trial of a pack shares the batch plan a lone trial of that seed makes; its
parameters are disjoint from the others' (the padded columns and channels get exactly zero
gradient, so Adam leaves them at zero); Adam is element-wise with the same step count; a CNN
trial's dropout masks come from a generator holding the random state it has alone after its
init; and after every epoch the pack is unpacked into each trial's own model, which is
evaluated, early-stopped and pruned exactly as alone. Summation order inside the batched kernels
may differ from a lone trial's, and the fused Adam kernel rounds an element by where it sits in
its tensor (measured: one CNN step bit-identical, a difference of 1e-9 from the third), so
figures agree to float rounding, not bit for bit: over a long training the rounding can move an
early-stopping decision, as another thread count would.

Trials that cannot share a pack train alone, so nothing is refused: the RNN and the Transformer,
the CNN off CUDA, a sparse table, a bag with dropout, a factorized table, other training
settings (batch size, epochs; a learning rate of its own packs). Packs are rebuilt at every
epoch from the trials still training, so a trial that stops costs nothing more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from sweep.digest import json_digest
from sweep.models import BagClassifier, CNNClassifier, max_over_windows
from sweep.optim import FusedAdam, Optimizers, adam_step
from sweep.train import EarlyStopping, SplitTensors, Work, plan_batches
from sweep.vocab import PAD

log = logging.getLogger(__name__)

PACKABLE = ("sweep.models.BagClassifier", "sweep.models.CNNClassifier")
# Where CNN trials pack. Not on a CPU: there a CNN step is arithmetic, and packing measured
# 0.52x (grouped convolutions) and 0.75-0.96x (each trial's own) the lone trials' speed on TREC
# (BENCHMARKS.md "Packed trials"); on CUDA a small step is launch-bound (unmeasured here).
CNN_DEVICES = {"cuda"}


def pack_key(trial_cfg: DictConfig, sparse: bool | None = None, device=None) -> str | None:
    """Trials with equal keys may share a pack; None: this trial trains alone.

    Packable: the bag model and, on the devices of ``CNN_DEVICES`` (``device``: where the
    trials train; default CPU), the CNN, with a dense table (``sparse``: the trial's resolved
    ``model.sparse``) and without a factorized table; the bag without dropout (its masks would
    come from the pack's stream), the CNN with any (each trial draws its masks from its own
    generator, as alone: ``PackedCNN``). The key holds the rest of the model config and the
    training config but the learning rate (batches and epochs must be shared; each trial keeps
    its own lr).
    """
    model = OmegaConf.to_container(trial_cfg.model, resolve=True)
    target = model.get("_target_")
    if (
        target == "sweep.models.CNNClassifier"
        and torch.device(device or "cpu").type not in CNN_DEVICES
    ):
        return None
    if target not in PACKABLE or sparse:
        # Sparse tables (above model.sparse's row threshold) train alone: there the lone
        # trial's fused count-matrix mean is faster than a packed sparse embedding_bag.
        return None
    if model.get("factorized_dim"):
        return None
    if target == "sweep.models.BagClassifier" and float(model.get("dropout") or 0) > 0:
        return None
    shared = {k: v for k, v in model.items() if k not in ("num_embeddings", "embedding_dim")}
    # Each trial keeps its own learning rate (PackedOptimizer); the rest is shared.
    train = {k: v for k, v in OmegaConf.to_container(trial_cfg.train).items() if k != "lr"}
    return json_digest({"model": shared, "train": train}, 16)


# A pack pads every trial's table to its widest one: split a group where that would cost more
# than this many times the trials' own tables (rows x width summed).
MAX_PADDING = 1.5


def split_by_width(sizes: list[tuple[int, int, int]], max_padding: float | None = None):
    """Packs of similar width from (index, rows, width) of trials that may share one: sorted by
    width, a pack grows while its padded table stays within ``max_padding`` of the real ones."""
    max_padding = MAX_PADDING if max_padding is None else max_padding
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

    model: BagClassifier | CNNClassifier
    optimizers: Optimizers
    views: dict[str, SplitTensors]
    on_epoch: Callable[[int, float], None] | None
    stopping: EarlyStopping
    work: Work = field(default_factory=Work)
    done: bool = False
    outcome: Any = None  # FitResult, or the exception that ended the trial
    # Dropout masks (CNN): drawn from this generator, which holds the global random state the
    # trial alone would have after building its model, so the masks are the lone trial's.
    rng: torch.Generator | None = None

    @property
    def table(self) -> nn.Parameter:
        return self.model.frontend.embed.weight

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.model.head if isinstance(m, nn.Linear)]


def adam_state(member: Member, param: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(exp_avg, exp_avg_sq, steps taken) of ``param`` in the member's own FusedAdam (a model
    with a dense table has that one optimizer)."""
    (optimizer,) = member.optimizers.optimizers
    i = next(i for i, p in enumerate(optimizer.params) if p is param)
    return optimizer.exp_avg[i], optimizer.exp_avg_sq[i], int(optimizer.steps[i])


class Packed(nn.Module):
    """N models as one (subclasses: the layers): a shared table (row 0 the common padding row,
    then each trial's rows at its offset, columns past its width zero) and ``pieces``: how each
    trial's own tensors sit in the packed ones, for load, store and the optimizer."""

    def __init__(self, members: Sequence[Member]):
        super().__init__()
        widths = [m.table.shape[1] for m in members]
        rows = [m.table.shape[0] for m in members]
        self.width = max(widths)
        self.offsets = [1 + sum(rows[:i]) for i in range(len(members))]
        self.device = members[0].table.device
        self.table = nn.Parameter(torch.zeros(1 + sum(rows), self.width, device=self.device))

    def table_pieces(self, members: Sequence[Member]):
        for i, member in enumerate(members):
            rows, width = member.table.shape
            where = (slice(self.offsets[i], self.offsets[i] + rows), slice(0, width))
            yield member, self.table, where, member.table, False

    def pieces(self, members: Sequence[Member]):
        """(member, packed tensor, the member's slice of it, its own tensor, transposed?)."""
        raise NotImplementedError

    @torch.no_grad()
    def load(self, members: Sequence[Member]) -> None:
        for _, packed, where, own, transposed in self.pieces(members):
            packed[where] = own.t() if transposed else own

    @torch.no_grad()
    def store(self, members: Sequence[Member]) -> None:
        for _, packed, where, own, transposed in self.pieces(members):
            own.copy_(packed[where].t() if transposed else packed[where])


class PackedBag(Packed):
    """N bag models: the shared table and stacked layers (``weights[i]``: (N, in, out),
    ``biases[i]``: (N, out)) applied with batched matrix products."""

    def __init__(self, members: Sequence[Member]):
        super().__init__(members)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in range(len(members[0].linears)):
            n_in = self.width if layer == 0 else members[0].linears[layer].in_features
            n_out = members[0].linears[layer].out_features
            self.weights.append(
                nn.Parameter(torch.zeros(len(members), n_in, n_out, device=self.device))
            )
            self.biases.append(nn.Parameter(torch.zeros(len(members), n_out, device=self.device)))

    def pieces(self, members: Sequence[Member]):
        yield from self.table_pieces(members)
        for i, member in enumerate(members):
            for layer, linear in enumerate(member.linears):
                where = (i, slice(0, linear.in_features))
                yield member, self.weights[layer], where, linear.weight, True
                yield member, self.biases[layer], (i,), linear.bias, False

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``: (N, batch, width) packed ids (offsets applied, padding 0) -> (N, batch, C)."""
        n, batch, width = ids.shape
        x = F.embedding_bag(ids.reshape(n * batch, width), self.table, mode="mean",
                            padding_idx=PAD).view(n, batch, self.width)  # fmt: skip
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if layer:
                x = torch.relu(x)
            x = torch.baddbmm(bias[:, None, :], x, weight)
        return x


class PackedCNN(Packed):
    """N CNNs (``sweep.models.CNNClassifier``) as one: the shared table; per kernel size one
    grouped convolution (groups = N: trial i's filters see only its own channels; widths padded
    to the widest with zero weights, which get zero gradient); the max over each document's
    windows; each trial's dropout mask from its own generator (``Member.rng``), drawn as alone;
    the output layers stacked (``out_weight``: (N, classes, features)) in one batched product.
    One grouped convolution replaces N small ones: a GPU launches one kernel, not N."""

    def __init__(self, members: Sequence[Member]):
        super().__init__(members)
        first = members[0].model
        n, filters = len(members), first.convs[0].out_channels
        self.kernel_sizes, self.filters = first.kernel_sizes, filters
        self.p = first.dropout.p
        self.rngs = [m.rng for m in members]
        self.conv_weights = nn.ParameterList(
            nn.Parameter(torch.zeros(n * filters, self.width, k, device=self.device))
            for k in self.kernel_sizes
        )
        self.conv_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n * filters, device=self.device)) for _ in self.kernel_sizes
        )
        out = first.out
        self.out_weight = nn.Parameter(torch.zeros(n, out.out_features, out.in_features,
                                                   device=self.device))  # fmt: skip
        self.out_bias = nn.Parameter(torch.zeros(n, out.out_features, device=self.device))

    def pieces(self, members: Sequence[Member]):
        yield from self.table_pieces(members)
        f = self.filters
        for i, member in enumerate(members):
            rows = slice(i * f, (i + 1) * f)
            for layer, conv in enumerate(member.model.convs):
                where = (rows, slice(0, conv.in_channels))
                yield member, self.conv_weights[layer], where, conv.weight, False
                yield member, self.conv_biases[layer], (rows,), conv.bias, False
            yield member, self.out_weight, (i,), member.model.out.weight, False
            yield member, self.out_bias, (i,), member.model.out.bias, False

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``: (N, batch, length) packed ids -> (N, batch, C); see ``CNNClassifier``."""
        n, batch, length = ids.shape
        lengths = (ids[0] != PAD).sum(dim=1).clamp(min=1)  # the same in every trial's cut
        x = F.embedding(ids, self.table, padding_idx=PAD)  # (N, batch, length, width)
        x = x.permute(1, 0, 3, 2).reshape(batch, n * self.width, length)
        pooled = [
            max_over_windows(F.conv1d(x, w, b, padding=k - 1, groups=n), lengths, k).view(
                batch, n, -1
            )
            for k, w, b in zip(self.kernel_sizes, self.conv_weights, self.conv_biases, strict=True)
        ]
        z = torch.cat(pooled, dim=2).transpose(0, 1)  # (N, batch, features)
        if self.training and self.p > 0:
            z = z * torch.stack([_mask(z[i], self.p, rng) for i, rng in enumerate(self.rngs)])
        return torch.baddbmm(self.out_bias[:, None, :], z, self.out_weight.transpose(1, 2))


def _mask(z: torch.Tensor, p: float, rng: torch.Generator) -> torch.Tensor:
    """A dropout mask drawn as ``F.dropout`` draws it (bernoulli of keep, then / keep)."""
    keep = 1.0 - p
    return torch.empty_like(z).bernoulli_(keep, generator=rng).div_(keep)


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


def packed_model(members: Sequence[Member]) -> Packed:
    """The packed form of the members' model (all of one kind: ``pack_key``)."""
    if isinstance(members[0].model, CNNClassifier):
        return PackedCNN(members)
    return PackedBag(members)


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
            for member, target, where, own, transposed in packed.pieces(members):
                m, v, self.steps = adam_state(member, own)  # equal for every tensor and trial
                exp_avg, exp_avg_sq = self.moments(target)
                exp_avg[where] = m.t() if transposed else m
                exp_avg_sq[where] = v.t() if transposed else v
        for counter in self.adam.steps:
            counter.fill_(self.steps)
        # {lr: [(packed tensor index, the trial's leading slice)]}; None: one rate for all.
        # A leading slice (rows of the table, the trial's filters or stacked layer) is whole
        # rows, so contiguous; its padded columns have zero gradient and stay zero.
        self.by_rate: dict[float, list] | None = None
        if len(set(rates)) > 1:
            self.by_rate = {}
            index = {id(p): i for i, p in enumerate(self.adam.params)}
            rate_of = {id(m): rate for m, rate in zip(members, rates, strict=True)}
            for member, target, where, _, _ in packed.pieces(members):
                self.by_rate.setdefault(rate_of[id(member)], []).append(
                    (index[id(target)], where[0])
                )

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
    def store(self) -> None:
        """Write the moments and the step count back into each member's own optimizer."""
        for member, target, where, own, transposed in self.packed.pieces(self.members):
            m, v, _ = adam_state(member, own)
            exp_avg, exp_avg_sq = self.moments(target)
            m.copy_(exp_avg[where].t() if transposed else exp_avg[where])
            v.copy_(exp_avg_sq[where].t() if transposed else exp_avg_sq[where])
        for member in self.members:
            for counter in member.optimizers.optimizers[0].steps:
                counter.fill_(self.steps)


def packed_ids(members: Sequence[Member], packed: Packed, split: str = "train") -> torch.Tensor:
    """(N, docs, length): each member's cut of the split, moved to its rows; padding to row 0."""
    out = []
    for member, offset in zip(members, packed.offsets, strict=True):
        ids = member.views[split].ids.long()
        out.append(torch.where(ids == PAD, torch.zeros_like(ids), ids + offset))
    return torch.stack(out)


def fit_pack(members: list[Member], train_cfg, seed: int) -> None:
    """Train the members together with the shared training settings ``train_cfg`` (``cfg.train``:
    epochs, batch size, bucketing, eval batch size; each member's optimizer holds its own lr);
    each ends with ``outcome``: its
    FitResult, or the exception that ended it alone (a non-finite loss, a pruning decision, any
    error of its callback)."""
    train = members[0].views["train"]
    device = train.ids.device
    generator = torch.Generator().manual_seed(seed)  # the batch plan every lone trial makes
    for epoch in range(1, train_cfg.epochs + 1):
        active = [m for m in members if not m.done]
        if not active:
            break
        t0 = time.perf_counter()
        packed = packed_model(active)
        packed.load(active)
        optimizer = PackedOptimizer(packed, active)
        batches = plan_batches(train.lengths, train_cfg.batch_size, generator, train_cfg.bucket)
        losses = pack_epoch(packed, optimizer, packed_ids(active, packed), train, batches)
        for member in active:
            member.work.train_tokens += int(train.lengths.sum())
            member.work.train_examples += len(train.lengths)
        if device.type == "cuda":
            torch.cuda.synchronize()
        packed.store(active)
        optimizer.store()
        seconds = time.perf_counter() - t0
        for member, loss_sum in zip(active, losses.tolist(), strict=True):
            member.work.step_seconds += seconds
            end_epoch(member, epoch, loss_sum, train_cfg.eval_batch_size)
    for member in members:
        if not member.done:
            finish(member, train_cfg.eval_batch_size)


def pack_epoch(packed: Packed, optimizer, ids: torch.Tensor, train: SplitTensors, batches):
    """One pass of the pack over ``batches``: per step one forward, one backward (the sum of
    the trials' mean losses: disjoint parameters, so each trial gets its own gradient) and one
    Adam step. Returns each trial's summed loss, on the device: no host sync inside the loop."""
    losses = torch.zeros(ids.shape[0], device=ids.device)
    packed.train()
    for idx, width in batches:
        idx = idx.to(ids.device, non_blocking=True)
        optimizer.zero_grad()
        logits = packed(ids[:, idx, :width])  # (N, batch, classes)
        labels = train.labels[idx].repeat(ids.shape[0])
        loss = F.cross_entropy(logits.flatten(0, 1), labels, reduction="none")
        per_trial = loss.view(ids.shape[0], -1).mean(dim=1)
        per_trial.sum().backward()
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
