"""Trainings of one ``TrialRunner`` side by side in forked processes (``sweep.common.forked``).

The study's trials (``TrialsSideBySide``): on a CPU run with idle cores, the trial loop asks a
trial as soon as a slot is free and tells it as soon as its child ends; the sampler sees the
trials still running as it sees another worker's.

The seed repeats are independent trainings of known configurations: on a CPU run with idle
cores (``processes``) they train ``train_pack``'s way, several at once, each in a child forked
from this process (it shares the encoded corpus and the runner), exactly as alone: the same
seed, batches and figures; no more at once than the memory the device has holds
(``within_memory``). What a child counts (fits, training seconds) is added to this process's
time line as each result comes back. A child does not refresh a repeat's claim while
it trains (the claim goes stale only after ``search.stale_after_s``, 900 s by default).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from sweep import measure
from sweep.common.forked import Forked
from sweep.search.loop import own_mb

log = logging.getLogger(__name__)

# Of the memory the device has, the share the trainings side by side may fill together (as the
# trial loop's bound: the estimate counts the tensors, not the allocator's slack).
HEADROOM = 0.85

# The runner a forked child trains with (the fork copies it; set before the children start).
_RUNNING: dict[str, Any] = {}


def _train_job(params: dict[str, Any], seed: int | None) -> dict[str, Any]:
    return _RUNNING["runner"].train(params, None, seed)


def within_memory(processes: int, each_mb: float, device: torch.device, what: str) -> int:
    """``processes`` cut to as many trainings of ``each_mb`` MiB each (their own tensors: the
    children share the corpus) as the device's available memory holds; at least one."""
    if processes <= 1 or each_mb <= 0:
        return processes
    available, source = measure.available_mb(device)
    fit = max(int(HEADROOM * available // each_mb), 1)
    if fit < processes:
        log.info("%s: %d side by side, not %d: each may take %.0f MiB of the %.0f MiB there (%s)",
                 what, fit, processes, each_mb, available, source)  # fmt: skip
    return min(processes, fit)


def train_side_by_side(runner, processes: int) -> Callable[..., list]:
    """A ``train_pack`` (``TrialRunner.train_pack``'s signature) that trains its
    configurations ``processes`` at a time in forked children."""

    def train_pack(params_list, on_epochs, labels, wrap_model=None, seed=None, on_result=None):
        if wrap_model is not None:  # a benchmark's wrapper lives in this process only
            return runner.train_pack(params_list, on_epochs, labels, wrap_model, seed, on_result)
        results: list[Any] = []
        own = max(own_mb(runner.describe(dict(params))) for params in params_list)
        at_once = within_memory(processes, own, runner.data.device, "seed repeats")
        _RUNNING["runner"] = runner
        try:
            with Forked(at_once, torch.get_num_threads()) as forked:
                jobs = [forked.submit(_train_job, dict(params), seed) for params in params_list]
                for i, job in enumerate(jobs):
                    try:
                        result = job.get()
                        if forked.processes > 1:  # counted in a child: not in this time line
                            runner.timing.trials += 1
                            runner.timing.training += float(result.get("train_seconds", 0.0))
                    except Exception as error:  # this configuration's failure, as alone
                        result = error
                    results.append(result)
                    if on_result is not None:
                        on_result(i, result)
        finally:
            _RUNNING.clear()
        return results

    return train_pack


class _Answered:
    """A trial the recipe probe's fit answers (``RecipeFits``): its figures, no child."""

    def __init__(self, figures: dict[str, Any]):
        self.figures = figures

    def poll(self) -> bool:
        return True

    def get(self) -> dict[str, Any]:
        return self.figures


class _Counted:
    """A trial training in a child: its result, counted as one fit of this run when read."""

    def __init__(self, job, timing):
        self.job, self.timing, self.counted = job, timing, False

    def poll(self) -> bool:
        return self.job.poll()

    def get(self) -> dict[str, Any]:
        try:
            return self.job.get()
        finally:
            if not self.counted:
                self.timing.trials += 1
                self.counted = True


class TrialsSideBySide:
    """The study's trials ``slots`` at a time, each in a child forked for it (the trial loop's
    ``sweep.search.loop.run_side_by_side`` asks one as soon as a slot is free); a context
    manager: no child outlives it, and a stop or a failure kills those still training.

    A child trains as ``runner.train`` alone, with no epoch callback (the loop goes side by side
    only without a pruner). A configuration the recipe probe's fit answers (``fits``) is answered
    here at once, not trained. Time this process spends waiting for its children counts as the
    trials' training in the run's time line (their own seconds, summed, would exceed the wall)."""

    def __init__(self, runner, fits, processes: int):
        self.runner, self.fits, self.slots = runner, fits, max(int(processes), 1)
        self.forked: Forked | None = None

    def __enter__(self) -> TrialsSideBySide:
        _RUNNING["runner"] = self.runner
        self.forked = Forked(self.slots, torch.get_num_threads()).__enter__()
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            self.forked.__exit__(kind, error, trace)
        finally:
            _RUNNING.clear()

    def start(self, params: dict[str, Any]):
        """Start training ``params``: an object whose ``poll()`` says whether its outcome is in
        and whose ``get()`` returns the measured figures or raises the training's error."""
        figures = self.fits.answer(params) if self.fits is not None else None
        if figures is not None:
            return _Answered(figures)
        return _Counted(self.forked.submit(_train_job, dict(params), None), self.runner.timing)

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the next child to end (its time: the training's)."""
        started = time.perf_counter()
        self.forked.step(timeout=timeout)
        self.runner.timing.training += time.perf_counter() - started
