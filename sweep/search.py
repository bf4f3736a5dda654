"""Stage 6, search: the Optuna study (storage, sampler, pruner), the trial loop and its records.

The only module that imports optuna. Every figure a trial measures is stored as a user attribute,
so ``trials_frame`` can rebuild every report from the storage alone. The loop is ask/tell: a trial
that raises is told FAIL with its reason, a pruned one PRUNED with its epoch, and the sweep goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

log = logging.getLogger(__name__)

MAIN_AXES = ("embedding_dim", "vocab_size")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class SearchError(ValueError):
    """A search config or study problem; the message names the key and what to do."""


def hide_password(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def check_space(space) -> None:
    """Fail early on an impossible search space, naming the key."""
    for axis in MAIN_AXES:
        if axis not in space:
            raise SearchError(f"search.space.{axis} is missing: the sweep needs both main axes")
    for name, spec in space.items():
        key = f"search.space.{name}"
        kind = spec.get("type", "int")
        if name not in MAIN_AXES and not spec.get("key"):
            raise SearchError(f"{key}.key is missing: name the config key it sets, e.g. train.lr")
        if kind == "categorical":
            if not spec.get("choices"):
                raise SearchError(f"{key}.choices is empty: list at least one value")
            continue
        if kind not in ("int", "float"):
            raise SearchError(f"{key}.type={kind!r} is unknown: use int, float or categorical")
        low, high = spec.get("low"), spec.get("high")
        if low is None:
            raise SearchError(f"{key}.low is missing")
        minimum = 1 if name in MAIN_AXES else None
        if minimum is not None and low < minimum:
            raise SearchError(f"{key}.low={low} is below {minimum}: it must be at least {minimum}")
        if spec.get("log") and low <= 0:
            raise SearchError(f"{key}.low={low} must be positive with log: true")
        if high is not None and low > high:
            raise SearchError(f"{key}: low={low} is above high={high}; swap them or fix one")
        if high is None and name != "vocab_size":
            raise SearchError(f"{key}.high is missing (only vocab_size may use null = full)")


def suggest(trial: optuna.Trial, space, full_vocab_size: int) -> dict[str, Any]:
    """Suggest every key of the space; vocab_size ranges are clamped to the train vocabulary."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec.get("type", "int")
        if kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec.choices))
            continue
        low, high = spec.low, spec.high
        if name == "vocab_size":
            high = full_vocab_size if high is None else min(high, full_vocab_size)
            low = min(low, high)
        suggest_fn = trial.suggest_int if kind == "int" else trial.suggest_float
        params[name] = suggest_fn(name, low, high, log=bool(spec.get("log", False)))
    return params


def make_storage(search_cfg) -> optuna.storages.BaseStorage | str:
    """The study storage: a journal file per study by default, else the configured URL."""
    url = search_cfg.get("storage")
    if url:
        if "://" in url:
            return url  # sqlite:///..., postgresql://..., mysql://...: Optuna's RDB storage
        return journal_storage(Path(url))
    folder = Path(search_cfg.storage_dir).expanduser() / search_cfg.study_name
    return journal_storage(folder / "journal.log")


def journal_storage(path: Path) -> optuna.storages.JournalStorage:
    """A journal file storage: safe for several processes on one machine (file lock)."""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path.parent.mkdir(parents=True, exist_ok=True)
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return optuna.storages.JournalStorage(backend)


def describe_storage(search_cfg) -> str:
    """Where the study lives, for logs and reports (passwords hidden)."""
    url = search_cfg.get("storage")
    if url:
        return hide_password(str(url))
    return str(Path(search_cfg.storage_dir).expanduser() / search_cfg.study_name / "journal.log")


def make_sampler(search_cfg, seed: int) -> optuna.samplers.BaseSampler:
    sampler_cfg = search_cfg.sampler
    name = sampler_cfg.name
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=sampler_cfg.get("n_startup_trials", 10)
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(f"search.sampler.name={name!r} is unknown: use tpe or random")


def make_pruner(search_cfg) -> optuna.pruners.BasePruner:
    pruner_cfg = search_cfg.get("pruner")
    if not pruner_cfg:
        return optuna.pruners.NopPruner()
    if len(search_cfg.directions) > 1:
        raise SearchError(
            "search.pruner is set but the study has several objectives; Optuna prunes "
            "single-objective studies only: use search=accuracy or search.pruner=null"
        )
    if pruner_cfg.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner_cfg.get("n_startup_trials", 5),
            n_warmup_steps=pruner_cfg.get("n_warmup_steps", 0),
        )
    raise SearchError(f"search.pruner.name={pruner_cfg.name!r} is unknown: use median or null")


def signature(parts: dict[str, Any]) -> str:
    """Digest of everything that makes trials comparable (data, model, training, space)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_study(search_cfg, seed: int, study_signature: str) -> optuna.Study:
    """Create the study or load it to resume; refuse to mix trials of a different setup."""
    if search_cfg.max_failures < 1:
        raise SearchError(f"search.max_failures={search_cfg.max_failures} must be at least 1")
    if len(search_cfg.objectives) != len(search_cfg.directions):
        raise SearchError("search.objectives and search.directions must have the same length")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=make_storage(search_cfg),
        study_name=search_cfg.study_name,
        directions=list(search_cfg.directions),
        sampler=make_sampler(search_cfg, seed),
        pruner=make_pruner(search_cfg),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("signature")
    if stored is None:
        study.set_user_attr("signature", study_signature)
        with warnings.catch_warnings():  # experimental in Optuna 3.2+, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(search_cfg.objectives))
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


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_trials(
    study: optuna.Study,
    search_cfg,
    *,
    full_vocab_size: int,
    describe: Callable[[dict[str, Any]], dict[str, Any]],
    evaluate: Callable[[dict[str, Any], Callable[[int, float], None]], dict[str, Any]],
    after_trial: Callable[[optuna.trial.FrozenTrial, int], None],
) -> int:
    """Run trials until the study has ``search.n_trials`` finished; return how many ran here.

    ``describe(params)`` gives the figures known before training (stored even if the trial
    fails); ``evaluate(params, on_epoch)`` trains and returns the measured figures;
    ``after_trial(frozen_trial, finished_count)`` runs after each trial (reports, progress).
    """
    objectives = list(search_cfg.objectives)
    single = len(objectives) == 1
    failures = ran = 0
    while count_finished(study) < search_cfg.n_trials:
        trial = study.ask()
        ran += 1
        state, values = optuna.trial.TrialState.FAIL, None
        try:
            params = suggest(trial, search_cfg.space, full_vocab_size)
            figures = describe(params)
            for key, value in figures.items():
                trial.set_user_attr(key, value)

            def on_epoch(epoch: int, val_accuracy: float, trial=trial) -> None:
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
            state = optuna.trial.TrialState.COMPLETE
        except optuna.TrialPruned:
            state = optuna.trial.TrialState.PRUNED
        except Exception as error:  # recorded with its reason; the sweep goes on
            failures += 1
            reason = f"{type(error).__name__}: {error}"
            trial.set_user_attr("fail_reason", reason[:2000])
            log.warning("trial %d failed: %s", trial.number, reason)
        study.tell(trial, values if state == optuna.trial.TrialState.COMPLETE else None, state)
        after_trial(study.get_trials(deepcopy=False)[trial.number], count_finished(study))
        if failures >= search_cfg.max_failures:
            raise SearchError(
                f"{failures} trials failed in this run (search.max_failures="
                f"{search_cfg.max_failures}); the last: {reason}. Fix the cause (fail_reason "
                "in trials.csv) or raise search.max_failures"
            )
    return ran


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial of every state: number, state, params, user attributes, timing."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name}
        row.update(trial.user_attrs)
        row.update(trial.params)
        row["datetime_start"] = trial.datetime_start
        duration = trial.duration
        row["duration_seconds"] = duration.total_seconds() if duration else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
