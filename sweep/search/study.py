"""The study: its storage, its signature, its workers' bookkeeping and its seed repeats.

Everything here talks to Optuna's study and storage; the few calls Optuna has no public API for
(failing another process's trial, reaching the storage of a loaded study) go through
``storage_of`` and ``fail_trial``, which check that the private names still exist and fail with
a message naming the Optuna version when they do not (a test pins them).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from sweep.common.digest import json_digest
from sweep.search.ehvi import FrontGainSampler
from sweep.search.records import is_skipped
from sweep.search.settings import SearchError, make_pruner, make_sampler
from sweep.search.storage import describe_storage, make_storage, storage_errors, storage_failure

log = logging.getLogger(__name__)


def _private(obj, name: str):
    """``obj.<name>``, a private Optuna attribute, or a clear error when a release renamed it."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise RuntimeError(
            f"optuna {optuna.__version__} has no {type(obj).__name__}.{name}, which sweep.search.study "
            "needs to fail trials of dead workers and to claim seed repeats; install the Optuna "
            "release pyproject.toml names or report it"
        ) from None


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage of a loaded study (Optuna keeps it private)."""
    return _private(study, "_storage")


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Fail a RUNNING trial of another (dead) worker with ``reason``: Optuna's public API only
    lets a process tell its own trials."""
    storage, trial_id = storage_of(study), _private(trial, "_trial_id")
    storage.set_trial_user_attr(trial_id, "fail_reason", reason)
    storage.set_trial_state_values(trial_id, State.FAIL)


State = optuna.trial.TrialState


def worker() -> str:
    """This process as the storage names it: ``host:pid``, read when asked (a forked child is
    its own worker, not its parent)."""
    return f"{socket.gethostname()}:{os.getpid()}"


# Study user attribute holding the extra-seed results of front trials: {"<trial>": {"<seed>": {}}}
REPEATS_PREFIX = "repeats:"


def count_finished(study: optuna.Study) -> int:
    """Trials that count toward ``search.n_trials``: complete or pruned, not skipped."""
    trials = study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED))
    return sum(not is_skipped(t) for t in trials)


def count_running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(State.RUNNING,)))


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
            fail_trial(study, trial, reason)
            log.warning("trial %d marked failed: %s", trial.number, reason)
            failed.append(trial.number)
    return failed


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
    storage, name = storage_of(study), claim_name(study, number, seed)  # noqa: SLF001
    for _ in range(2):
        claim = make_claim(storage, name)
        if claim is not None:
            return claim
        # A claim is made and stamped at once: one with no stamp is counted as long dead.
        gone = holder_gone(optuna.load_study(study_name=name, storage=storage).user_attrs,
                           stale_after_s)  # fmt: skip
        if gone is None:
            return None
        log.warning("seed repeat %s: taking it over (%s)", name, gone)
        optuna.delete_study(study_name=name, storage=storage)
    return None


def make_claim(storage, name: str) -> optuna.Study | None:
    """Create the claim study ``name`` and stamp it with this worker and a heartbeat; None if
    it exists already (creating a study of an existing name fails atomically in every Optuna
    storage: a unique name in a database, the journal's lock)."""
    try:
        claim = optuna.create_study(storage=storage, study_name=name, load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        return None
    claim.set_user_attr("worker", worker())
    beat(claim)
    return claim


def holder_gone(attrs: dict[str, Any], stale_after_s: float) -> str | None:
    """Why the worker that stamped a claim (its user attrs) is gone, or None (``gone_reason``)."""
    return gone_reason(str(attrs.get("worker", "")), attrs.get("heartbeat"), 0.0, stale_after_s)


def release_repeat(study: optuna.Study, number: int, seed: int) -> None:
    """Drop this process's claim (its result, if any, is in the study by now)."""
    with contextlib.suppress(KeyError):  # already gone (taken over and finished elsewhere)
        optuna.delete_study(study_name=claim_name(study, number, seed), storage=storage_of(study))


RECIPE_SUFFIX = "~recipe"


def beat(claim: optuna.Study) -> None:
    """Stamp a claim's heartbeat: its holder is still working."""
    claim.set_user_attr("heartbeat", time.time())


def settle_recipe(search_cfg, probe: Callable[[Callable[[], None]], dict]) -> dict:
    """The study's training recipe (``sweep.trial.recipe``): the one stored, or ``probe(beat)``
    run here and stored, so that a resumed run and every worker train with the same choice.

    Kept in a tiny study named ``<study>~recipe`` in the study's storage: creating it is the
    claim (atomic in every storage, as ``claim_repeat``), so two workers never both probe. A
    worker that loses waits for the recipe; a claim whose holder is gone (killed mid-probe) is
    taken over, as is one with no heartbeat for ``search.stale_after_s``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as open_study: no line per study
    storage = make_storage(search_cfg)
    name = f"{search_cfg.study_name}{RECIPE_SUFFIX}"
    stale_after_s = float(search_cfg.stale_after_s)
    waited, unstamped_since = False, None
    while (claim := make_claim(storage, name)) is None:
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
        if "recipe" in attrs:
            return attrs["recipe"]
        gone = holder_gone(attrs, stale_after_s)
        if "heartbeat" not in attrs:  # stamped right after it is made: wait a little first
            unstamped_since = unstamped_since or time.time()
            gone = "never stamped" if time.time() - unstamped_since > 10 else None
        if gone is not None:
            log.warning("recipe probe of %s: taking it over (%s)", name, gone)
            optuna.delete_study(study_name=name, storage=storage)
        elif not waited:
            log.info("waiting for another worker's recipe probe (%s)", attrs.get("worker"))
            waited = True
        time.sleep(0.5)
    try:
        recipe = probe(functools.partial(beat, claim))
    except BaseException:  # a failed probe leaves no claim for the next run to wait on
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)
        raise
    claim.set_user_attr("recipe", recipe)
    return recipe


def start_at(study: optuna.Study, points: list[dict[str, Any]], enqueue: bool = True) -> bool:
    """The first trials of a fresh study at ``points``; True if it is fresh. The ``ehvi``
    sampler takes them by trial number (``FrontGainSampler.start_at``: workers asking at once
    never take one twice); another sampler finds them in Optuna's queue, filled only where
    ``enqueue`` (worker 0: two workers filling it at once would queue each point twice)."""
    fresh = not study.get_trials(deepcopy=False)
    if isinstance(study.sampler, FrontGainSampler):
        study.sampler.start_at(points)
    elif fresh and enqueue:
        for point in points:
            study.enqueue_trial(point, skip_if_exists=True)
    return fresh


QUEUE_INFIX = "~queue-"


def owns(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether this process may run the trial it just asked: one Optuna made for it, or one from
    the queue (``enqueue_trial``) that it claimed first. Optuna pops a queued trial by reading it
    WAITING and setting it RUNNING, which SQLite cannot lock: two workers asking at once may
    both get it (and train it twice, one failing to tell it). The claim, a tiny study named
    ``<study>~queue-<number>`` (as ``claim_repeat``), goes to exactly one."""
    frozen = storage_of(study).get_trial(_private(trial, "_trial_id"))
    if "fixed_params" not in frozen.system_attrs:
        return True
    claim = make_claim(storage_of(study), f"{study.study_name}{QUEUE_INFIX}{trial.number}")
    return claim is not None


def load_study(storage, study_name: str, storage_text: str = "that storage") -> optuna.Study:
    """Load a stored study by name (for rebuilding reports), with a clear error if absent."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as error:
        # A study name has no "~" (check_study_name): those are claims (claim_repeat,
        # settle_recipe, owns).
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)
                 if "~" not in s.study_name]  # fmt: skip
        raise SearchError(f"no study {study_name!r} in {storage_text}; it holds {names}") from error
    except storage_errors() as error:  # server down, bad credentials, a corrupt file
        raise storage_failure(storage_text, error) from None


def set_shared_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Set a study user attribute that several workers may set at the same moment: in a
    database the first write of a key is an insert, and of two at once one fails on the unique
    key (``IntegrityError``); that one writes again, an update now, so no worker fails for
    another's write (the journal storage has no such race)."""
    from sqlalchemy import exc

    try:
        study.set_user_attr(key, value)
    except exc.IntegrityError:
        study.set_user_attr(key, value)


def _set_metric_names(study: optuna.Study, names: list[str]) -> None:
    """``study.set_metric_names``, as ``set_shared_attr`` (a system attribute)."""
    from sqlalchemy import exc

    with warnings.catch_warnings():  # experimental in Optuna 3.2+, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            study.set_metric_names(names)
        except exc.IntegrityError:
            study.set_metric_names(names)


def prepare_study(search_cfg) -> optuna.Study:
    """Make the storage (a database's tables, the journal file) and the study, and return it:
    ``search.workers`` calls this in the parent before any worker starts, so that workers only
    join the study and never race to make it (on a fresh database such a race fails one of
    them: optuna issues 1092 and 4621). A bad storage fails here, naming ``search.storage``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = create_or_load(search_cfg)
    if [d.name.lower() for d in study.directions] != list(search_cfg.directions):
        raise SearchError(f"search.directions differ from the stored study {study.study_name!r}")
    if not study.metric_names:
        _set_metric_names(study, list(search_cfg.objectives))
    return study


def create_or_load(search_cfg, **kwargs) -> optuna.Study:
    """``optuna.create_study`` on ``search.storage`` (made or loaded), ``kwargs`` its sampler and
    pruner; a storage that fails (server down, bad credentials, a corrupt file, a database that
    refuses the study's tables or rows) raises an error naming ``search.storage``."""
    storage = make_storage(search_cfg)
    try:
        return optuna.create_study(
            storage=storage,
            study_name=search_cfg.study_name,
            directions=list(search_cfg.directions),
            load_if_exists=True,
            **kwargs,
        )
    except storage_errors() as error:
        raise storage_failure(describe_storage(search_cfg), error) from None


def signature(parts: dict[str, Any]) -> str:
    """Digest of everything that makes trials comparable (data, model, training, space)."""
    return json_digest(parts, 16)


def open_study(search_cfg, seed: int, study_signature: str, space, budget=None,
               concurrent: bool = False) -> optuna.Study:  # fmt: skip
    """Create the study or load it to resume; refuse to mix trials of a different setup.
    ``budget`` (the run's ``TimeBudget``) and ``concurrent`` go to the sampler
    (``make_sampler``)."""
    if search_cfg.max_failures < 1:
        raise SearchError(f"search.max_failures={search_cfg.max_failures} must be at least 1")
    if len(search_cfg.objectives) != len(search_cfg.directions):
        raise SearchError("search.objectives and search.directions must have the same length")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, pruner = (
        make_sampler(search_cfg, seed, space, budget, concurrent),
        make_pruner(search_cfg),
    )
    study = create_or_load(search_cfg, sampler=sampler, pruner=pruner)
    existing = len(study.get_trials(deepcopy=False))
    worker = int(search_cfg.get("worker_index", 0))
    # The grid sampler's seed is the order of its grid, which every worker and every resume
    # must share: it maps trial numbers to points (two orders would give two workers a point).
    if (existing or worker) and search_cfg.sampler.name != "grid":
        # A resumed run must not replay the first run's random draws (they would all be
        # duplicates), nor may parallel workers draw alike: seed the sampler by the seed, how far
        # the study has come and the worker.
        study.sampler = make_sampler(
            search_cfg, seed + existing + 7919 * worker, space, budget, concurrent
        )
    stored = study.user_attrs.get("signature")
    if stored is None:  # a new study; the workers of one run may all get here at once
        set_shared_attr(study, "signature", study_signature)
        _set_metric_names(study, list(search_cfg.objectives))
    elif stored != study_signature:
        raise SearchError(
            f"search.study_name={search_cfg.study_name!r} already holds trials of a different "
            "setup (data, model, training, search space or seed changed). Choose a new "
            "search.study_name=NAME, or delete the study storage "
            f"({describe_storage(search_cfg)}) to start over"
        )
    elif [d.name.lower() for d in study.directions] != list(search_cfg.directions):
        raise SearchError(f"search.directions differ from the stored study {study.study_name!r}")
    return study
