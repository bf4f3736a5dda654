"""Trainings of one ``TrialRunner`` side by side in forked processes (``sweep.common.forked``).

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
from collections.abc import Callable
from typing import Any

import torch

from sweep import measure
from sweep.common.forked import Forked

log = logging.getLogger(__name__)

# Of the memory the device has, the share the trainings side by side may fill together (as the
# trial loop's bound: the estimate counts the tensors, not the allocator's slack).
HEADROOM = 0.85

# The runner a forked child trains with (the fork copies it; set before the children start).
_RUNNING: dict[str, Any] = {}


def _train_job(params: dict[str, Any], seed: int | None) -> dict[str, Any]:
    return _RUNNING["runner"].train(params, None, seed)


def within_memory(processes: int, own_mb: float, device: torch.device, what: str) -> int:
    """``processes`` cut to as many trainings of ``own_mb`` MiB each (their own tensors: the
    children share the corpus) as the device's available memory holds; at least one."""
    if processes <= 1 or own_mb <= 0:
        return processes
    available, source = measure.available_mb(device)
    fit = max(int(HEADROOM * available // own_mb), 1)
    if fit < processes:
        log.info("%s: %d side by side, not %d: each may take %.0f MiB of the %.0f MiB there (%s)",
                 what, fit, processes, own_mb, available, source)  # fmt: skip
    return min(processes, fit)


def own_mb(figures: dict[str, Any]) -> float:
    """A trial's own estimated memory (``TrialRunner.describe``'s figures), the corpus left out."""
    return float(figures["memory_mb"]) - float(figures.get("est_baseline_mb", 0.0))


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
