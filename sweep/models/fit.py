"""Stage 4, fit: train one model from pre-encoded tensors, early-stopping on validation accuracy.

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
from collections.abc import Callable
from dataclasses import dataclass, field

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


def train_epoch(model, train: SplitTensors, optimizers, clock: Work, epoch: int, *,
                batch_size: int, generator: torch.Generator, bucket: bool) -> None:  # fmt: skip
    """One shuffled pass of a lone model over ``train`` (``run_batches``); its loss checked at
    the end (``check_finite``)."""
    device = train.ids.device
    model.train()
    t0 = time.perf_counter()
    batches = plan_batches(train.lengths, batch_size, generator, bucket)

    def batch_loss(host_idx, idx, width):
        loss = nn.functional.cross_entropy(model(train.ids[idx, :width]), train.labels[idx])
        return loss, loss

    loss_sum = run_batches(batches, device, optimizers, batch_loss)
    if device.type == "cuda":
        torch.cuda.synchronize()
    clock.step_seconds += time.perf_counter() - t0
    clock.count_epoch(train)
    check_finite(loss_sum, epoch)


@dataclass
class EarlyStopping:
    """A trial's course over epochs: its validation history, its best epoch and that epoch's
    weights, and when it stops (``patience`` epochs without a new best). Shared by ``fit`` and
    packed trials (``sweep.models.pack.fit``), so both stop by one rule."""

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
    from it and may raise to stop the trial). Stops after ``patience`` epochs without a new best.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizers = Optimizers(model, lr)
    stopping, work = EarlyStopping(patience), Work()
    for epoch in range(1, epochs + 1):
        train_epoch(model, train, optimizers, work, epoch, batch_size=batch_size,
                    generator=generator, bucket=bucket)  # fmt: skip
        val_acc, _ = work.evaluate(model, validation, eval_batch_size)
        if stopping.after_epoch(model, epoch, val_acc, on_epoch):
            break
    return stopping.result(model, validation, test, work, eval_batch_size)
