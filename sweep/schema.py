"""The trial record: every column a trial has, in one list.

trials.csv, pareto.csv and plan.csv, the page's tables and the per-seed figures are all derived
from ``COLUMNS``; adding a column to the reports is one entry here. A column is known at one of
these moments:

- ``sizes``: from the sampled parameters alone, before training (``Trial.describe``); plan mode
  writes these;
- ``trained``: measured by training (``Trial.train``);
- ``study``: the study's bookkeeping (state, reasons, seed repeats, timing in the storage);
- ``report``: computed by the report from the other columns (the front, the recommendation).

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


_SIZES, _TRAINED, _STUDY, _REPORT = "sizes", "trained", "study", "report"

COLUMNS: list[Column] = [
    Column("trial", _STUDY, shown=True),
    Column("state", _STUDY, shown=True),
    Column("fail_reason", _STUDY),
    Column("embedding_dim", _SIZES, shown=True, plan=True),
    Column("vocab_size", _SIZES, shown=True, plan=True),
    Column("num_embeddings", _SIZES, shown=True, plan=True),
    Column("hash_buckets", _SIZES),
    Column("min_freq", _SIZES, shown=True),
    Column("train_coverage", _SIZES, shown=True, plan=True),
    Column("val_oov_rate", _SIZES, shown=True, plan=True),
    Column("params_total", _SIZES, shown=True, plan=True),
    Column("params_embedding", _SIZES, shown=True, plan=True),
    Column("embedding_share", _SIZES, plan=True),
    Column("model_mb", _SIZES, shown=True, plan=True),
    Column("embedding_mb_fp32", _SIZES, plan=True),
    Column("embedding_mb_fp16", _SIZES, plan=True),
    Column("embedding_mb_int8", _SIZES, plan=True),
    Column("rest_mb_fp32", _SIZES, plan=True),
    Column("rest_mb_fp16", _SIZES, plan=True),
    Column("rest_mb_int8", _SIZES, plan=True),
    Column("val_accuracy", _TRAINED, shown=True, per_seed=True),
    Column("test_accuracy", _TRAINED, shown=True, per_seed=True),
    Column("val_accuracy_mean", _STUDY, shown=True),
    Column("val_accuracy_std", _STUDY, shown=True),
    Column("test_accuracy_mean", _STUDY),
    Column("test_accuracy_std", _STUDY),
    Column("seeds", _STUDY, shown=True),
    Column("val_loss", _TRAINED, shown=True),
    Column("epochs", _TRAINED, shown=True),
    Column("best_epoch", _TRAINED),
    Column("pruned_epoch", _STUDY),
    Column("reused_from", _STUDY),
    Column("train_seconds", _TRAINED, shown=True),
    Column("cutoff_seconds", _TRAINED),
    Column("tokens_per_second", _TRAINED, shown=True),
    Column("examples_per_second", _TRAINED),
    Column("eval_tokens_per_second", _TRAINED),
    Column("eval_examples_per_second", _TRAINED),
    Column("gpu_peak_mb", _TRAINED, shown=True),
    Column("gpu_reserved_mb", _TRAINED),
    Column("est_peak_mb", _SIZES, shown=True, plan=True),
    Column("est_embedding_mb", _SIZES, plan=True),
    Column("budget_excess", _SIZES),
    Column("device", _SIZES),
    Column("seed", _SIZES),
    Column("model", _SIZES),
    Column("pareto", _REPORT, shown=True),
    Column("recommended", _REPORT, shown=True),
    Column("datetime_start", _STUDY),
    Column("duration_seconds", _STUDY),
]

NAMES: list[str] = [c.name for c in COLUMNS]
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
# Searched keys besides the two main axes are shown right after them.
AXES_END = NAMES.index("vocab_size") + 1
PER_SEED: list[str] = [c.name for c in COLUMNS if c.per_seed]
# Plan mode only: whether a point breaks a budget.
PLAN_FLAGS = ["over_max_params", "over_max_memory_mb"]


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
