"""Stage 4, fit: train models from pre-encoded tensors, early-stopping on validation accuracy.

One epoch loop (``fit_members``) trains every trial: a lone trial is a loop of one member
(``fit``), a pack's members train together (``sweep.models.pack.fit``); only how one epoch of
the members is stepped differs (``train_alone``, or the pack's). The batch plan, the finite-loss
check, the evaluation, early stopping and the result are the loop's, the same for both.

No per-example Python work: a batch is one index op into an id matrix that already sits on the
device. Batches are bucketed by length (documents of similar length share a batch, trimmed to the
longest), so padding costs little. Loss finiteness is checked once per epoch, not per step, to
avoid a host-device synchronisation on every step.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sweep.data.prepared import SplitTensors
from sweep.models.optim import Optimizers

log = logging.getLogger(__name__)

# (host indices, the same on the device, width) -> (loss to backpropagate, loss to record).
BatchLoss = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Work:
    """Time and work of a fit, split into optimisation steps and evaluation (throughputs)."""

    step_seconds: float = 0.0  # wall time of the optimisation steps alone
    eval_seconds: float = 0.0
    train_tokens: int = 0  # tokens seen by optimisation steps, all epochs
    train_examples: int = 0  # documents seen by optimisation steps, all epochs
    eval_tokens: int = 0
    eval_examples: int = 0

    def count_epoch(self, train: SplitTensors) -> None:
        """An epoch's optimisation work: every training document once (``plan_batches``)."""
        self.train_tokens += train.tokens
        self.train_examples += len(train.lengths)

    def evaluate(self, model, split: SplitTensors, batch_size: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        result = evaluate(model, split, batch_size)
        self.eval_seconds += time.perf_counter() - t0
        self.eval_tokens += split.tokens
        self.eval_examples += len(split.lengths)
        return result


@dataclass
class FitResult:
    """What one training run measured. Accuracies are in percent."""

    val_accuracy: float
    val_loss: float
    test_accuracy: float
    epochs: int
    best_epoch: int
    train_seconds: float  # wall time of the whole fit, evaluation included
    work: Work
    history: list[float] = field(default_factory=list)  # validation accuracy per epoch

    def figures(self) -> dict[str, float | int | list[float]]:
        """The trial's measured columns (``sweep.schema``, known="trained") and its history."""
        work = self.work
        return {
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "val_loss": self.val_loss,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
            "tokens_per_second": work.train_tokens / max(work.step_seconds, 1e-9),
            "examples_per_second": work.train_examples / max(work.step_seconds, 1e-9),
            "eval_tokens_per_second": work.eval_tokens / max(work.eval_seconds, 1e-9),
            "eval_examples_per_second": work.eval_examples / max(work.eval_seconds, 1e-9),
            "val_history": self.history,
        }


def plan_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator, bucket: bool = True
) -> list[tuple[torch.Tensor, int]]:
    """Shuffle documents into batches; return (indices, width) per batch, on the host.

    With ``bucket``, documents are sorted by length inside windows of 50 batches, so a batch holds
    similar lengths and is trimmed to its longest; the batch order is then shuffled.
    """
    order = torch.randperm(len(lengths), generator=generator)
    if bucket:
        window = batch_size * 50
        chunks = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunks.append(chunk[torch.argsort(lengths[chunk], stable=True)])
        order = torch.cat(chunks)
    batches = list(torch.split(order, batch_size))
    if bucket:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return [(idx, max(int(lengths[idx].max()), 1)) for idx in batches]


@torch.no_grad()
def evaluate(
    model: nn.Module, split: SplitTensors, batch_size: int, right: torch.Tensor | None = None
) -> tuple[float, float]:
    """Return (accuracy in percent, mean cross-entropy) of ``model`` on ``split``; ``right`` (a
    bool tensor on the split's device, one per document), if given, is filled with whether each
    document is classified right (the training recipe's paired comparison)."""
    model.eval()
    order = torch.argsort(split.lengths, stable=True)  # length-sorted: little padding
    correct = torch.zeros((), dtype=torch.int64, device=split.labels.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.labels.device)
    for idx in torch.split(order, batch_size):
        width = max(int(split.lengths[idx].max()), 1)
        idx = idx.to(split.ids.device, non_blocking=True)
        logits = model(split.ids[idx, :width])
        labels = split.labels[idx]
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
        hits = logits.argmax(dim=1) == labels
        correct += hits.sum()
        if right is not None:
            right[idx] = hits
    n = max(len(order), 1)
    return 100.0 * int(correct) / n, float(loss_sum) / n


def run_batches(batches, device: torch.device, optimizer, batch_loss: BatchLoss,
                shape: tuple[int, ...] = ()) -> torch.Tensor:  # fmt: skip
    """The step loop of one epoch, for a lone trial and a pack alike: per batch ``(host
    indices, width)`` of ``plan_batches``, zero the gradients, ``batch_loss(host_idx, idx,
    width)`` -> (the loss to backpropagate, the loss to record; ``idx`` is ``host_idx`` on the
    device), backward, one optimizer step. Returns the recorded losses summed (of ``shape``: one
    per trial of a pack), on the device: no host sync inside the loop."""
    total = torch.zeros(shape, device=device)
    for host_idx, width in batches:
        idx = host_idx.to(device, non_blocking=True)
        optimizer.zero_grad()
        objective, loss = batch_loss(host_idx, idx, width)
        objective.backward()
        optimizer.step()
        total += loss.detach()
    return total


def check_finite(loss_sum: float | torch.Tensor, epoch: int) -> None:
    """Raise ``FloatingPointError`` if an epoch's summed training loss is not finite (checked
    once per epoch: a check per step would synchronise the host with the device every step)."""
    value = float(loss_sum)
    if not math.isfinite(value):
        raise FloatingPointError(f"training loss became {value} in epoch {epoch}")


@dataclass
class EarlyStopping:
    """A trial's course over epochs: its validation history, its best epoch and that epoch's
    weights, and when it stops (``patience`` epochs without a new best): every member of the
    epoch loop (``fit_members``) has one, alone or packed, so both stop by one rule."""

    patience: int
    history: list[float] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    started: float = field(default_factory=time.perf_counter)

    def after_epoch(self, model: nn.Module, epoch: int, val_acc: float, on_epoch=None) -> bool:
        """Record the epoch (``on_epoch`` may raise to stop the trial); True: stop now."""
        self.history.append(val_acc)
        if val_acc > self.best_acc:
            self.best_acc, self.best_epoch = val_acc, epoch
            self.best_state = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(epoch, val_acc)
        return epoch - self.best_epoch >= self.patience

    def result(self, model, validation, test, work: Work, eval_batch_size: int) -> FitResult:
        """The best epoch's weights back in ``model``, evaluated on validation and test."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        val_acc, val_loss = work.evaluate(model, validation, eval_batch_size)
        test_acc, _ = work.evaluate(model, test, eval_batch_size)
        return FitResult(
            val_accuracy=val_acc, val_loss=val_loss, test_accuracy=test_acc,
            epochs=len(self.history), best_epoch=self.best_epoch,
            train_seconds=time.perf_counter() - self.started, work=work, history=self.history,
        )  # fmt: skip


@dataclass
class Member:
    """One trial in the epoch loop (``fit_members``): its own model and optimizers, its views of
    the splits, its callback, its course (early stopping) and work; once it ends, ``done`` and
    its ``outcome``. A lone trial is a loop of one member (``fit``); a pack's members
    (``sweep.models.pack.member``) add what a packed model reads of them."""

    model: nn.Module
    optimizers: Optimizers
    views: dict[str, SplitTensors]
    on_epoch: Callable[[int, float], None] | None
    stopping: EarlyStopping
    work: Work = field(default_factory=Work)
    done: bool = False
    outcome: Any = None  # FitResult, or the exception that ended the trial


# One epoch of the members still training, on the epoch's batches (``plan_batches``): each
# member's summed training loss (a float, or a number on the device), in order. It counts its
# optimisation work in each member's ``Work``.
EpochStep = Callable[[list[Member], SplitTensors, list], Sequence[float | torch.Tensor]]


def fit_members(
    members: Sequence[Member],
    train_epoch: EpochStep,
    *,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    bucket: bool,
    seed: int,
    on_done: Callable[[Member], None] | None = None,
) -> None:
    """The epoch loop of every trial, alone (``fit``: a loop of one) or packed: per epoch the
    batch plan a lone trial of ``seed`` makes (shared by all members: the same batches),
    ``train_epoch`` over the members still training, then for each what a lone trial does
    after an epoch (``end_epoch``). Each member ends with ``outcome``: its FitResult, or the
    exception that ended it alone (a non-finite loss, a pruning decision, any error of its
    callback), and goes to ``on_done`` as soon as it ends, while the others train on. An error
    of ``train_epoch`` itself ends the whole loop (a pack that fails as a whole)."""
    train = members[0].views["train"]
    generator = torch.Generator().manual_seed(seed)  # the batch plan every lone trial makes
    for epoch in range(1, epochs + 1):
        active = [m for m in members if not m.done]
        if not active:
            break
        batches = plan_batches(train.lengths, batch_size, generator, bucket)
        losses = train_epoch(active, train, batches)
        for member, loss_sum in zip(active, losses, strict=True):
            end_epoch(member, epoch, loss_sum, eval_batch_size)
            if member.done and on_done is not None:
                on_done(member)
    for member in members:
        if not member.done:
            finish(member, eval_batch_size)
            if on_done is not None:
                on_done(member)


def end_epoch(member: Member, epoch: int, loss_sum, eval_batch_size: int) -> None:
    """What every trial does after an epoch: check the loss (``check_finite``), evaluate, then
    its early stopping (pruning, patience); an exception ends this member, not the loop."""
    try:
        check_finite(loss_sum, epoch)
        val_acc, _ = member.work.evaluate(member.model, member.views["validation"], eval_batch_size)
        if member.stopping.after_epoch(member.model, epoch, val_acc, member.on_epoch):
            finish(member, eval_batch_size)
    except Exception as error:  # optuna.TrialPruned too
        member.done, member.outcome = True, error


def finish(member: Member, eval_batch_size: int) -> None:
    """The member's best epoch back in its model, evaluated: its ``outcome``."""
    views = member.views
    member.outcome = member.stopping.result(member.model, views["validation"], views["test"],
                                            member.work, eval_batch_size)  # fmt: skip
    member.done = True


def train_alone(members: list[Member], train: SplitTensors, batches) -> list[torch.Tensor]:
    """One epoch of a lone trial (a loop of one member): its own model and optimizers over the
    batches (``run_batches``). Returns its summed loss, on the device."""
    (member,) = members
    model, device = member.model, train.ids.device
    model.train()
    t0 = time.perf_counter()

    def batch_loss(host_idx, idx, width):
        loss = nn.functional.cross_entropy(model(train.ids[idx, :width]), train.labels[idx])
        return loss, loss

    loss_sum = run_batches(batches, device, member.optimizers, batch_loss)
    if device.type == "cuda":
        torch.cuda.synchronize()
    member.work.step_seconds += time.perf_counter() - t0
    member.work.count_epoch(train)
    return [loss_sum]


def fit(
    model: nn.Module,
    train: SplitTensors,
    validation: SplitTensors,
    test: SplitTensors,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    seed: int,
    eval_batch_size: int = 1024,
    bucket: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train ``model`` with Adam; keep the epoch with the best validation accuracy.

    ``on_epoch(epoch, val_accuracy)`` is called after every epoch (the search feeds its pruner
    from it and may raise to stop the trial: the exception leaves ``fit``). Stops after
    ``patience`` epochs without a new best. The epoch loop is every trial's (``fit_members``),
    with one member.
    """
    views = {"train": train, "validation": validation, "test": test}
    member = Member(model, Optimizers(model, lr), views, on_epoch, EarlyStopping(patience))
    fit_members([member], train_alone, epochs=epochs, batch_size=batch_size,
                eval_batch_size=eval_batch_size, bucket=bucket, seed=seed)  # fmt: skip
    if isinstance(member.outcome, BaseException):
        raise member.outcome
    return member.outcome
