"""The search space: its axes, their checks, and every way the sweep walks it.

``search.space`` holds the two main axes, ``embedding_dim`` and ``vocab_size`` (the cutoff K,
whose ``high: null`` means the full train vocabulary), and any number of extra axes, each naming
the config key it sets (``key: train.lr``; ``key: model`` searches the model itself). One
``SearchSpace`` checks them (before any data is read), clamps the cutoff to the vocabulary once
it is known, suggests a trial's values, lists the grid sampler's points and plan mode's points,
and turns a trial's values into the trial's config.
"""

from __future__ import annotations

import functools
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

MAIN_AXES = ("embedding_dim", "vocab_size")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class SearchError(ValueError):
    """A search config or study problem; the message names the key and what to do."""


@dataclass(frozen=True)
class Axis:
    """One searched key: its range (int, float) or its choices (categorical)."""

    name: str
    key: str  # the config key it sets (the main axes set themselves)
    kind: str = "int"  # int | float | categorical
    low: Any = None
    high: Any = None  # None: the full vocabulary (vocab_size only)
    log: bool = False
    choices: tuple = ()

    @classmethod
    def from_config(cls, name: str, spec) -> Axis:
        """The axis ``search.space.<name>``, checked; the error names the key."""
        key = f"search.space.{name}"
        kind = spec.get("type", "int")
        if name not in MAIN_AXES and not spec.get("key"):
            raise SearchError(f"{key}.key is missing: name the config key it sets, e.g. train.lr")
        if kind == "categorical":
            if not spec.get("choices"):
                raise SearchError(f"{key}.choices is empty: list at least one value")
            return cls(name, spec.get("key") or name, kind, choices=tuple(spec.choices))
        if kind not in ("int", "float"):
            raise SearchError(f"{key}.type={kind!r} is unknown: use int, float or categorical")
        low, high = spec.get("low"), spec.get("high")
        if low is None:
            raise SearchError(f"{key}.low is missing")
        if name in MAIN_AXES and low < 1:
            raise SearchError(f"{key}.low={low} is below 1: it must be at least 1")
        if spec.get("log") and low <= 0:
            raise SearchError(f"{key}.low={low} must be positive with log: true")
        if high is not None and low > high:
            raise SearchError(f"{key}: low={low} is above high={high}; swap them or fix one")
        if high is None and name != "vocab_size":
            raise SearchError(f"{key}.high is missing (only vocab_size may use null = full)")
        return cls(name, spec.get("key") or name, kind, low, high, bool(spec.get("log", False)))

    def check_value(self, value: Any) -> Any:
        """``value`` when this axis can take it (one of its choices, or a plain number of its
        type); else a ``SearchError``. A trial's values are read back from the study storage,
        which may be shared: a value that is not the axis's own never reaches the config."""
        if self.kind == "categorical":
            ok = any(type(value) is type(choice) and value == choice for choice in self.choices)
        elif self.kind == "int":
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        if not ok:
            shown = repr(value) if len(repr(value)) <= 80 else f"a {type(value).__name__}"
            raise SearchError(
                f"a stored trial's search.space.{self.name}={shown} is not a value this axis "
                "takes: the study storage holds trials of another setup or was changed by hand; "
                "choose a new search.study_name"
            )
        return value

    def bounds(self, full_vocab: int | None) -> tuple[Any, Any]:
        """(low, high), the cutoff's clamped to the ``full_vocab`` words of the train split."""
        if self.name != "vocab_size" or full_vocab is None:
            return self.low, self.high
        high = full_vocab if self.high is None else min(self.high, full_vocab)
        return min(self.low, high), high

    def points(self, count: int, full_vocab: int | None) -> list:
        """``count`` values spanning the axis, both ends included (log-spaced with ``log``);
        every choice of a categorical axis."""
        if self.kind == "categorical":
            return list(self.choices)
        low, high = self.bounds(full_vocab)
        spread = np.geomspace if self.log else np.linspace
        values = spread(low, high, max(count, 2))
        if self.kind == "float":
            return sorted({float(v) for v in values})
        return sorted({int(round(v)) for v in values})


class SearchSpace:
    """The axes of ``search.space`` in their order; ``full_vocab`` clamps the cutoff."""

    def __init__(self, space_cfg, full_vocab: int | None = None):
        for axis in MAIN_AXES:
            if axis not in space_cfg:
                raise SearchError(f"search.space.{axis} is missing: the sweep needs both main axes")
        self.axes = [Axis.from_config(name, spec) for name, spec in space_cfg.items()]
        self.full_vocab = full_vocab

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.axes]

    def keys(self) -> dict[str, str]:
        """Search name -> config key (the main axes map to themselves)."""
        return {a.name: a.key for a in self.axes}

    def with_vocabulary(self, full_vocab: int) -> SearchSpace:
        """This space with the cutoff clamped to the train vocabulary; logs where it was."""
        cutoff = next(a for a in self.axes if a.name == "vocab_size")
        if cutoff.high is not None and cutoff.high > full_vocab:
            log.warning(
                "search.space.vocab_size.high=%d is above the %d words of the train split; "
                "clamped to %d", cutoff.high, full_vocab, full_vocab,
            )  # fmt: skip
        if cutoff.low > full_vocab:
            log.warning(
                "search.space.vocab_size.low=%d is above the train vocabulary (%d); every trial "
                "keeps the full vocabulary", cutoff.low, full_vocab,
            )  # fmt: skip
        space = object.__new__(SearchSpace)
        space.axes, space.full_vocab = self.axes, full_vocab
        return space

    def suggest(self, trial, grid: dict[str, list] | None = None) -> dict[str, Any]:
        """Suggest every axis from an Optuna trial; with a ``grid`` (the grid sampler's value
        lists) each range spans its list instead."""
        params: dict[str, Any] = {}
        for axis in self.axes:
            if axis.kind == "categorical":
                params[axis.name] = trial.suggest_categorical(axis.name, list(axis.choices))
                continue
            low, high = axis.low, axis.high
            if grid is not None:
                low, high = min(grid[axis.name]), max(grid[axis.name])
            if axis.name == "vocab_size":
                high = self.full_vocab if high is None else min(high, self.full_vocab)
                low = min(low, high)
            suggest = trial.suggest_int if axis.kind == "int" else trial.suggest_float
            params[axis.name] = suggest(axis.name, low, high, log=axis.log)
        return params

    def grid(self, values) -> dict[str, list]:
        """The grid sampler's value lists (``search.sampler.values``), ``null`` cutoffs resolved
        to the full vocabulary."""
        values = values or {}
        missing = [name for name in self.names if name not in values]
        unknown = [name for name in values if name not in self.names]
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
                full = self.full_vocab
                choices = sorted({full if v is None else min(int(v), full) for v in choices})
            grid[name] = choices
        return grid

    def plan_points(self, count: int) -> list[dict[str, Any]]:
        """Every combination of ``count`` values per axis (every choice of a categorical one),
        the last axis varying fastest: plan mode's grid."""
        lists = [axis.points(count, self.full_vocab) for axis in self.axes]
        return [dict(zip(self.names, values, strict=True)) for values in itertools.product(*lists)]

    def trial_config(self, cfg: DictConfig, params: dict[str, Any]) -> DictConfig:
        """A copy of ``cfg`` with the trial's extra axes set at their config keys; ``key: model``
        replaces ``cfg.model`` by the named ``model=`` option as Hydra composes it."""
        trial_cfg = cfg.copy()
        for axis in self.axes:
            if axis.name in params:
                axis.check_value(params[axis.name])
            if axis.name in MAIN_AXES or axis.name not in params:
                continue
            if axis.key == "model":
                trial_cfg.model = model_option(str(params[axis.name]))
            else:
                OmegaConf.update(trial_cfg, axis.key, params[axis.name], merge=False)
        return trial_cfg


def model_option(name: str) -> DictConfig:
    """The ``model=<name>`` config group option, composed by Hydra (its defaults list merged)."""
    return _composed_model(name).copy()


@functools.lru_cache(maxsize=32)
def _composed_model(name: str) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException

    options = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
    if name not in options:
        raise ValueError(f"search.space: model {name!r} is not an option of model/ ({options})")
    try:
        if GlobalHydra.instance().is_initialized():  # inside run_sweep.py's @hydra.main
            composed = compose(config_name="sweep", overrides=[f"model={name}"])
        else:
            with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
                composed = compose(config_name="sweep", overrides=[f"model={name}"])
    except MissingConfigException as error:
        raise ValueError(f"search.space: model {name!r}: {error}") from None
    return composed.model
