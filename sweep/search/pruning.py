"""Size-aware pruning (``search/pruner=size``): stop a trial that a smaller one already beats.

Optuna prunes single-objective studies only. The Pareto study needs a different rule anyway: a
trial is worth finishing while it can still reach the front of accuracy against size, and its
size is known before it trains. So at rung epochs (``min_epoch``, then times
``reduction_factor``: successive halving's rungs), a running trial's best validation accuracy so
far is compared with what trials of no larger size (``size``, params_total by default) had
reached by the same epoch: finished, pruned or still running, in this process or in another
worker on the same storage (its accuracies are stored with it at each rung, ``val_curve``). If it
trails the best of them by more than the margin, it stops: PRUNED, its figures so far kept, the
reason stored. The margin is the seed noise a user would not call a difference: a number of
accuracy points, or ``auto``: ``z`` standard errors of the difference of two accuracies measured
on the validation split (``z * 100 * sqrt(2 p (1 - p) / n)``, p the better one).

A smaller trial is never stopped for trailing a larger one, and a trial is never compared with
itself. Learning curves can cross (a wide table may learn slower at first): the rungs and the
margin bound that risk, and ``python -m sweep.benchmarks.search_efficiency`` measures it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import optuna

from sweep.search.records import is_reused
from sweep.search.space import SearchError

__all__ = ["Curve", "SizeRule", "curves", "size_rule"]

CURVE = "val_curve"  # user attribute: validation accuracy after each epoch so far (%)


@dataclass(frozen=True)
class Curve:
    """One trial's learning curve as the rule sees it: its size and accuracy after each epoch."""

    number: int
    size: float
    accuracy: tuple[float, ...]

    def best_by(self, epoch: int) -> float | None:
        """The best validation accuracy within the first ``epoch`` epochs (None: not there yet)."""
        return max(self.accuracy[:epoch]) if len(self.accuracy) >= epoch else None


@dataclass(frozen=True)
class SizeRule:
    """The rule's settings (``configs/search/pruner/size.yaml``)."""

    min_epoch: int = 1
    reduction_factor: int = 2
    margin: float | None = None  # accuracy points; None: auto (``z`` standard errors)
    z: float = 1.5
    size: str = "params_total"

    def is_rung(self, epoch: int) -> bool:
        """Whether the rule looks at a trial after this epoch: min_epoch * factor^k."""
        rung = self.min_epoch
        while rung < epoch:
            rung *= self.reduction_factor
        return rung == epoch

    def margin_points(self, accuracy: float, validation_docs: int) -> float:
        """How far (accuracy points) a trial may trail a smaller one that reached ``accuracy``."""
        if self.margin is not None:
            return self.margin
        p = min(max(accuracy / 100.0, 0.0), 1.0)
        # Never below one document's worth: at p = 1 the standard error would be 0.
        one_doc = 100.0 / max(validation_docs, 1)
        return max(self.z * 100.0 * math.sqrt(2.0 * p * (1.0 - p) / max(validation_docs, 1)),
                   one_doc)  # fmt: skip

    def decide(self, trial: Curve, others: Iterable[Curve], validation_docs: int) -> str | None:
        """Why ``trial`` stops after its last epoch, or None to train on."""
        epoch = len(trial.accuracy)
        if epoch == 0 or not self.is_rung(epoch):
            return None
        mine = trial.best_by(epoch)
        peers = [
            (best, other)
            for other in others
            if other.number != trial.number and other.size <= trial.size
            for best in [other.best_by(epoch)]
            if best is not None
        ]
        if not peers:
            return None
        best, leader = max(peers, key=lambda p: (p[0], -p[1].size))
        margin = self.margin_points(best, validation_docs)
        if mine >= best - margin:
            return None
        return (
            f"pruned after epoch {epoch}: val_accuracy {mine:.2f} trails {best:.2f} of trial "
            f"{leader.number} by more than {margin:.2f} points, and that trial is no larger "
            f"({self.size} {leader.size:,.0f} <= {trial.size:,.0f})"
        )


def size_rule(search_cfg) -> SizeRule | None:
    """The size rule of ``search.pruner`` (name ``size``), checked; None for other pruners."""
    cfg = search_cfg.get("pruner")
    if not cfg or cfg.get("name") != "size":
        return None
    min_epoch, factor = cfg.get("min_epoch", 1), cfg.get("reduction_factor", 2)
    if not isinstance(min_epoch, int) or isinstance(min_epoch, bool) or min_epoch < 1:
        raise SearchError(f"search.pruner.min_epoch={min_epoch!r} must be an integer >= 1")
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
        raise SearchError(f"search.pruner.reduction_factor={factor!r} must be an integer >= 2")
    margin = cfg.get("margin", "auto")
    if margin != "auto" and (
        isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0
    ):
        raise SearchError(
            f"search.pruner.margin={margin!r} must be accuracy points >= 0 or auto (z standard "
            "errors of the difference of two validation accuracies)"
        )
    z = cfg.get("z", 1.5)
    if isinstance(z, bool) or not isinstance(z, (int, float)) or z < 0:
        raise SearchError(f"search.pruner.z={z!r} must be a number >= 0")
    return SizeRule(
        min_epoch=min_epoch,
        reduction_factor=factor,
        margin=None if margin == "auto" else float(margin),
        z=float(z),
        size=str(cfg.get("size", "params_total")),
    )


def curves(study: optuna.Study, size: str) -> list[Curve]:
    """Every stored learning curve with its size: complete trials (every epoch: ``val_history``),
    pruned and running ones (up to their last rung: ``val_curve``). A failed trial's curve is
    no evidence: it may have diverged or been killed mid-epoch."""
    states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.RUNNING,
    )
    out = []
    for trial in study.get_trials(deepcopy=False, states=states):
        attrs = trial.user_attrs
        curve = attrs.get("val_history") or attrs.get(CURVE)
        if curve and size in attrs and not is_reused(trial):
            out.append(Curve(trial.number, float(attrs[size]), tuple(map(float, curve))))
    return out
