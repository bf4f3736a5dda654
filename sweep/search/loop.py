"""Stage 6, trials: the ask/tell loop, its records in the storage, and what protects them.

Every figure a trial measures is a user attribute, so ``trials_frame`` rebuilds every report from
the storage alone. A trial that raises is told FAIL with its reason and the sweep goes on. A trial
whose worker died (``kill -9``, a lost machine) is found at the next start by its worker's pid
(same host) or its stale heartbeat (any host) and failed with that reason. A configuration already
finished is never trained again: its stored result is reused. A configuration at least as large
(by estimated peak memory) as one that ran out of memory is skipped, told PRUNED so the sampler
learns to avoid the region, and not counted toward ``search.n_trials``.
"""

from __future__ import annotations

import datetime
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd

from sweep import schema
from sweep.common.secrets import mask
from sweep.common.stop import Stopped, TimeBudget, deferred, stop_of
from sweep.search.pruning import CURVE, Curve, SizeRule, curves, size_rule
from sweep.search.records import REUSED, SKIPPED, is_original, is_reused, is_skipped
from sweep.search.settings import TRIAL_CONSTRAINTS, SearchError, budgets, has_budget
from sweep.search.space import SearchSpace
from sweep.search.study import (
    REPEATS_PREFIX,
    State,
    claim_repeat,
    count_finished,
    count_running,
    fail_stale_trials,
    fail_trial,
    owns,
    release_repeat,
    stored_repeats,
    worker,
)

log = logging.getLogger(__name__)

Describe = Callable[[dict[str, Any]], dict[str, Any]]
Train = Callable[..., dict[str, Any]]


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or "out of memory" in str(error).lower()


def budget_excess(figures: dict[str, Any], search_cfg) -> float:
    """How far a configuration is over the budgets: max of value / limit - 1 (<= 0: within)."""
    excess = -math.inf
    for _, limit, figure in budgets(search_cfg):
        if figure in figures:
            excess = max(excess, float(figures[figure]) / limit - 1.0)
    return excess if math.isfinite(excess) else 0.0


def over_budget(figures: dict[str, Any], search_cfg) -> str | None:
    """The reason a configuration breaks a budget (``search.max_params``, ``max_memory_mb``,
    ``max_model_bytes``)."""
    for limit_key, limit, figure in budgets(search_cfg):
        if float(figures.get(figure, 0)) > limit:
            return f"skipped: over budget, {figure}={figures[figure]:,.0f} > search.{limit_key}={limit:,.0f}"
    return None


def find_finished(study: optuna.Study, params: dict[str, Any], number: int):
    """A COMPLETE, non-skipped trial with exactly these params, if any."""
    for trial in study.get_trials(deepcopy=False, states=(State.COMPLETE,)):
        if is_original(trial) and trial.number != number and trial.params == params:
            return trial
    return None


def oom_limit(study: optuna.Study) -> tuple[float, int] | None:
    """(smallest memory_mb, trial) among trials that ran out of memory, if any did."""
    ooms = [
        (float(t.user_attrs.get("memory_mb", math.inf)), t.number)
        for t in study.get_trials(deepcopy=False, states=(State.FAIL,))
        if t.user_attrs.get("out_of_memory")
    ]
    return min(ooms) if ooms else None


def skip_reason(
    study: optuna.Study, figures: dict[str, Any], search_cfg, memory_room: MemoryRoom | None = None
) -> str | None:
    """Why a configuration is not trained: its probe step ran out of memory, it is over a
    budget, its memory need is over what its device has (``memory_room``: search.max_memory_mb
    =auto), or it needs at least as much memory (``memory_mb``) as one that ran out of memory
    while training; None to train it."""
    if figures.get("probe_peak_mb") == math.inf:  # it does not fit this device: never trained
        return "skipped: out of memory in the probe step (one step on the longest batch)"
    over = over_budget(figures, search_cfg)
    if over:
        return over
    if memory_room is not None and float(figures.get("memory_mb", 0)) > memory_room.limit_mb:
        return f"skipped: memory_mb={figures['memory_mb']:,.0f} > {memory_room.describe()}"
    limit = oom_limit(study)
    if limit is not None and figures.get("memory_mb", 0) >= limit[0]:
        return (
            f"skipped: memory_mb {figures['memory_mb']:.0f} MB is not below trial "
            f"{limit[1]}'s {limit[0]:.0f} MB, which ran out of memory"
        )
    return None


@dataclass(frozen=True)
class MemoryRoom:
    """The memory a trial may take on its device (``search.max_memory_mb=auto``): what the
    device had available when the study's trials began, shared among the workers on it, plus
    what this process already holds of the trials' baseline (the corpus on the device)."""

    limit_mb: float
    available_mb: float
    source: str
    workers: int = 1

    def describe(self) -> str:
        """``the N MiB a trial may take on this device (where N comes from)``."""
        shared = f", shared by {self.workers} workers" if self.workers > 1 else ""
        return (f"the {self.limit_mb:,.0f} MiB a trial may take on this device ({self.source} "
                f"{self.available_mb:,.0f} MiB{shared}; search.max_memory_mb=auto)")  # fmt: skip


def set_attrs(trial: optuna.Trial, figures: dict[str, Any]) -> None:
    for key, value in figures.items():
        trial.set_user_attr(key, value)


def epoch_callback(trial: optuna.Trial, prune: bool, watch: SizeWatch | None = None,
                   figures: dict[str, Any] | None = None) -> Callable[[int, float], None]:  # fmt: skip
    """After each epoch: the heartbeat; with ``watch`` (search/pruner=size) the trial's curve
    stored and, at a rung, the size rule; for a single objective, Optuna's pruner."""
    curve: list[float] = []

    def on_epoch(epoch: int, val_accuracy: float) -> None:
        trial.set_user_attr("heartbeat", time.time())
        curve.append(val_accuracy)
        if watch is not None:
            watch.after_epoch(trial, curve, figures or {})
        if not prune:
            return  # Optuna reports and prunes single-objective studies only
        trial.report(val_accuracy, epoch)
        if trial.should_prune():
            trial.set_user_attr("pruned_epoch", epoch)
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    return on_epoch


class SizeWatch:
    """The size rule (``sweep.search.pruning``) as the trial loop applies it: at a rung epoch
    the trial's accuracies so far stored with it (``val_curve``: what other trials and workers
    compare with at that rung; a finished trial's ``val_history`` holds every epoch), then the
    rule's decision against every stored curve. Only at rungs: a trial of a fraction of a
    second would otherwise spend much of it writing to the storage."""

    def __init__(self, study: optuna.Study, rule: SizeRule, validation_docs: int):
        self.study, self.rule, self.validation_docs = study, rule, validation_docs

    def after_epoch(self, trial: optuna.Trial, curve: list[float], figures: dict) -> None:
        """Raise ``TrialPruned`` (its figures so far stored) when the rule stops the trial."""
        size = figures.get(self.rule.size)
        if size is None or not self.rule.is_rung(len(curve)):
            return
        trial.set_user_attr(CURVE, list(curve))
        mine = Curve(trial.number, float(size), tuple(curve))
        reason = self.rule.decide(mine, curves(self.study, self.rule.size), self.validation_docs)
        if reason is not None:
            set_attrs(trial, {"pruned_epoch": len(curve), "pruned_reason": reason,
                              "val_accuracy": max(curve), "epochs": len(curve)})  # fmt: skip
            raise optuna.TrialPruned(reason)


def prepare(study, trial, search_cfg, space: SearchSpace, grid, describe: Describe,
            memory_room: MemoryRoom | None = None):  # fmt: skip
    """Suggest and describe an asked trial; (params, figures) to train it, or (None, figures)
    when a finished trial of the same configuration answers it. Raises TrialPruned to skip it
    (over a budget, past an out-of-memory size). Every figure is stored as it is known."""
    params = space.suggest(trial, grid)
    figures = describe(params)
    figures["budget_excess"] = budget_excess(figures, search_cfg)
    if TRIAL_CONSTRAINTS and has_budget(search_cfg):
        trial.set_constraint("budget", figures["budget_excess"])
    set_attrs(trial, figures)
    previous = find_finished(study, trial.params, trial.number)
    if previous is not None:  # same configuration, same setup: the stored result is the answer
        set_attrs(trial, {k: v for k, v in previous.user_attrs.items()
                          if k not in ("worker", "heartbeat")})  # fmt: skip
        trial.set_user_attr(REUSED, previous.number)
        figures.update(previous.user_attrs)
        log.info("trial %d: same configuration as trial %d, result reused",
                 trial.number, previous.number)  # fmt: skip
        return None, figures
    skip = skip_reason(study, figures, search_cfg, memory_room)
    if skip:
        trial.set_user_attr(SKIPPED, skip)
        raise optuna.TrialPruned(skip)
    return params, figures


def objective_values(trial, figures: dict[str, Any], measured, search_cfg) -> list[float]:
    """Store what training measured; the trial's objective values (finite, or it fails)."""
    if measured is not None:
        set_attrs(trial, measured)
        figures.update(measured)
    values = [figures[name] for name in search_cfg.objectives]
    if any(not math.isfinite(float(v)) for v in values):
        raise FloatingPointError(f"objective values are not finite: {values}")
    return values


def record_failure(trial: optuna.Trial, error: Exception) -> str:
    """Store why a trial failed (masked: it is shown); return the reason."""
    reason = mask(f"{type(error).__name__}: {error}")
    trial.set_user_attr("fail_reason", reason[:2000])
    if is_out_of_memory(error):
        trial.set_user_attr("out_of_memory", True)
    log.warning("trial %d failed: %s", trial.number, reason)
    return reason


def tell(study: optuna.Study, trial: optuna.Trial, state, values) -> None:
    try:
        study.tell(trial, values if state == State.COMPLETE else None, state)
    except RuntimeError as error:
        # The grid sampler asks the study to stop once its grid is covered, which Optuna
        # allows only inside study.optimize; the trial is already stored (tell sets the
        # state first) and the loop stops by its own count.
        if "Study.stop" not in str(error):
            raise


class Tally:
    """This run's failed trials and consecutive skips: the two ways a sweep stops itself."""

    def __init__(self, search_cfg):
        self.search_cfg = search_cfg
        self.failures = self.skips = 0
        self.reason, self.last_skip = "", None

    def settle(self, trial: optuna.Trial, result) -> tuple[Any, list[float] | None]:
        """(state, values) of a trial whose ``result`` is its objective values, or the
        exception that ended it (a skip or pruning: PRUNED; anything else: FAIL)."""
        if isinstance(result, optuna.TrialPruned):
            self.skips = self.skips + 1 if is_skipped(trial) else 0
            if self.skips:
                log.info("trial %d %s", trial.number, result)
                self.last_skip = result  # checked once the trial is told (``check``)
            return State.PRUNED, None
        if isinstance(result, BaseException):  # recorded with its reason; the sweep goes on
            self.failures, self.skips = self.failures + 1, 0
            self.reason = record_failure(trial, result)
            return State.FAIL, None
        self.skips = 0
        return State.COMPLETE, result

    def check(self) -> None:
        """Stop the sweep (``SearchError``) after too many failures or skips in a row; called
        once the last trial is told, so none is left RUNNING."""
        if self.skips:
            check_skips(self.skips, self.last_skip, self.search_cfg)
        if self.failures >= self.search_cfg.max_failures:
            raise SearchError(
                f"{self.failures} trials failed or were skipped in this run (search.max_failures="
                f"{self.search_cfg.max_failures}); the last: {self.reason}. Fix the cause "
                "(fail_reason in trials.csv: e.g. lower search.space.embedding_dim.high after "
                "out-of-memory failures) or raise search.max_failures"
            )


def run_trials(
    study: optuna.Study,
    search_cfg,
    *,
    n_trials: int,
    space: SearchSpace,
    describe: Describe,
    train: Train,
    after_trial: Callable[[optuna.trial.FrozenTrial, int], None],
    pack: int = 1,
    train_pack: Callable[..., list] | None = None,
    validation_docs: int = 0,
    memory_room: MemoryRoom | None = None,
    budget: TimeBudget | None = None,
    side_by_side: Callable[[], Any] | None = None,
) -> int:
    """Run trials until the study has ``n_trials`` finished, or ``budget``'s deadline has
    passed (no trial is asked after it); return how many ran here.

    ``describe(params)`` gives the figures known before training (stored even if the trial
    fails); ``train(params, on_epoch)`` trains and returns the measured figures;
    ``after_trial(frozen_trial, finished_count)`` runs after each trial (reports, progress).
    With ``pack`` > 1 each round asks up to ``pack`` trials and ``train_pack(params_list,
    on_epochs, labels)`` trains those that need training together (``TrialRunner.train_pack``).
    ``validation_docs`` sets the size rule's automatic margin; ``memory_room`` skips a trial its
    device cannot hold. ``side_by_side`` (no packs, no pruner): ``run_side_by_side``. A stop
    (``Stopped``: SIGTERM, SIGINT, the budget's grace) fails the trials this process was running
    with its reason; a signal's is raised again, the budget's ends it.
    """
    values = search_cfg.sampler.get("values")
    grid = space.grid(values) if search_cfg.sampler.name == "grid" else None
    tally, ran = Tally(search_cfg), 0
    rule = size_rule(search_cfg)
    watch = SizeWatch(study, rule, validation_docs) if rule is not None else None

    finish = finisher(study, tally, after_trial)
    asked: list[optuna.Trial] = []
    prune = len(search_cfg.objectives) == 1
    try:
        if side_by_side is not None and max(pack, 1) == 1 and not needs_epochs(study, watch, prune):
            return run_side_by_side(study, search_cfg, n_trials, budget, space, grid, describe,
                                    side_by_side, finish, memory_room, asked)  # fmt: skip
        while (room := room_left(study, search_cfg, n_trials, budget)) > 0:
            with deferred():  # a trial asked but not yet stamped would be nobody's
                asked = ask(study, min(max(pack, 1), room))
            ran += len(asked)
            if len(asked) == 1 or train_pack is None:
                for trial in asked:
                    finish(trial, run_one(study, trial, search_cfg, space, grid, describe, train,
                                          prune, watch, memory_room))  # fmt: skip
            else:
                run_pack(study, asked, search_cfg, space, grid, describe, train_pack, prune,
                         finish, watch, memory_room)  # fmt: skip
    except (Stopped, KeyboardInterrupt) as error:
        stop = stop_of(error)
        fail_running(study, [trial.number for trial in asked], stop.reason)
        if stop.signum is not None:
            raise
    return ran


def finisher(study: optuna.Study, tally: Tally, after_trial) -> Callable[[Any, Any], None]:
    """``finish(trial, result)``: settle a trial (``Tally.settle``), tell the study, run
    ``after_trial`` and stop the sweep once too many failed."""

    def finish(trial, result) -> None:
        state, values = tally.settle(trial, result)
        with deferred():  # a trial told halfway would stay RUNNING
            tell(study, trial, state, values)
        after_trial(study.get_trials(deepcopy=False)[trial.number], count_finished(study))
        tally.check()

    return finish


def needs_epochs(study: optuna.Study, watch: SizeWatch | None, prune: bool) -> bool:
    """Whether a trial's epochs must reach this process as it trains: the size rule, or an
    Optuna pruner of a single objective (a child process cannot ask them)."""
    return watch is not None or (prune and not isinstance(study.pruner, optuna.pruners.NopPruner))


# While trials train side by side, how often this process refreshes their heartbeats (a child
# cannot write to the storage): well within search.stale_after_s.
HEARTBEAT_S = 30.0


def run_side_by_side(study, search_cfg, n_trials: int, budget, space, grid, describe,
                     side_by_side, finish, memory_room: MemoryRoom | None, mine: list) -> int:  # fmt: skip
    """Trials side by side in the slots ``side_by_side()`` opens (``TrialsSideBySide``), each
    training in a child: a trial is asked as soon as a slot is free and told as soon as it
    ends, so the sampler asks each trial knowing every finished one and those still running
    (as another worker's). ``mine`` holds this process's trials still running (failed by the
    caller on a stop; here, when the sweep itself ends). Returns how many were asked."""
    ran = 0
    with side_by_side() as slots:
        log.info("trials: %d side by side (processes)", slots.slots)
        running = _Running(study, search_cfg, slots, finish, memory_room, mine)
        try:
            while True:
                while (
                    len(running.training) < slots.slots
                    and room_left(study, search_cfg, n_trials, budget) > 0
                ):
                    with deferred():  # a trial asked but not yet stamped would be nobody's
                        (trial,) = ask(study, 1)
                        mine.append(trial)
                    ran += 1
                    running.start(trial, space, grid, describe)
                if not running.training:
                    return ran
                running.settle(block=True)
        except Exception as error:  # the sweep ends (too many failures): the others with it
            numbers = [trial.number for trial in mine]
            fail_running(study, numbers, mask(f"the sweep ended: {error}")[:500])
            raise


class _Running:
    """The trials training side by side: started where the memory room holds them beside the
    others (their own peaks summed on one baseline, as ``fitting``; else after one ends),
    settled as each ends, their heartbeats refreshed here (a child cannot write to the
    storage)."""

    def __init__(self, study, search_cfg, slots, finish, memory_room, mine: list):
        self.study, self.search_cfg, self.slots, self.finish = study, search_cfg, slots, finish
        self.memory_room, self.mine = memory_room, mine
        self.training: dict[int, tuple] = {}  # number -> (trial, figures, job, own MiB)
        self.placing: optuna.Trial | None = None  # asked, waiting for memory to start
        self.beat = time.monotonic()

    def start(self, trial, space, grid, describe) -> None:
        """Prepare an asked trial and start its training (or settle it: reused, skipped)."""
        try:
            params, figures = prepare(self.study, trial, self.search_cfg, space, grid, describe,
                                      self.memory_room)  # fmt: skip
        except Exception as error:
            self.told(trial, error)
            return
        if params is None:  # a finished trial's result answers it
            self.told(trial, values_or_error(trial, figures, None, self.search_cfg))
            return
        own = own_mb(figures)
        self.placing = trial  # its heartbeat beats while it waits
        while not self.fits_beside(own, float(figures.get("est_baseline_mb", 0.0))):
            self.settle(block=True)
        self.placing = None
        self.training[trial.number] = (trial, figures, self.slots.start(params), own)

    def told(self, trial, result) -> None:
        """``finish`` the trial, then drop it from this process's running ones (a stop or the
        sweep's end while it is being told still fails it: it stays in ``mine`` till then)."""
        self.finish(trial, result)
        self.mine.remove(trial)

    def fits_beside(self, own: float, baseline: float) -> bool:
        if self.memory_room is None or not self.training:
            return True
        used = baseline + sum(t[3] for t in self.training.values())
        return used + own <= self.memory_room.limit_mb

    def settle(self, block: bool) -> None:
        """Tell the trials whose child has ended (after waiting for one, with ``block``)."""
        if block:
            self.slots.wait(timeout=1.0)
        for number in sorted(self.training):
            trial, figures, job, _ = self.training[number]
            if not job.poll():
                continue
            del self.training[number]
            try:
                result = values_or_error(trial, figures, job.get(), self.search_cfg)
            except Exception as error:  # the training's own failure, as alone
                result = error
            self.told(trial, result)
        if time.monotonic() - self.beat > HEARTBEAT_S:
            self.beat = time.monotonic()
            waiting = [self.placing] if self.placing is not None else []
            for trial in [t for t, *_ in self.training.values()] + waiting:
                trial.set_user_attr("heartbeat", time.time())


def room_left(study: optuna.Study, search_cfg, n_trials: int, budget=None) -> int:
    """How many trials may still be asked: ``n_trials`` less those finished and those running,
    none once ``budget``'s deadline has passed. A worker that died mid-trial must not hold its
    slot: its trial is failed first (pid or heartbeat). Other workers' running trials count too,
    so several workers stop near n_trials together (two that ask at the same instant may
    overshoot it by one)."""
    if budget is not None and budget.ended():
        return 0
    fail_stale_trials(study, search_cfg.stale_after_s)
    return n_trials - count_finished(study) - count_running(study)


def ask(study: optuna.Study, count: int) -> list[optuna.Trial]:
    """``count`` new trials of this process, each stamped with its worker and a heartbeat; a
    queued trial another worker popped at the same instant is left to it (``owns``)."""
    asked: list[optuna.Trial] = []
    while len(asked) < count:
        trial = study.ask()
        if not owns(study, trial):
            log.debug("trial %d: another worker took it from the queue", trial.number)
            continue
        set_attrs(trial, {"worker": worker(), "heartbeat": time.time()})
        asked.append(trial)
    return asked


def fail_running(study: optuna.Study, numbers: list[int], reason: str) -> list[int]:
    """Fail the trials ``numbers`` that are still RUNNING with ``reason`` (a stop: they were
    this process's); return their numbers."""
    failed = []
    with deferred():
        for trial in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
            if trial.number in numbers:
                fail_trial(study, trial, reason)
                log.warning("trial %d failed: %s", trial.number, reason)
                failed.append(trial.number)
    return failed


def run_one(study, trial, search_cfg, space, grid, describe, train, prune: bool, watch=None,
            memory_room=None):  # fmt: skip
    """One trial alone: its objective values, or the exception that ended it."""
    try:
        params, figures = prepare(study, trial, search_cfg, space, grid, describe, memory_room)
        on_epoch = epoch_callback(trial, prune, watch, figures)
        measured = None if params is None else train(params, on_epoch)
        return objective_values(trial, figures, measured, search_cfg)
    except Exception as error:
        return error


def run_pack(study, asked, search_cfg, space, grid, describe, train_pack, prune, finish,
             watch=None, memory_room=None) -> None:  # fmt: skip
    """A round of several asked trials: reused and skipped ones settle at once, the others
    train together (``train_pack``), each settling with its own result as soon as it ends (a
    trial that stops early in a pack is told while the others train on)."""
    pending = []
    for trial in asked:
        try:
            params, figures = prepare(study, trial, search_cfg, space, grid, describe, memory_room)
        except Exception as error:
            finish(trial, error)
            continue
        if params is None:
            finish(trial, values_or_error(trial, figures, None, search_cfg))
        else:
            pending.append((trial, params, figures))
    for group in fitting(pending, memory_room):

        def settle(i: int, measured, group=group) -> None:  # as each ends: a kill loses none told
            trial, _, figures = group[i]
            if isinstance(measured, BaseException):
                finish(trial, measured)
            else:
                finish(trial, values_or_error(trial, figures, measured, search_cfg))

        train_pack([p for _, p, _ in group],
                   [epoch_callback(t, prune, watch, f) for t, _, f in group],
                   [t.number for t, _, _ in group], on_result=settle)  # fmt: skip


def own_mb(figures: dict[str, Any]) -> float:
    """A trial's own estimated memory (MiB; ``describe``'s figures): ``memory_mb`` less the
    baseline its process already holds (the corpus), which trainings side by side share."""
    return float(figures.get("memory_mb", 0.0)) - float(figures.get("est_baseline_mb", 0.0))


def fitting(pending: list, memory_room: MemoryRoom | None) -> list[list]:
    """``pending`` (trial, params, figures) cut into packs that fit ``memory_room`` together:
    the trials' own peaks summed on one baseline (the corpus they share), in order; one pack
    without a bound. Each trial alone fits (``skip_reason`` saw to it)."""
    if memory_room is None:
        return [pending] if pending else []
    groups: list[list] = []
    used = math.inf
    for item in pending:
        figures = item[2]
        baseline, own = float(figures.get("est_baseline_mb", 0.0)), own_mb(figures)
        if used + own > memory_room.limit_mb:
            groups.append([])
            used = baseline
        groups[-1].append(item)
        used += own
    return groups


def values_or_error(trial, figures, measured, search_cfg):
    """``objective_values``, or the exception it raised (the trial's failure)."""
    try:
        return objective_values(trial, figures, measured, search_cfg)
    except Exception as error:
        return error


def check_skips(skips: int, last, search_cfg) -> None:
    """Stop a search whose suggestions keep landing over budget or past an OOM size."""
    if skips >= search_cfg.get("max_consecutive_skips", 50):
        raise SearchError(
            f"{skips} suggestions in a row were skipped (the last: {last}); the "
            "search space lies mostly over budget or past an out-of-memory size: "
            "narrow search.space, raise the budget, or check `plan=true`"
        ) from None


def front_trials(
    frame: pd.DataFrame, top_k: int, objectives=schema.DEFAULT_OBJECTIVES
) -> list[int]:
    """Numbers of at most ``top_k`` trials on the front (``frame['pareto']``), best first by the
    quality objective (validation accuracy by default)."""
    quality = objectives.quality
    higher = objectives.higher_is_better(quality)
    front = frame[frame["pareto"].astype(bool)]
    if REUSED in front:  # a reused trial repeats its original: retrain that one only
        front = front[front[REUSED].isna()]
    front = front.sort_values(quality, ascending=not higher)
    return front["trial"].head(top_k).astype(int).tolist()


def accuracy_noise(percent: float, docs: int) -> float:
    """The sampling standard error (points) of an accuracy of ``percent`` measured on ``docs``
    texts: the first estimate of seed noise, before repeats measure it (seeds often move an
    accuracy less than this on one fixed split, sometimes more)."""
    p = min(max(percent / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / max(docs, 1))


@dataclass(frozen=True)
class Deciding:
    """Which trials seed repeats go to (``deciding_trials``): ``chosen``, the recommended trial
    first; ``far``, front trials too far from the recommendation for noise to move it; ``cut``,
    trials that could but lie past ``report.top_k``."""

    chosen: list[int]
    far: list[int]
    cut: list[int]


def deciding_trials(
    frame: pd.DataFrame, top_k: int, objectives, tie_margin: float, noise: float
) -> Deciding:
    """The trials whose seed repeats could change the recommendation (``annotate``: the
    smallest trial within ``tie_margin`` of the best, by the mean over seeds where repeats ran).

    The recommended trial; front trials within ``2 * noise`` of the best (one could become the
    best, which moves the edge of the ties); front trials below that edge by at most
    ``2 * noise`` (one could cross it and, being smaller, become the recommendation). A front
    trial above the edge is larger than the recommendation and stays a tie; one further below
    cannot cross. Values are means over seeds where repeats ran, else the one seed's. A reused
    trial (``reused_from``) is never chosen: its original is. With a quality other than
    validation accuracy: the ``top_k`` best front trials, as ``front_trials``."""
    if objectives.quality != "val_accuracy":
        return top_front(frame, top_k, objectives)
    front = front_trials(frame, len(frame), objectives)
    if not front:
        return Deciding([], [], [])
    rows = frame.set_index("trial")
    value = rows["val_accuracy"].astype(float)
    if "val_accuracy_mean" in rows:  # the recommendation ranks by the means
        value = rows["val_accuracy_mean"].astype(float).fillna(value)
    original = rows[REUSED].isna() if REUSED in rows else pd.Series(True, index=rows.index)
    # The recommendation ranks by means, the front by one seed: once repeats have lowered a
    # front trial's mean, the recommended trial may be off the front.
    recommended = [int(n) for n in rows.index[rows["recommended"].astype(bool) & original]]
    best, window = float(value[front].max()), 2.0 * noise
    edge = best - tie_margin
    could_move = [n for n in front if value[n] >= best - window or edge - window <= value[n] < edge]
    chosen = recommended + [n for n in could_move if n not in recommended]
    return Deciding(chosen[:top_k], [n for n in front if n not in chosen], chosen[top_k:])


def top_front(frame: pd.DataFrame, top_k: int, objectives) -> Deciding:
    """The ``top_k`` best front trials (``front_trials``) chosen, the rest of the front cut:
    where the means over seeds do not decide the recommendation."""
    front = front_trials(frame, len(frame), objectives)
    return Deciding(front[:top_k], [], front[top_k:])


def repeat_trials(
    study: optuna.Study,
    numbers: list[int],
    seeds: list[int],
    train: Train,
    stale_after_s: float = 900.0,
    pack: int = 1,
    train_pack: Callable[..., list] | None = None,
    budget: TimeBudget | None = None,
) -> int:
    """Retrain trials ``numbers`` with each of ``seeds`` (skipping stored ones and those another
    live process has claimed); return how many ran here. With ``pack`` > 1 the trials of one
    seed train together, ``pack`` at a time (``train_pack(params_list, on_epochs, labels,
    seed=seed)``: they share that seed's batches, as packed trials do). None starts after
    ``budget``'s deadline."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    done = stored_repeats(study)
    todo = [(n, s) for s in seeds for n in numbers if s not in done.get(n, {})]
    progress = _RepeatProgress(len(todo))
    size = pack if pack > 1 and train_pack is not None else 1
    for seed in seeds:
        mine = [n for n, s in todo if s == seed]
        for start in range(0, len(mine), size):
            if budget is not None and budget.ended():
                log.info("seed repeats: the time budget (search.timeout_s=%g) has ended; %d of "
                         "%d ran (the same command again adds the others)", budget.timeout_s,
                         progress.count, progress.total)  # fmt: skip
                return progress.count
            claims = {}
            try:
                for number in mine[start : start + size]:
                    claim = claim_repeat(study, number, seed, stale_after_s)
                    if claim is None:
                        log.info("trial %d with seed %d: another run is training it", number, seed)
                    elif seed not in stored_repeats(study).get(number, {}):
                        claims[number] = claim
                    else:  # finished elsewhere while we claimed it
                        release_repeat(study, number, seed)
                results = _train_repeats(
                    claims, trials, seed, train, train_pack if size > 1 else None
                )
                for number, measured in results.items():
                    study.set_user_attr(f"{REPEATS_PREFIX}{number}:{seed}",
                                        {k: measured[k] for k in schema.PER_SEED})  # fmt: skip
                    progress.done(number, seed, measured)
            finally:
                for number in claims:
                    release_repeat(study, number, seed)
    return progress.count


def _train_repeats(claims: dict, trials: dict, seed: int, train, train_pack) -> dict:
    """{trial number: measured} of the claimed repeats of one seed, alone or as one pack; a
    failure stops the repeats (after the pack's others are stored), as it always has."""

    def beat_for(claim):
        return lambda epoch, val_accuracy: claim.set_user_attr("heartbeat", time.time())

    numbers = list(claims)
    if train_pack is None or len(numbers) < 2:
        return {n: train(dict(trials[n].params), beat_for(claims[n]), seed=seed) for n in numbers}
    results = train_pack([dict(trials[n].params) for n in numbers],
                         [beat_for(claims[n]) for n in numbers], numbers, seed=seed)  # fmt: skip
    measured = {n: r for n, r in zip(numbers, results, strict=True) if isinstance(r, dict)}
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    return measured


class _RepeatProgress:
    """One log line per finished seed repeat, with the ETA of the rest."""

    def __init__(self, total: int):
        self.total, self.count, self.started = total, 0, time.perf_counter()

    def done(self, number: int, seed: int, measured: dict) -> None:
        self.count += 1
        eta = (time.perf_counter() - self.started) / self.count * (self.total - self.count)
        log.info("seed repeat %d/%d: trial %d with seed %d: val_accuracy %.2f | ETA %s",
                 self.count, self.total, number, seed, measured["val_accuracy"],
                 datetime.timedelta(seconds=round(eta)))  # fmt: skip


def importances(study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA importance (no scikit-learn needed) of each searched key for validation accuracy; {} when not computable."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(State.COMPLETE,))
        if not is_reused(t) and "val_accuracy" in t.user_attrs
    ]
    if len(complete) < 2 or len({tuple(sorted(t.params.items())) for t in complete}) < 2:
        return {}
    try:
        with warnings.catch_warnings():  # experimental API notes, not problems
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                study,
                evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                # PED-ANOVA explains low target values: negate to explain high accuracy.
                target=lambda t: -t.user_attrs.get("val_accuracy", math.nan),
            )
    except (RuntimeError, ValueError, ZeroDivisionError) as error:
        log.debug("no parameter importance: %s", error)
        return {}


PRECISIONS_PREFIX = "precisions:"


def store_precisions(study: optuna.Study, number: int, figures: dict[str, float]) -> None:
    """Accuracy at each precision of a trial measured after it finished (``report.quantize=
    front``): a finished trial's attributes are frozen, so they live with the study."""
    study.set_user_attr(f"{PRECISIONS_PREFIX}{number}", figures)


def stored_precisions(study: optuna.Study) -> dict[int, dict[str, float]]:
    return {
        int(key[len(PRECISIONS_PREFIX) :]): value
        for key, value in study.user_attrs.items()
        if key.startswith(PRECISIONS_PREFIX)
    }


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial of every state: number, state, params, user attributes, timing.

    Skipped trials show the state SKIPPED; trials retrained with more seeds get the mean and
    standard deviation over all their seeds (``*_mean``, ``*_std``, ``seeds``).
    """
    repeats = stored_repeats(study)
    measured = stored_precisions(study)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        state = "SKIPPED" if is_skipped(trial) else trial.state.name
        row: dict[str, Any] = {"trial": trial.number, "state": state}
        row.update(trial.user_attrs)
        row.update(measured.get(trial.number, {}))
        row.update(trial.params)
        if state == "SKIPPED":
            row["fail_reason"] = trial.user_attrs[SKIPPED]
        elif "pruned_reason" in trial.user_attrs:
            row["fail_reason"] = trial.user_attrs["pruned_reason"]
        row["datetime_start"] = trial.datetime_start
        duration = trial.duration
        row["duration_seconds"] = duration.total_seconds() if duration else math.nan
        extra = repeats.get(trial.number)
        if extra and state == "COMPLETE":
            for metric in schema.PER_SEED:
                values = [row[metric], *(r[metric] for r in extra.values())]
                row[f"{metric}_mean"] = statistics.fmean(values)
                row[f"{metric}_std"] = statistics.stdev(values)
            row["seeds"] = len(extra) + 1
        rows.append(row)
    return pd.DataFrame(rows)
