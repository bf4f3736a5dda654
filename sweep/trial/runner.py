"""One trial: sampled values -> the trial's config and sizes -> figures before and after training.

``TrialRunner.describe(params)`` gives the columns known before training (sizes, parameter counts,
coverage, the memory estimate; ``known="sizes"`` in ``sweep.schema``): plan mode and the budgets
use them, and they are stored even when the trial then fails. ``TrialRunner.train(params)`` makes
the cutoff view of the prepared data, builds the model, fits it and returns the measured columns
(``known="trained"``). It needs no study: tests and benchmarks build one from a config and a
``PreparedData``, and the trial loop (``sweep.search.loop``) calls it per Optuna trial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from sweep import measure
from sweep.data.prepared import PreparedData
from sweep.models.frontends import Sizes, frontend_of
from sweep.search.space import SearchSpace
from sweep.trial.lone import Lone
from sweep.trial.pack import Pack
from sweep.trial.probe import Probe
from sweep.trial.sizes import Describe
from sweep.trial.timing import Timing


class TrialRunner(Describe, Probe, Lone, Pack):
    """Turns a trial's sampled values into its figures, for one config and one prepared data.

    Each job is its own part: ``Describe`` (sizes, ``sweep.trial.sizes``), ``Probe`` (the memory
    probe), ``Lone`` (training alone), ``Pack`` (training in packs); this class holds what they
    share: the config, the data, the search space, the device's counters and the timing."""

    def __init__(self, cfg: DictConfig, data: PreparedData, space: SearchSpace | None = None):
        self.cfg = cfg
        self.data = data
        self.space = space or SearchSpace(cfg.search.space, data.full_vocab)
        # The front-end kind of its trials (sweep.models.frontends): their sizes, views, counts.
        self.frontend = frontend_of(cfg.model)
        self.timing = Timing()
        # The device's memory counters (None on a CPU; tests set a fake) and the baseline the
        # trials run on, which warm_up makes the same for the first trial as for the others.
        self.memory = measure.memory_reader(data.device)
        self.baseline = measure.baseline_bytes(data.device, data.device_bytes)
        self.capability = (
            torch.cuda.get_device_capability(data.device) if data.device.type == "cuda" else None
        )
        measure.warm_up(data.device)
        # Called with (params, seed, model) after each successful training, the model holding
        # its best epoch's weights (the runner keeps them for export: sweep.ship.export.KeptStates).
        self.on_trained: Callable[[dict[str, Any], int, torch.nn.Module], None] | None = None

    def setup(self, params: dict[str, Any]) -> tuple[DictConfig, Sizes]:
        """The trial's config (extra axes set) and its table's sizes."""
        trial_cfg = self.space.trial_config(self.cfg, params)
        if trial_cfg.model.get("hidden_dim") == "auto":  # a searched model= option's default
            own = self.cfg.model.get("hidden_dim")
            trial_cfg.model.hidden_dim = own if own not in (None, "auto") else (
                self.cfg.train.recipe.hidden_dim[0])  # fmt: skip
        return trial_cfg, self.frontend.sizes(params, trial_cfg.model, self.data.full_vocab)
