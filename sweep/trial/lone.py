"""A trial trained alone: its cutoff views, its model from its seed, the fit, its figures.

What follows a finished training (its accuracy at the lower precisions, ``on_trained``) is
``Lone._trained``, which the packed path (``sweep.trial.pack``) calls too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from sweep import measure, schema
from sweep.data.corpus import SPLITS
from sweep.models.fit import evaluate, fit
from sweep.models.frontends import Sizes
from sweep.models.kinds import build_model
from sweep.ship import quantize


class Lone:
    """Training one configuration alone (``TrialRunner``'s part)."""

    @property
    def quantize_each(self) -> bool:
        """Measure every trial at every precision as it trains (``report.quantize=all``, or a
        byte budget: the recommendation then needs each trial's accuracy where it fits)."""
        return (
            self.cfg.report.get("quantize", "front") == "all"
            or self.cfg.search.get("max_model_bytes") is not None
        )

    def eval_views(self, sizes: Sizes) -> dict[str, Any]:
        """The trial's cutoff views of the splits it is measured on: {"val": ..., "test": ...}."""
        return {
            column: self.frontend.view(self.data, split, sizes)
            for split, column in (("validation", "val"), ("test", "test"))
        }

    def precision_figures(self, setup, model: torch.nn.Module) -> dict[str, float]:
        """Validation and test accuracy of ``model`` (trained, on the device) stored at each
        lower precision (``sweep.ship.quantize``): ``val_accuracy_int8`` and so on."""
        trial_cfg, sizes = setup
        views = self.eval_views(sizes)
        figures = {}
        for precision in schema.PRECISIONS[1:]:
            stored = quantize.at_precision(model, precision)
            for split, view in views.items():
                accuracy, _ = evaluate(stored, view, trial_cfg.train.eval_batch_size)
                figures[schema.accuracy_column(split, precision)] = accuracy
        return figures

    def _trained(self, params, setup, seed: int, model: torch.nn.Module) -> dict[str, float]:
        """What follows a finished training (``model`` holds its best epoch's weights), alone or
        packed: its accuracy at each lower precision (``precision_figures``; only the study's
        seed ships, so only it is measured) and ``on_trained``. Returns those figures."""
        precisions = {}
        if self.quantize_each and seed == self.cfg.seed:
            precisions = self.precision_figures(setup, model)
        if self.on_trained is not None:
            self.on_trained(params, seed, model)
        return precisions

    def train(
        self,
        params: dict[str, Any],
        on_epoch: Callable[[int, float], None] | None = None,
        seed: int | None = None,
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    ) -> dict[str, Any]:
        """Train the configuration once (with ``seed``, default ``cfg.seed``); the measured
        columns (``known="trained"``) and ``val_history``. ``on_epoch(epoch, val_accuracy)`` may
        raise to stop the trial (pruning). ``wrap_model`` sees the model before it trains and
        may return a replacement (the benchmarks: ``torch.compile``, a per-epoch test curve)."""
        seed = self.cfg.seed if seed is None else seed
        trial_cfg, sizes = self.setup(params)
        train_cfg = trial_cfg.train
        device = self.data.device
        with measure.gpu_peak(device, self.memory) as peak:
            views, model, cutoff_seconds = self._build(trial_cfg, sizes, seed, wrap_model)
            t0 = time.perf_counter()
            try:
                result = fit(
                    model, views["train"], views["validation"], views["test"],
                    epochs=train_cfg.epochs, batch_size=train_cfg.batch_size, lr=train_cfg.lr,
                    patience=train_cfg.patience, seed=seed,
                    eval_batch_size=train_cfg.eval_batch_size, bucket=train_cfg.bucket,
                    on_epoch=on_epoch,
                )  # fmt: skip
                # fit left the best epoch's weights in model
                precisions = self._trained(params, (trial_cfg, sizes), seed, model)
            finally:
                del model, views
                measure.release(device)  # also after a failure: the next trial starts clean
                self.timing.training += time.perf_counter() - t0
                self.timing.trials += 1
        return {**self._record(result, cutoff_seconds, peak), **precisions}

    def _build(self, trial_cfg, sizes: Sizes, seed: int, wrap_model=None):
        """(cutoff views, model on the device, seconds the views took): the model initialised
        from ``seed`` as every lone run of the trial is."""
        t0 = time.perf_counter()
        views = {s: self.frontend.view(self.data, s, sizes) for s in SPLITS}
        cutoff_seconds = time.perf_counter() - t0
        torch.manual_seed(seed)  # every trial starts from the same random stream
        model = build_model(trial_cfg.model, sizes.num_embeddings, sizes.embedding_dim,
                            self.data.num_classes).to(self.data.device)  # fmt: skip
        if wrap_model is not None:
            model = wrap_model(model)
        self.timing.cutoff += cutoff_seconds
        self.timing.model += time.perf_counter() - t0 - cutoff_seconds
        return views, model, cutoff_seconds

    @staticmethod
    def _record(result, cutoff_seconds: float, peak: dict) -> dict[str, Any]:
        record = {**result.figures(), "cutoff_seconds": cutoff_seconds,
                  "gpu_peak_mb": peak["peak_mb"], "gpu_baseline_mb": peak["baseline_mb"],
                  "gpu_reserved_mb": peak["reserved_mb"]}  # fmt: skip
        schema.check_record(record, "trained")
        return record
