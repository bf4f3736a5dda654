"""The recipe probe's fits of the recipe it picked, answered as the study's first trials.

The probe (``sweep.trial.recipe``) trains each choice at the probe points
(``recipe.probe_points``), and a fresh study then starts at those very points with the pick
(``sweep.runner.start_at_probe_points``): the same configuration, config, data and seed, so the
same training. ``RecipeFits`` keeps what the pick's fits measured and answers those trials with
it instead of training them again; it replays each answered fit's validation curve through the
trial's epoch callback, so the pruners and the size rule see what a training would have shown
them. The fits' weights go where a trial's go (``sweep.ship.export.KeptStates``), so neither the
precisions nor the export train them again: each choice's wait in a folder of their own
(``<states>/probe/<choice>/``: every choice trains the same points) until the pick is known; the
others are then deleted.

Only the process that ran the probe holds the answers: a resumed run, or another worker (which
may ask a probe point before the probing worker does), trains the point as any trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

from sweep.common.digest import json_digest
from sweep.search.records import PROBE_FIT
from sweep.ship.export import KeptStates

log = logging.getLogger(__name__)

PROBE_FOLDER = "probe"


def _key(params: dict[str, Any]) -> str:
    return json_digest({name: params[name] for name in sorted(params)})


class RecipeFits:
    """The picked recipe's probe fits: their measured figures by configuration, and their
    weights (with ``kept``: where the study keeps its trials'; None keeps none)."""

    def __init__(self, kept: KeptStates | None, seed: int):
        self.kept, self.seed = kept, seed
        self.by_choice: dict[int, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        self.answers: dict[str, dict[str, Any]] = {}

    def staging(self, choice: int) -> KeptStates | None:
        """Where choice ``choice``'s fits keep their weights until the pick is known."""
        if self.kept is None:
            return None
        return KeptStates(self.kept.folder / PROBE_FOLDER / str(choice), self.seed)

    def on_trained(self, choice: int) -> Callable[..., None] | None:
        """The probe runner's ``on_trained`` for choice ``choice`` (None: nothing kept)."""
        staging = self.staging(choice)
        return None if staging is None else staging.save

    def add(self, choice: int, fits: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Choice ``choice``'s fits: (configuration, measured figures) each."""
        self.by_choice[choice] = [(dict(params), dict(figures)) for params, figures in fits]

    def settle(self, winner: int) -> None:
        """The probe picked choice ``winner``: its fits become the answers and its weights the
        kept ones; every other choice's are forgotten."""
        staging = self.staging(winner)
        for params, figures in self.by_choice.get(winner, []):
            self.answers[_key(params)] = {**figures, PROBE_FIT: True}
            if staging is not None and staging.path(params).is_file():
                with contextlib.suppress(OSError):  # not kept: the export trains it again
                    os.replace(staging.path(params), self.kept.path(params))
        self.by_choice.clear()
        self.discard()

    def discard(self) -> None:
        """Remove the choices' waiting weights (also those a killed probe left behind)."""
        if self.kept is not None:
            shutil.rmtree(self.kept.folder / PROBE_FOLDER, ignore_errors=True)

    def answer(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The probe's figures of configuration ``params`` (once), or None."""
        return self.answers.pop(_key(params), None)

    def train(self, train: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        """``train(params, on_epoch)`` (``TrialRunner.train``) answering the probe's fits."""

        def answered(params: dict[str, Any], on_epoch=None) -> dict[str, Any]:
            figures = self.answer(params)
            if figures is None:
                return train(params, on_epoch)
            replay(figures, on_epoch)
            log.debug("trial at %s: the recipe probe's fit of the pick, not trained again",
                      params)  # fmt: skip
            return figures

        return answered

    def train_pack(self, train_pack: Callable[..., list]) -> Callable[..., list]:
        """``TrialRunner.train_pack`` answering the probe's fits; the others train as a pack."""

        def answered(params_list, on_epochs, labels, on_result=None, **options) -> list:
            results: list[Any] = [self.answer(params) for params in params_list]
            rest = [i for i, result in enumerate(results) if result is None]
            for i, figures in enumerate(results):
                if figures is None:
                    continue
                try:
                    replay(figures, on_epochs[i])
                except Exception as error:  # pruned on its replayed curve
                    results[i] = error
                if on_result is not None:
                    on_result(i, results[i])
            if rest:
                trained = train_pack(
                    [params_list[i] for i in rest], [on_epochs[i] for i in rest],
                    [labels[i] for i in rest],
                    on_result=None if on_result is None else (lambda j, r: on_result(rest[j], r)),
                    **options,
                )  # fmt: skip
                for i, result in zip(rest, trained, strict=True):
                    results[i] = result
            return results

        return answered


def replay(figures: dict[str, Any], on_epoch: Callable[[int, float], None] | None) -> None:
    """The fit's validation accuracy per epoch through ``on_epoch``, as its training called it
    (it may raise to prune the trial, as it would have then)."""
    if on_epoch is None:
        return
    for epoch, accuracy in enumerate(figures.get("val_history") or [], start=1):
        on_epoch(epoch, float(accuracy))
