"""The trial record: every column a trial has, in one list.

trials.csv, pareto.csv and plan.csv, the page's tables and the per-seed figures are all derived
from ``COLUMNS``, parsed from the table below; adding a column to the reports is one line of it
with what it means (and, for a column computed from the others, its function in ``_DERIVED``). A column is known at one of
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

# The precisions a model is stored and measured at (``sweep.ship.quantize``); their columns are
# named by the two functions below, and nowhere else.
PRECISIONS = ("fp32", "fp16", "int8", "int4")


def accuracy_column(split: str, precision: str) -> str:
    """The trials.csv column of ``split``'s accuracy ("val" or "test") at ``precision``:
    ``val_accuracy`` at fp32 (as trained), ``val_accuracy_int8`` and so on."""
    return f"{split}_accuracy" if precision == "fp32" else f"{split}_accuracy_{precision}"


def file_bytes_column(precision: str) -> str:
    """The trials.csv column of the exported file's exact size at ``precision``."""
    return f"file_bytes_{precision}"


@dataclass(frozen=True)
class Column:
    name: str
    known: str  # sizes | trained | study | report (see the module docstring)
    shown: bool = False  # in the page's trial tables
    plan: bool = False  # in plan.csv (plan=true: sizes only, no training)
    per_seed: bool = False  # measured again by each seed repeat: *_mean and *_std columns
    derive: Callable[[pd.Series], Any] | None = None
    doc: str = ""  # what it means, in the units it is in (Markdown)


# name                    known    where it goes besides trials.csv  | what it means (the docs'
# column reference is this column: docs/reference/columns.md, built by docs/hooks.py)
_TABLE = """
trial                     study    shown                | Optuna trial number
state                     study    shown                | `COMPLETE`, `PRUNED`, `FAIL`, `SKIPPED` (over a budget, too large after an out-of-memory failure, or its probe step ran out of memory) or `RUNNING`
fail_reason               study                         | exception type and message of a failed trial; why a trial was skipped, pruned (`search/pruner=size`) or interrupted
embedding_dim             sizes    shown plan           | width D of each embedding row
vocab_size                sizes    shown plan           | cutoff K: the K most frequent train words are kept (after clamping)
num_embeddings            sizes    shown plan           | rows of the table: K + 2 (`<pad>`, `<unk>`) + `hash_buckets`
hash_buckets              sizes                         | B shared rows for words past the cutoff (`model.hash_buckets`; 0 = off)
min_freq                  sizes    shown                | train count of the rarest kept word: the equivalent minimum-frequency cutoff
train_coverage            sizes    shown plan           | share of train tokens whose word is kept at K
val_oov_rate              sizes    shown plan           | share of validation tokens that are `<unk>` at K
params_total              sizes    shown plan           | trainable parameters of the model
params_embedding          sizes    shown plan           | parameters of the embedding table (K + 2) x D
embedding_share           sizes    plan                 | `params_embedding / params_total`
model_mb                  sizes    shown plan           | size of all parameters at fp32
embedding_mb_fp32         sizes    plan                 | size of the embedding front end at 4, 2, 1 bytes per parameter
embedding_mb_fp16         sizes    plan                 | size of the embedding front end at 4, 2, 1 bytes per parameter
embedding_mb_int8         sizes    plan                 | size of the embedding front end at 4, 2, 1 bytes per parameter
rest_mb_fp32              sizes    plan                 | size of the rest of the model at 4, 2, 1 bytes per parameter
rest_mb_fp16              sizes    plan                 | size of the rest of the model at 4, 2, 1 bytes per parameter
rest_mb_int8              sizes    plan                 | size of the rest of the model at 4, 2, 1 bytes per parameter
file_bytes_fp32           sizes    plan                 | bytes of the exported `model.safetensors` + `vocab.txt` at that precision, exact (docs/shipping.md)
file_bytes_fp16           sizes    plan                 | bytes of the exported `model.safetensors` + `vocab.txt` at that precision, exact (docs/shipping.md)
file_bytes_int8           sizes    plan                 | bytes of the exported `model.safetensors` + `vocab.txt` at that precision, exact (docs/shipping.md)
file_bytes_int4           sizes    plan                 | bytes of the exported `model.safetensors` + `vocab.txt` at that precision, exact (docs/shipping.md)
val_accuracy              trained  shown per_seed       | validation accuracy of the best epoch (%)
test_accuracy             trained  shown per_seed       | test accuracy of the same weights (%)
val_accuracy_mean         study    shown                | mean validation accuracy over `seeds` (front trials retrained; else empty)
val_accuracy_std          study    shown                | its standard deviation over seeds (points)
test_accuracy_mean        study                         | mean test accuracy over `seeds`
test_accuracy_std         study                         | its standard deviation over seeds
val_accuracy_fp16         trained                       | accuracy of the model stored at that precision (front trials, or all with `report.quantize=all`)
test_accuracy_fp16        trained                       | accuracy of the model stored at that precision (front trials, or all with `report.quantize=all`)
val_accuracy_int8         trained                       | accuracy of the model stored at that precision (front trials, or all with `report.quantize=all`)
test_accuracy_int8        trained                       | accuracy of the model stored at that precision (front trials, or all with `report.quantize=all`)
val_accuracy_int4         trained                       | accuracy of the model stored at that precision (front trials, or all with `report.quantize=all`)
test_accuracy_int4        trained                       | accuracy of the model stored at that precision (front trials, or all with `report.quantize=all`)
ship_precision            report   shown                | the file the trial ships (`search.precision`, `search.max_model_bytes`) and its accuracy
ship_bytes                report   shown                | the file the trial ships (`search.precision`, `search.max_model_bytes`) and its accuracy
ship_val_accuracy         report                        | the file the trial ships (`search.precision`, `search.max_model_bytes`) and its accuracy
ship_test_accuracy        report                        | the file the trial ships (`search.precision`, `search.max_model_bytes`) and its accuracy
seeds                     study    shown                | number of seeds behind the means (1 + `report.repeats`)
val_loss                  trained  shown                | validation cross-entropy of the same weights
epochs                    trained  shown                | epochs run (early stopping included)
best_epoch                trained                       | epoch whose weights were kept
pruned_epoch              study                         | epoch after which a pruned trial stopped
reused_from               study                         | the finished trial whose result this duplicate configuration reused
probe_fit                 study                         | `True` where the training recipe's probe trained this configuration with the recipe it picked: the trial's figures and weights are that fit's, not trained again (docs/models.md "Training recipe")
pack                      trained                       | first trial number of the pack that trained this trial (`search.pack`); empty when it trained alone
train_seconds             trained  shown                | wall time of the whole fit, evaluation included
cutoff_seconds            trained                       | wall time of the trial's cutoff view of the corpus (every split)
tokens_per_second         trained  shown                | train tokens per second of optimisation steps
examples_per_second       trained                       | train documents per second of optimisation steps
eval_tokens_per_second    trained                       | tokens per second of evaluation (validation and test)
eval_examples_per_second  trained                       | documents per second of evaluation
gpu_peak_mb               trained  shown                | the trial's own peak GPU memory: the allocator's peak during the trial minus what the process held when it began (a packed trial: its pack's, up to the trial's end); NaN on a CPU (never 0)
gpu_baseline_mb           trained                       | what the process held when the trial began (the corpus on the device, the cuBLAS workspaces); NaN on a CPU
gpu_reserved_mb           trained                       | peak GPU memory reserved by the caching allocator (baseline included); NaN on a CPU
probe_peak_mb             sizes    shown                | the trial's own peak measured on one step on its longest batch before it trains (CUDA; NaN elsewhere and in plan mode; infinite when it ran out of memory)
est_peak_mb               sizes    shown plan           | analytic peak memory of the trial itself (its cutoff view, weights, Adam moments, the best epoch's copy, gradients, saved activations, an eval batch)
est_baseline_mb           sizes    plan                 | analytic process baseline (the corpus on the device, 2 cuBLAS workspaces on CUDA)
memory_mb                 sizes    plan                 | what `search.max_memory_mb` and the out-of-memory rule compare: `probe_peak_mb` (else `est_peak_mb`) + `est_baseline_mb`
est_embedding_mb          sizes    plan                 | the embedding table's share of it (weights, moments, gradient)
budget_excess             sizes                         | max of value / limit - 1 over the set budgets (> 0: over budget; 0 without budgets)
recipe_lr                 sizes                         | the trial's learning rate (`train.lr`: set by hand, searched, or picked by the study's recipe probe)
recipe_hidden_dim         sizes                         | its hidden layer's width (`model.hidden_dim`; 0 = linear head; empty for models without one)
recipe_word_ngrams        sizes                         | its tokens' word n-gram order (`data.tokenizer.word_ngrams`; 2 = words and bigrams)
device                    sizes                         | device the trial ran on
seed                      sizes                         | the run's seed
model                     sizes                         | model name (`model.name`)
pareto                    report   shown                | on the Pareto front
recommended               report   shown                | the recommended trial
datetime_start            study                         | when the trial started
duration_seconds          study                         | trial wall time, as Optuna recorded it
"""


# Columns the report computes from the others of their row (their line above says where they go),
# e.g. "params_rest": lambda row: row["params_total"] - row["params_embedding"].
_DERIVED: dict[str, Callable[[pd.Series], Any]] = {}


def _parse(table: str) -> list[Column]:
    columns = []
    for line in table.strip().splitlines():
        spec, _, doc = line.partition("|")
        name, known, *flags = spec.split()
        columns.append(Column(name, known, derive=_DERIVED.get(name), doc=doc.strip(),
                              **dict.fromkeys(flags, True)))  # fmt: skip
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
_UNLISTED = {"val_history", "val_curve", "pruned_reason", "worker", "heartbeat",
             "skipped_reason", "out_of_memory"}  # fmt: skip


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
