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

import contextlib
import datetime
import logging
import math
import os
import socket
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
import pandas as pd

from sweep.search import TRIAL_CONSTRAINTS, SearchError, grid_values, suggest
from sweep.secrets import mask
from sweep.storage import storage_errors, storage_failure

log = logging.getLogger(__name__)

State = optuna.trial.TrialState
WORKER = f"{socket.gethostname()}:{os.getpid()}"
# Study user attribute holding the extra-seed results of front trials: {"<trial>": {"<seed>": {}}}
REPEATS_PREFIX = "repeats:"


def is_skipped(trial: optuna.trial.FrozenTrial) -> bool:
    return "skipped_reason" in trial.user_attrs


def count_finished(study: optuna.Study) -> int:
    """Trials that count toward ``search.n_trials``: complete or pruned, not skipped."""
    trials = study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED))
    return sum(not is_skipped(t) for t in trials)


def count_running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(State.RUNNING,)))


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or "out of memory" in str(error).lower()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def gone_reason(
    worker: str, heartbeat: float | None, started: float | None, stale_after_s: float
) -> str | None:
    """Why the worker ``host:pid`` of a running trial or claim is gone, or None if it may still
    be working. Same host: its pid no longer exists. Any host: no heartbeat for
    ``stale_after_s`` seconds (counted from ``started`` when it never sent one)."""
    worker_host, _, pid = worker.rpartition(":")
    here = worker_host == socket.gethostname()
    if here and pid.isdigit() and not _pid_alive(int(pid)):
        return f"its worker {worker} is gone (killed or crashed)"
    if heartbeat is not None and time.time() - float(heartbeat) > stale_after_s:
        return f"no heartbeat from {worker or 'its worker'} for over {stale_after_s:.0f}s"
    silent = heartbeat is None and not here and started is not None
    if silent and time.time() - started > stale_after_s:
        return f"no heartbeat for over {stale_after_s:.0f}s"
    return None


def fail_stale_trials(study: optuna.Study, stale_after_s: float) -> list[int]:
    """Fail RUNNING trials whose worker is gone; return their numbers.

    Same host: the worker's pid no longer exists. Any host: no heartbeat (set at the start and
    after every epoch) for ``stale_after_s`` seconds.
    """
    storage = study._storage  # noqa: SLF001  (Optuna's public API cannot fail another's trial)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        started = trial.datetime_start.timestamp() if trial.datetime_start else None
        reason = gone_reason(
            str(trial.user_attrs.get("worker", "")),
            trial.user_attrs.get("heartbeat"),
            started,
            stale_after_s,
        )
        if reason:
            reason = f"interrupted: {reason}"
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)  # noqa: SLF001
            storage.set_trial_state_values(trial._trial_id, State.FAIL)  # noqa: SLF001
            log.warning("trial %d marked failed: %s", trial.number, reason)
            failed.append(trial.number)
    return failed


def budget_excess(figures: dict[str, Any], search_cfg) -> float:
    """How far a configuration is over the budgets: max of value / limit - 1 (<= 0: within)."""
    excess = -math.inf
    for limit_key, figure in (("max_params", "params_total"), ("max_memory_mb", "est_peak_mb")):
        limit = search_cfg.get(limit_key)
        if limit is not None and figure in figures:
            excess = max(excess, float(figures[figure]) / float(limit) - 1.0)
    return excess if math.isfinite(excess) else 0.0


def over_budget(figures: dict[str, Any], search_cfg) -> str | None:
    """The reason a configuration breaks ``search.max_params`` or ``search.max_memory_mb``."""
    for limit_key, figure in (("max_params", "params_total"), ("max_memory_mb", "est_peak_mb")):
        limit = search_cfg.get(limit_key)
        if limit is not None and float(figures.get(figure, 0)) > float(limit):
            return f"skipped: over budget, {figure}={figures[figure]:,.0f} > search.{limit_key}={limit:,}"
    return None


def find_finished(study: optuna.Study, params: dict[str, Any], number: int):
    """A COMPLETE, non-skipped trial with exactly these params, if any."""
    for trial in study.get_trials(deepcopy=False, states=(State.COMPLETE,)):
        original = "reused_from" not in trial.user_attrs and not is_skipped(trial)
        if original and trial.number != number and trial.params == params:
            return trial
    return None


def oom_limit(study: optuna.Study) -> tuple[float, int] | None:
    """(smallest est_peak_mb, trial) among trials that ran out of memory, if any did."""
    ooms = [
        (float(t.user_attrs.get("est_peak_mb", math.inf)), t.number)
        for t in study.get_trials(deepcopy=False, states=(State.FAIL,))
        if t.user_attrs.get("out_of_memory")
    ]
    return min(ooms) if ooms else None


def run_trials(
    study: optuna.Study,
    search_cfg,
    *,
    n_trials: int,
    full_vocab_size: int,
    describe: Callable[[dict[str, Any]], dict[str, Any]],
    evaluate: Callable[..., dict[str, Any]],
    after_trial: Callable[[optuna.trial.FrozenTrial, int], None],
) -> int:
    """Run trials until the study has ``n_trials`` finished; return how many ran here.

    ``describe(params)`` gives the figures known before training (stored even if the trial
    fails); ``evaluate(params, on_epoch)`` trains and returns the measured figures;
    ``after_trial(frozen_trial, finished_count)`` runs after each trial (reports, progress).
    """
    objectives = list(search_cfg.objectives)
    single = len(objectives) == 1
    grid = grid_values(search_cfg, full_vocab_size) if search_cfg.sampler.name == "grid" else None
    failures = ran = skips = 0
    reason = ""
    # Other workers' running trials count too, so several workers stop near n_trials together
    # (two that ask at the same instant may still overshoot it by one).
    while True:
        # A worker that died mid-trial must not hold its slot: fail its trial (pid or heartbeat)
        # before counting, also when the count would otherwise say the study is done.
        fail_stale_trials(study, search_cfg.stale_after_s)
        if count_finished(study) + count_running(study) >= n_trials:
            break
        trial = study.ask()
        ran += 1
        trial.set_user_attr("worker", WORKER)
        trial.set_user_attr("heartbeat", time.time())
        state, values = State.FAIL, None
        try:
            params = suggest(trial, search_cfg.space, full_vocab_size, grid)
            figures = describe(params)
            figures["budget_excess"] = budget_excess(figures, search_cfg)
            budgets = ("max_params", "max_memory_mb")
            if TRIAL_CONSTRAINTS and any(search_cfg.get(k) is not None for k in budgets):
                trial.set_constraint("budget", figures["budget_excess"])
            for key, value in figures.items():
                trial.set_user_attr(key, value)
            previous = find_finished(study, trial.params, trial.number)
            limit = oom_limit(study)
            if previous is not None:
                # Same configuration, same setup: the stored result is the answer.
                for key, value in previous.user_attrs.items():
                    if key not in ("worker", "heartbeat"):
                        trial.set_user_attr(key, value)
                trial.set_user_attr("reused_from", previous.number)
                figures.update(previous.user_attrs)
                log.info("trial %d: same configuration as trial %d, result reused",
                         trial.number, previous.number)  # fmt: skip
            elif over_budget(figures, search_cfg):
                skip = over_budget(figures, search_cfg)
                trial.set_user_attr("skipped_reason", skip)
                raise optuna.TrialPruned(skip)
            elif limit is not None and figures.get("est_peak_mb", 0) >= limit[0]:
                skip = (
                    f"skipped: estimated {figures['est_peak_mb']:.0f} MB is not below trial "
                    f"{limit[1]}'s {limit[0]:.0f} MB, which ran out of memory"
                )
                trial.set_user_attr("skipped_reason", skip)
                raise optuna.TrialPruned(skip)
            else:

                def on_epoch(epoch: int, val_accuracy: float, trial=trial) -> None:
                    trial.set_user_attr("heartbeat", time.time())
                    if not single:
                        return  # Optuna reports and prunes single-objective studies only
                    trial.report(val_accuracy, epoch)
                    if trial.should_prune():
                        trial.set_user_attr("pruned_epoch", epoch)
                        raise optuna.TrialPruned(f"pruned after epoch {epoch}")

                measured = evaluate(params, on_epoch)
                for key, value in measured.items():
                    trial.set_user_attr(key, value)
                figures.update(measured)
            values = [figures[name] for name in objectives]
            if any(not math.isfinite(float(v)) for v in values):
                raise FloatingPointError(f"objective values are not finite: {values}")
            state = State.COMPLETE
            skips = 0
        except optuna.TrialPruned as pruned:
            state = State.PRUNED
            if "skipped_reason" in trial.user_attrs:
                skips += 1
                log.info("trial %d %s", trial.number, pruned)
                if skips >= search_cfg.get("max_consecutive_skips", 50):
                    raise SearchError(
                        f"{skips} suggestions in a row were skipped (the last: {pruned}); the "
                        "search space lies mostly over budget or past an out-of-memory size: "
                        "narrow search.space, raise the budget, or check `plan=true`"
                    ) from None
            else:
                skips = 0
        except Exception as error:  # recorded with its reason; the sweep goes on
            failures += 1
            skips = 0
            reason = mask(f"{type(error).__name__}: {error}")  # stored and shown: no secrets
            trial.set_user_attr("fail_reason", reason[:2000])
            if is_out_of_memory(error):
                trial.set_user_attr("out_of_memory", True)
            log.warning("trial %d failed: %s", trial.number, reason)
        try:
            study.tell(trial, values if state == State.COMPLETE else None, state)
        except RuntimeError as error:
            # The grid sampler asks the study to stop once its grid is covered, which Optuna
            # allows only inside study.optimize; the trial is already stored (tell sets the
            # state first) and this loop stops by its own count.
            if "Study.stop" not in str(error):
                raise
        after_trial(study.get_trials(deepcopy=False)[trial.number], count_finished(study))
        if failures >= search_cfg.max_failures:
            raise SearchError(
                f"{failures} trials failed or were skipped in this run (search.max_failures="
                f"{search_cfg.max_failures}); the last: {reason}. Fix the cause (fail_reason "
                "in trials.csv: e.g. lower search.space.embedding_dim.high after out-of-memory "
                "failures) or raise search.max_failures"
            )
    return ran


def front_trials(frame: pd.DataFrame, top_k: int) -> list[int]:
    """Numbers of at most ``top_k`` trials on the front (``frame['pareto']``), best first."""
    front = frame[frame["pareto"].astype(bool)]
    if "reused_from" in front:  # a reused trial repeats its original: retrain that one only
        front = front[front["reused_from"].isna()]
    front = front.sort_values("val_accuracy", ascending=False)
    return front["trial"].head(top_k).astype(int).tolist()


def stored_repeats(study: optuna.Study) -> dict[int, dict[int, dict[str, float]]]:
    """Extra-seed results per trial: {trial: {seed: {"val_accuracy": .., "test_accuracy": ..}}}."""
    out: dict[int, dict[int, dict[str, float]]] = {}
    for key, value in study.user_attrs.items():
        if key.startswith(REPEATS_PREFIX):
            number, seed = key[len(REPEATS_PREFIX) :].split(":")
            out.setdefault(int(number), {})[int(seed)] = value
    return out


def claim_name(study: optuna.Study, number: int, seed: int) -> str:
    return f"{study.study_name}~repeat-{number}-seed-{seed}"


def claim_repeat(
    study: optuna.Study, number: int, seed: int, stale_after_s: float
) -> optuna.Study | None:
    """Claim the retraining of trial ``number`` with ``seed`` for this process: the claim (set
    its ``heartbeat`` while working), or None when another live process holds it.

    A claim is a tiny study named ``<study>~repeat-<trial>-seed-<seed>`` in the same storage:
    creating a study of an existing name fails atomically in every Optuna storage (a unique
    name in a database, the journal's lock), so two runs never both win. A claim whose holder
    is gone (killed, crashed) is taken over.
    """
    storage, name = study._storage, claim_name(study, number, seed)  # noqa: SLF001
    for _ in range(2):
        try:
            claim = optuna.create_study(storage=storage, study_name=name, load_if_exists=False)
        except optuna.exceptions.DuplicatedStudyError:
            attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
            # A claim is made and stamped at once: one with no stamp is counted as long dead.
            gone = gone_reason(str(attrs.get("worker", "")), attrs.get("heartbeat"), 0.0,
                               stale_after_s)  # fmt: skip
            if gone is None:
                return None
            log.warning("seed repeat %s: taking it over (%s)", name, gone)
            optuna.delete_study(study_name=name, storage=storage)
            continue
        claim.set_user_attr("worker", WORKER)
        claim.set_user_attr("heartbeat", time.time())
        return claim
    return None


def release_repeat(study: optuna.Study, number: int, seed: int) -> None:
    """Drop this process's claim (its result, if any, is in the study by now)."""
    with contextlib.suppress(KeyError):  # already gone (taken over and finished elsewhere)
        optuna.delete_study(study_name=claim_name(study, number, seed), storage=study._storage)  # noqa: SLF001


def repeat_trials(
    study: optuna.Study,
    numbers: list[int],
    seeds: list[int],
    evaluate: Callable[..., dict[str, Any]],
    stale_after_s: float = 900.0,
) -> int:
    """Retrain trials ``numbers`` with each of ``seeds`` (skipping stored ones and those another
    live process has claimed); return how many ran here."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    done = stored_repeats(study)
    todo = [(n, s) for n in numbers for s in seeds if s not in done.get(n, {})]
    ran, started = 0, time.perf_counter()
    for index, (number, seed) in enumerate(todo, start=1):
        claim = claim_repeat(study, number, seed, stale_after_s)
        if claim is None:
            log.info("trial %d with seed %d: another run is training it", number, seed)
            continue

        def beat(epoch: int, val_accuracy: float, claim=claim) -> None:
            claim.set_user_attr("heartbeat", time.time())

        try:
            if seed in stored_repeats(study).get(number, {}):  # finished while we claimed
                continue
            measured = evaluate(dict(trials[number].params), beat, seed=seed)
            study.set_user_attr(
                f"{REPEATS_PREFIX}{number}:{seed}",
                {k: measured[k] for k in ("val_accuracy", "test_accuracy")},
            )
        finally:
            release_repeat(study, number, seed)
        ran += 1
        eta = (time.perf_counter() - started) / index * (len(todo) - index)
        log.info("seed repeat %d/%d: trial %d with seed %d: val_accuracy %.2f | ETA %s", index,
                 len(todo), number, seed, measured["val_accuracy"],
                 datetime.timedelta(seconds=round(eta)))  # fmt: skip
    return ran


def importances(study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA importance (no scikit-learn needed) of each searched key for validation accuracy; {} when not computable."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(State.COMPLETE,))
        if "reused_from" not in t.user_attrs and "val_accuracy" in t.user_attrs
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


def load_study(storage, study_name: str, storage_text: str = "that storage") -> optuna.Study:
    """Load a stored study by name (for rebuilding reports), with a clear error if absent."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as error:
        names = [
            s.study_name
            for s in optuna.get_all_study_summaries(storage)
            if "~repeat-" not in s.study_name
        ]  # fmt: skip  (claims: see claim_repeat)
        raise SearchError(f"no study {study_name!r} in {storage_text}; it holds {names}") from error
    except storage_errors() as error:  # server down, bad credentials, a corrupt file
        raise storage_failure(storage_text, error) from None


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial of every state: number, state, params, user attributes, timing.

    Skipped trials show the state SKIPPED; trials retrained with more seeds get the mean and
    standard deviation over all their seeds (``*_mean``, ``*_std``, ``seeds``).
    """
    repeats = stored_repeats(study)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        state = "SKIPPED" if is_skipped(trial) else trial.state.name
        row: dict[str, Any] = {"trial": trial.number, "state": state}
        row.update(trial.user_attrs)
        row.update(trial.params)
        if state == "SKIPPED":
            row["fail_reason"] = trial.user_attrs["skipped_reason"]
        row["datetime_start"] = trial.datetime_start
        duration = trial.duration
        row["duration_seconds"] = duration.total_seconds() if duration else math.nan
        extra = repeats.get(trial.number)
        if extra and state == "COMPLETE":
            for metric in ("val_accuracy", "test_accuracy"):
                values = [row[metric], *(r[metric] for r in extra.values())]
                row[f"{metric}_mean"] = statistics.fmean(values)
                row[f"{metric}_std"] = statistics.stdev(values)
            row["seeds"] = len(extra) + 1
        rows.append(row)
    return pd.DataFrame(rows)
