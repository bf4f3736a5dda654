"""The trial record: every column a trial has, in one list.

trials.csv, pareto.csv and plan.csv, the page's tables and the per-seed figures are all derived
from ``COLUMNS``, parsed from the table below; adding a column to the reports is one line of it
(and, for a column computed from the others, its function in ``_DERIVED``). A column is known at one of
these moments:

- ``sizes``: from the sampled parameters alone, before training (``Trial.describe``); plan mode
  writes these;
- ``trained``: measured by training (``Trial.train``);
- ``study``: the study's bookkeeping (state, reasons, seed repeats, timing in the storage);
- ``report``: computed by the report from the other columns (the front, the recommendation).

``Objectives`` says which columns the study optimises (``search.objectives``) and how the report
ranks by them.

A column with ``derive`` is computed from the other columns of a row when the report is built, so
it appears for studies stored before it existed, too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    known: str  # sizes | trained | study | report (see the module docstring)
    shown: bool = False  # in the page's trial tables
    plan: bool = False  # in plan.csv (plan=true: sizes only, no training)
    per_seed: bool = False  # measured again by each seed repeat: *_mean and *_std columns
    derive: Callable[[pd.Series], Any] | None = None


# name                    known    where it goes besides trials.csv
_TABLE = """
trial                     study    shown
state                     study    shown
fail_reason               study
embedding_dim             sizes    shown plan
vocab_size                sizes    shown plan
num_embeddings            sizes    shown plan
hash_buckets              sizes
min_freq                  sizes    shown
train_coverage            sizes    shown plan
val_oov_rate              sizes    shown plan
params_total              sizes    shown plan
params_embedding          sizes    shown plan
embedding_share           sizes    plan
model_mb                  sizes    shown plan
embedding_mb_fp32         sizes    plan
embedding_mb_fp16         sizes    plan
embedding_mb_int8         sizes    plan
rest_mb_fp32              sizes    plan
rest_mb_fp16              sizes    plan
rest_mb_int8              sizes    plan
file_bytes_fp32           sizes    plan
file_bytes_fp16           sizes    plan
file_bytes_int8           sizes    plan
file_bytes_int4           sizes    plan
val_accuracy              trained  shown per_seed
test_accuracy             trained  shown per_seed
val_accuracy_mean         study    shown
val_accuracy_std          study    shown
test_accuracy_mean        study
test_accuracy_std         study
val_accuracy_fp16         trained
test_accuracy_fp16        trained
val_accuracy_int8         trained
test_accuracy_int8        trained
val_accuracy_int4         trained
test_accuracy_int4        trained
ship_precision            report   shown
ship_bytes                report   shown
ship_val_accuracy         report
ship_test_accuracy        report
seeds                     study    shown
val_loss                  trained  shown
epochs                    trained  shown
best_epoch                trained
pruned_epoch              study
reused_from               study
pack                      trained
train_seconds             trained  shown
cutoff_seconds            trained
tokens_per_second         trained  shown
examples_per_second       trained
eval_tokens_per_second    trained
eval_examples_per_second  trained
gpu_peak_mb               trained  shown
gpu_baseline_mb           trained
gpu_reserved_mb           trained
probe_peak_mb             sizes    shown
est_peak_mb               sizes    shown plan
est_baseline_mb           sizes    plan
memory_mb                 sizes    plan
est_embedding_mb          sizes    plan
budget_excess             sizes
device                    sizes
seed                      sizes
model                     sizes
pareto                    report   shown
recommended               report   shown
datetime_start            study
duration_seconds          study
"""


# Columns the report computes from the others of their row (their line above says where they go),
# e.g. "params_rest": lambda row: row["params_total"] - row["params_embedding"].
_DERIVED: dict[str, Callable[[pd.Series], Any]] = {}


def _parse(table: str) -> list[Column]:
    columns = []
    for line in table.strip().splitlines():
        name, known, *flags = line.split()
        columns.append(Column(name, known, derive=_DERIVED.get(name), **dict.fromkeys(flags, True)))
    return columns


COLUMNS: list[Column] = _parse(_TABLE)  # trials.csv order

NAMES: list[str] = [c.name for c in COLUMNS]
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
PER_SEED: list[str] = [c.name for c in COLUMNS if c.per_seed]
# Plan mode only: whether a point breaks a budget.
PLAN_FLAGS = ["over_max_params", "over_max_memory_mb", "over_max_model_bytes"]


def names(*, known: str | None = None, shown: bool | None = None, plan: bool | None = None):
    """Column names, in trials.csv order, filtered by when they are known and where they go."""
    return [
        c.name
        for c in COLUMNS
        if (known is None or c.known == known)
        and (shown is None or c.shown == shown)
        and (plan is None or c.plan == plan)
    ]


def with_axes(columns: list[str], axes: list[str]) -> list[str]:
    """``columns`` with the searched ``axes`` that are not columns already placed after
    ``vocab_size`` (or at the end when it is absent)."""
    extra = [a for a in axes if a not in columns and a not in BY_NAME]
    at = columns.index("vocab_size") + 1 if "vocab_size" in columns else len(columns)
    return columns[:at] + extra + columns[at:]


def check_record(record: dict[str, Any], known: str) -> None:
    """A trial stage returned only columns of its moment (a programming error otherwise)."""
    stray = [k for k in record if k in BY_NAME and BY_NAME[k].known != known]
    unknown = [k for k in record if k not in BY_NAME and k not in _UNLISTED]
    if stray or unknown:
        raise AssertionError(
            f"{known} record has columns of other moments {stray} or unlisted {unknown}"
        )


@dataclass(frozen=True)
class Objectives:
    """What the study optimises (``search.objectives`` and ``search.directions``), as the report
    reads it: the first is the quality (the tolerance is in its units), the second, if any, the
    size the recommendation minimises among the trials that tie on quality."""

    names: tuple[str, ...] = ("val_accuracy", "params_total")
    directions: tuple[str, ...] = ("maximize", "minimize")

    @classmethod
    def of(cls, pairs) -> Objectives:
        """From ``[[name, direction], ...]`` (the stored page context); the default if empty."""
        pairs = [tuple(p) for p in (pairs or [])]
        if not pairs:
            return cls()
        return cls(tuple(str(n) for n, _ in pairs), tuple(str(d).lower() for _, d in pairs))

    def pairs(self) -> list[list[str]]:
        return [[n, d] for n, d in zip(self.names, self.directions, strict=True)]

    @property
    def quality(self) -> str:
        return self.names[0]

    @property
    def size(self) -> str | None:
        return self.names[1] if len(self.names) > 1 else None

    @classmethod
    def from_search(cls, search_cfg) -> Objectives:
        """From ``cfg.search`` (``objectives`` and ``directions``)."""
        return cls(
            tuple(search_cfg.objectives), tuple(str(d).lower() for d in search_cfg.directions)
        )

    def higher_is_better(self, name: str) -> bool:
        return self.directions[self.names.index(name)] == "maximize"

    def score(self, done: pd.DataFrame) -> pd.Series:
        """The first objective, its mean over seeds where retrained, oriented so higher is
        better: what the recommendation and the seed repeats rank by."""
        score = done[self.quality]
        if f"{self.quality}_mean" in done:
            score = done[f"{self.quality}_mean"].fillna(score)
        return score.astype(float) * (1.0 if self.higher_is_better(self.quality) else -1.0)


DEFAULT_OBJECTIVES = Objectives()  # validation accuracy up, params_total down


# Stored with a trial but not report columns: the search's own bookkeeping.
_UNLISTED = {"val_history", "worker", "heartbeat", "skipped_reason", "out_of_memory"}


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every schema column (missing ones NaN, derived ones computed), in order,
    followed by the columns the schema does not list (extra searched keys, bookkeeping)."""
    frame = frame.copy()
    for column in COLUMNS:
        if column.derive is not None and len(frame):
            frame[column.name] = frame.apply(column.derive, axis=1)
        elif column.name not in frame.columns:
            frame[column.name] = float("nan")
    extras = [c for c in frame.columns if c not in BY_NAME]
    return frame[NAMES + extras]
