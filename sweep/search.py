"""Stage 6, search: the Optuna study (storage, sampler, pruner) and the search space.

With ``sweep.trials`` (the trial loop and its records) the only code that imports optuna.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import warnings
from typing import Any

import optuna

from sweep.storage import describe_storage, make_storage, storage_errors, storage_failure

log = logging.getLogger(__name__)

MAIN_AXES = ("embedding_dim", "vocab_size")


class SearchError(ValueError):
    """A search config or study problem; the message names the key and what to do."""


# Study names become folder names (the default journal, the run folder): one path component.
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=,+\-]{0,199}")


def check_study_name(name) -> None:
    """A study name is one folder name: letters, digits and ``. _ = , + -``, no ``..``."""
    text = str(name)
    if not _STUDY_NAME.fullmatch(text) or ".." in text:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise SearchError(
            f"search.study_name={shown!r} is not allowed: use up to 200 letters, digits and "
            "'. _ = , + -', starting with a letter or digit, without '..' or path separators "
            "(the name becomes a folder under search.storage_dir)"
        )


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


def suggest(
    trial: optuna.Trial, space, full_vocab_size: int, grid: dict[str, list] | None = None
) -> dict[str, Any]:
    """Suggest every key of the space; vocab_size ranges are clamped to the train vocabulary.

    With a ``grid`` (the grid sampler's value lists) each range spans its list instead.
    """
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec.get("type", "int")
        if kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec.choices))
            continue
        low, high = spec.low, spec.high
        if grid is not None:
            low, high = min(grid[name]), max(grid[name])
        if name == "vocab_size":
            high = full_vocab_size if high is None else min(high, full_vocab_size)
            low = min(low, high)
        suggest_fn = trial.suggest_int if kind == "int" else trial.suggest_float
        params[name] = suggest_fn(name, low, high, log=bool(spec.get("log", False)))
    return params


def grid_values(search_cfg, full_vocab_size: int) -> dict[str, list]:
    """The grid sampler's value lists, ``null`` vocab sizes resolved to the full vocabulary."""
    values = search_cfg.sampler.get("values") or {}
    missing = [name for name in search_cfg.space if name not in values]
    unknown = [name for name in values if name not in search_cfg.space]
    if missing or unknown:
        raise SearchError(
            f"search.sampler.values must list every key of search.space and no other; "
            f"missing {missing}, unknown {unknown}"
        )
    grid = {}
    for name, choices in values.items():
        choices = list(choices)
        if not choices:
            raise SearchError(f"search.sampler.values.{name} is empty: list at least one value")
        if name == "vocab_size":
            choices = sorted({full_vocab_size if v is None else min(int(v), full_vocab_size)
                              for v in choices})  # fmt: skip
        grid[name] = choices
    return grid


TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


def _budget_constraint(trial: optuna.trial.FrozenTrial) -> list[float]:
    return [float(trial.user_attrs.get("budget_excess", 0.0))]


def make_sampler(search_cfg, seed: int, full_vocab_size: int) -> optuna.samplers.BaseSampler:
    """The sampler preset ``search.sampler`` (search/sampler=tpe|nsga2|random|qmc|grid), seeded.

    Its settings come from the preset's YAML (configs/search/sampler/), the one place they are set.
    """
    sampler_cfg = search_cfg.sampler
    name = sampler_cfg.name
    # With a budget the model-based samplers learn its border from each trial's budget_excess
    # (Optuna constraints: > 0 is infeasible), so over-budget regions stop being suggested.
    budgets = (
        search_cfg.get("max_params") is not None or search_cfg.get("max_memory_mb") is not None
    )
    # Optuna >= 5 reads them from Trial.set_constraint (set by the trial loop); older releases
    # need the constraints_func.
    constraints = _budget_constraint if budgets and not TRIAL_CONSTRAINTS else None
    factories = {
        "tpe": lambda: optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=sampler_cfg.n_startup_trials,
            constraints_func=constraints,
        ),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(
            seed=seed,
            population_size=sampler_cfg.population_size,
            constraints_func=constraints,
        ),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(
            qmc_type=sampler_cfg.qmc_type, scramble=True, seed=seed
        ),
        "grid": lambda: optuna.samplers.GridSampler(
            grid_values(search_cfg, full_vocab_size), seed=seed
        ),
    }
    if name in factories:
        with warnings.catch_warnings():  # experimental-API notes of QMC and constraints
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return factories[name]()
    raise SearchError(
        f"search.sampler.name={name!r} is unknown: use search/sampler=tpe|nsga2|random|qmc|grid"
    )


def grid_size(search_cfg, full_vocab_size: int) -> int | None:
    """Number of distinct points of a grid sampler (None for other samplers)."""
    if search_cfg.sampler.name != "grid":
        return None
    return math.prod(len(v) for v in grid_values(search_cfg, full_vocab_size).values())


def make_pruner(search_cfg) -> optuna.pruners.BasePruner:
    """The pruner preset ``search.pruner`` (search/pruner=none|median|hyperband)."""
    pruner_cfg = search_cfg.get("pruner")
    name = pruner_cfg.name if pruner_cfg else "none"
    if name == "none":
        return optuna.pruners.NopPruner()
    if len(search_cfg.directions) > 1:
        raise SearchError(
            f"search.pruner={name} but the study has several objectives; Optuna prunes "
            "single-objective studies only: use search=accuracy or search/pruner=none"
        )
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner_cfg.n_startup_trials,
            n_warmup_steps=pruner_cfg.n_warmup_steps,
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner_cfg.min_resource,
            reduction_factor=pruner_cfg.reduction_factor,
        )
    raise SearchError(f"search.pruner.name={name!r} is unknown: use none, median or hyperband")


def signature(parts: dict[str, Any]) -> str:
    """Digest of everything that makes trials comparable (data, model, training, space)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_study(search_cfg, seed: int, study_signature: str, full_vocab_size: int) -> optuna.Study:
    """Create the study or load it to resume; refuse to mix trials of a different setup."""
    if search_cfg.max_failures < 1:
        raise SearchError(f"search.max_failures={search_cfg.max_failures} must be at least 1")
    if len(search_cfg.objectives) != len(search_cfg.directions):
        raise SearchError("search.objectives and search.directions must have the same length")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, pruner = make_sampler(search_cfg, seed, full_vocab_size), make_pruner(search_cfg)
    storage = make_storage(search_cfg)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=search_cfg.study_name,
            directions=list(search_cfg.directions),
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except storage_errors() as error:  # server down, bad credentials, a corrupt file
        raise storage_failure(describe_storage(search_cfg), error) from None
    existing = len(study.get_trials(deepcopy=False))
    worker = int(search_cfg.get("worker_index", 0))
    if existing or worker:
        # A resumed run must not replay the first run's random draws (they would all be
        # duplicates), nor may parallel workers draw alike: seed the sampler by the seed, how far
        # the study has come and the worker.
        study.sampler = make_sampler(search_cfg, seed + existing + 7919 * worker, full_vocab_size)
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
