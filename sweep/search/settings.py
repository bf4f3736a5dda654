"""Stage 6, search: the sampler and the pruner, built from their presets' YAML, and the budgets.

The sampler presets (configs/search/sampler/) and pruner presets (configs/search/pruner/) hold
every setting; ``make_sampler`` and ``make_pruner`` are the one table from a preset's name to its
Optuna class. The study itself is ``sweep.search.study``, the space ``sweep.search.space``.
"""

from __future__ import annotations

import logging
import math
import re
import warnings

import optuna

from sweep.common.stop import TimeBudget
from sweep.schema import PRECISIONS, file_bytes_column
from sweep.search.ehvi import FrontGainSampler
from sweep.search.pruning import size_rule
from sweep.search.space import MAIN_AXES, SearchError, SearchSpace

# The budgets (search.<limit>) and the trial column each one limits; file_bytes is the column of
# search.precision (file_bytes_int8, ...), with precision=best the smallest (int4) file's.
BUDGETS = (
    ("max_params", "params_total"),
    ("max_memory_mb", "memory_mb"),
    ("max_model_bytes", "file_bytes"),
)
SHIP_PRECISIONS = ("best", *PRECISIONS)  # search.precision


def _limit(search_cfg, key: str):
    """A budget's value; ``search.max_memory_mb=auto`` is no budget of the user's but the
    device's own bound (``sweep.search.loop.MemoryRoom``), so it counts as none here."""
    value = search_cfg.get(key)
    return None if value == "auto" else value


def has_budget(search_cfg) -> bool:
    return any(_limit(search_cfg, limit) is not None for limit, _ in BUDGETS)


def check_memory_budget(search_cfg) -> None:
    """``search.max_memory_mb``: auto, null or a positive number of MiB."""
    value = search_cfg.get("max_memory_mb")
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if not (value in ("auto", None) or number):
        raise SearchError(
            f"search.max_memory_mb={value!r} must be auto (what the device has), a positive "
            "number of MiB, or null (no bound)"
        )


_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9}


def parse_bytes(value, key: str = "search.max_model_bytes") -> float:
    """A byte count: a number, or a string with a decimal unit as fastText writes its budgets
    (``100K``, ``1MB``, ``2M``: 1 KB = 1000 bytes)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]?B?)\s*", str(value).upper())
    if isinstance(value, bool) or match is None or float(match[1]) <= 0:
        raise SearchError(
            f"{key}={value!r} must be a positive byte count: a number or e.g. 100KB, 1MB "
            "(decimal units), or null"
        )
    return float(match[1]) * _UNITS[match[2]]


def budgets(search_cfg) -> list[tuple[str, float, str]]:
    """(search key, limit, trial column) of each budget set."""
    precision = search_cfg.get("precision", "best")
    out = []
    for key, column in BUDGETS:
        limit = _limit(search_cfg, key)
        if limit is None:
            continue
        if column == "file_bytes":
            column = file_bytes_column("int4" if precision == "best" else precision)
            limit = parse_bytes(limit)
        out.append((key, float(limit), column))
    return out


def check_shipping(search_cfg) -> None:
    """``search.precision`` and ``search.max_model_bytes`` are usable (else a SearchError)."""
    precision = search_cfg.get("precision", "best")
    if precision not in SHIP_PRECISIONS:
        raise SearchError(
            f"search.precision={precision!r} must be one of {', '.join(SHIP_PRECISIONS)}"
        )
    if search_cfg.get("max_model_bytes") is not None:
        parse_bytes(search_cfg.max_model_bytes)


log = logging.getLogger(__name__)


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


TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


def _budget_constraint(trial: optuna.trial.FrozenTrial) -> list[float]:
    return [float(trial.user_attrs.get("budget_excess", 0.0))]


def make_sampler(
    search_cfg,
    seed: int,
    space: SearchSpace,
    budget: TimeBudget | None = None,
    concurrent: bool = False,
) -> optuna.samplers.BaseSampler:
    """The sampler preset ``search.sampler`` (search/sampler=tpe|nsga2|random|qmc|grid|ehvi), seeded.

    Its settings come from the preset's YAML (configs/search/sampler/), the one place they are set.
    ``budget``: the run's time budget, which ``ehvi`` plans within. ``concurrent``: this process
    asks trials while others of its own still train (side by side, ``processes``).
    """
    sampler_cfg = search_cfg.sampler
    name = sampler_cfg.name
    # With a budget the model-based samplers learn its border from each trial's budget_excess
    # (Optuna constraints: > 0 is infeasible), so over-budget regions stop being suggested.
    budgets = has_budget(search_cfg)
    # Optuna >= 5 reads them from Trial.set_constraint (set by the trial loop); older releases
    # need the constraints_func.
    constraints = _budget_constraint if budgets and not TRIAL_CONSTRAINTS else None
    factories = {
        "tpe": lambda: optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=sampler_cfg.n_startup_trials,
            constraints_func=constraints,
            # Packs ask several trials before telling any, and trials side by side ask while
            # others train: treat those running as bad, so they differ (Optuna's constant liar).
            constant_liar=pack_size(search_cfg) > 1 or concurrent,
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
            space.grid(sampler_cfg.get("values")), seed=seed
        ),
        "ehvi": lambda: front_gain_sampler(search_cfg, seed, space, budget),
    }
    if name in factories:
        with warnings.catch_warnings():  # experimental-API notes of QMC and constraints
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return factories[name]()
    raise SearchError(
        f"search.sampler.name={name!r} is unknown: use search/sampler=tpe|nsga2|random|qmc|grid|"
        "ehvi"
    )


def front_gain_sampler(
    search_cfg, seed: int, space: SearchSpace, budget: TimeBudget | None = None
) -> FrontGainSampler:
    """``search/sampler=ehvi``, checked: it models the two main axes as numbers, a quality
    objective and at most one size objective to minimise."""
    for axis in space.axes:
        if axis.name in MAIN_AXES and axis.kind == "categorical":
            raise SearchError(
                f"search.space.{axis.name} is categorical, but search/sampler=ehvi models it as a "
                "number: give it type int with low and high, or use search/sampler=tpe"
            )
    objectives, directions = list(search_cfg.objectives), list(search_cfg.directions)
    if len(objectives) > 2 or (len(objectives) == 2 and directions[1] != "minimize"):
        raise SearchError(
            f"search/sampler=ehvi needs search.objectives=[quality] or [quality, size] with the "
            f"size minimised; got {objectives} {directions}: use search/sampler=tpe or nsga2"
        )
    sampler_cfg = search_cfg.sampler
    for key, least in (("n_startup_trials", 2), ("candidates", 2)):
        value = sampler_cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SearchError(f"search.sampler.{key}={value!r} must be an integer >= {least}")
    width = sampler_cfg.get("startup_width", 0.5)
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0 < width <= 1:
        raise SearchError(
            f"search.sampler.startup_width={width!r} must be a number in (0, 1]: the share of "
            "the embedding_dim axis (log scale, from its low end) the startup trials draw from"
        )
    limits = [(column, limit) for _, limit, column in budgets(search_cfg)]
    return FrontGainSampler(objectives=objectives, directions=directions, seed=seed,
                            n_startup_trials=sampler_cfg.n_startup_trials,
                            candidates=sampler_cfg.candidates,
                            startup_width=width,
                            limits=limits, budget=budget)  # fmt: skip


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_parallel(search_cfg) -> None:
    """``search.workers``, ``search.trials_per_gpu``, ``search.timeout_s`` and
    ``search.timeout_grace_s`` are usable (else a SearchError naming the key), before any
    worker starts."""
    workers = search_cfg.get("workers", 1)
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int)
                              or workers < 1):  # fmt: skip
        raise SearchError(
            f"search.workers={workers!r} must be an integer >= 1 (processes sharing the study) "
            "or auto (search.trials_per_gpu per GPU)"
        )
    per_gpu = search_cfg.get("trials_per_gpu", 1)
    if isinstance(per_gpu, bool) or not isinstance(per_gpu, int) or per_gpu < 1:
        raise SearchError(f"search.trials_per_gpu={per_gpu!r} must be an integer >= 1")
    timeout = search_cfg.get("timeout_s")
    if timeout is not None and not (_is_number(timeout) and timeout > 0):
        raise SearchError(
            f"search.timeout_s={timeout!r} must be a number of seconds > 0 (the run's time "
            "budget), or null for none"
        )
    grace = search_cfg.get("timeout_grace_s")
    if grace is not None and not (_is_number(grace) and grace >= 0):
        raise SearchError(
            f"search.timeout_grace_s={grace!r} must be a number of seconds >= 0 (how long "
            "trials may train past search.timeout_s), or null to let them finish"
        )


def pack_size(search_cfg, packable: bool = True) -> int:
    """``search.pack`` as a number: trials asked and trained together (``auto``: 4 where the
    model packs, the size that kept the front on 2 CPU cores; docs/benchmarks.md "Packed trials")."""
    pack = search_cfg.get("pack", 1)
    if pack == "auto":
        return 4 if packable else 1
    if not isinstance(pack, int) or pack < 1:
        raise SearchError(f"search.pack={pack!r} must be an integer >= 1 or auto")
    return pack


def pack_padding(search_cfg) -> float:
    """``search.pack_padding``: how many times its trials' own tables (rows x width summed) a
    pack's tables, padded to its widest trial, may hold before it is split by width (1.5 where
    the key is absent: the bound measured on 2 CPU cores, where padding is arithmetic)."""
    padding = search_cfg.get("pack_padding", 1.5)
    if isinstance(padding, bool) or not isinstance(padding, (int, float)) or not padding >= 1:
        raise SearchError(
            f"search.pack_padding={padding!r} must be a number >= 1 (1: only equal widths share "
            "a pack; larger: wider packs, more padding)"
        )
    return float(padding)


def grid_size(search_cfg, space: SearchSpace) -> int | None:
    """Number of distinct points of a grid sampler (None for other samplers)."""
    if search_cfg.sampler.name != "grid":
        return None
    return math.prod(len(v) for v in space.grid(search_cfg.sampler.get("values")).values())


def make_pruner(search_cfg) -> optuna.pruners.BasePruner:
    """Optuna's pruner for the preset ``search.pruner`` (search/pruner=none|size|median|
    hyperband). ``size`` is no Optuna pruner: the trial loop applies it after each epoch
    (``sweep.search.pruning``), in a study of any number of objectives."""
    pruner_cfg = search_cfg.get("pruner")
    name = pruner_cfg.name if pruner_cfg else "none"
    if name == "size":
        size_rule(search_cfg)  # its keys checked before any trial runs
    if name in ("none", "size"):
        return optuna.pruners.NopPruner()
    if len(search_cfg.directions) > 1:
        raise SearchError(
            f"search.pruner={name} but the study has several objectives; Optuna prunes "
            "single-objective studies only: use search/pruner=size (size-aware, any number of "
            "objectives), search=accuracy or search/pruner=none"
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
    raise SearchError(
        f"search.pruner.name={name!r} is unknown: use none, size, median or hyperband"
    )
