"""What a stored trial's own attributes say about it, read the same way by every module of the
search: the loop that writes them, the study's bookkeeping, the pruner and the samplers that
learn from past trials. Nothing here imports the rest of the package, so each of them can."""

from __future__ import annotations

import optuna

SKIPPED = "skipped_reason"  # never trained: over a budget or past an out-of-memory size
REUSED = "reused_from"  # the same configuration as an earlier trial: its result, copied
# Answered by the training recipe's probe, which trained this very configuration with its pick
# (sweep.trial.recipe_fits): its figures are that fit's, its own duration nearly nothing.
PROBE_FIT = "probe_fit"


def is_skipped(trial: optuna.trial.FrozenTrial) -> bool:
    return SKIPPED in trial.user_attrs


def is_reused(trial: optuna.trial.FrozenTrial) -> bool:
    return REUSED in trial.user_attrs


def is_original(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that trained its own configuration (neither skipped nor a reused result)."""
    return not (is_skipped(trial) or is_reused(trial))


def seconds_spent(trial: optuna.trial.FrozenTrial) -> float | None:
    """What training the trial cost in seconds: its duration, or for a probe's fit what that
    fit took (its duration in the study is only the answer's); None if it has none."""
    if PROBE_FIT in trial.user_attrs:
        attrs = trial.user_attrs
        return float(attrs.get("train_seconds", 0.0)) + float(attrs.get("cutoff_seconds", 0.0))
    return None if trial.duration is None else trial.duration.total_seconds()
