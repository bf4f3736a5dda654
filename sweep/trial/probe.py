"""The memory probe: one step of the trial, as it will run, on its worst batch (CUDA).

Where the device has memory counters, the trial's own peak is measured before it trains, so a
configuration that would not fit is skipped untrained and ``search.max_memory_mb`` compares a
measurement, not only the estimate.
"""

from __future__ import annotations

import copy
import math

import torch

from sweep import measure
from sweep.models.optim import Optimizers


class Probe:
    """The probe (``TrialRunner``'s part; it builds the trial as ``Lone._build`` does)."""

    def probe(self, setup) -> float:
        """Where the device has memory counters (CUDA; tests give a fake): the trial's own peak,
        measured on one step as the trial will run it, on its worst batch: its cutoff views,
        the model, one forward, backward and optimizer step on the ``batch_size`` longest
        training documents, the best-state copy, one evaluation batch of the longest validation
        documents. MiB above the baseline; NaN without counters (a CPU, plan mode); infinite
        when the step ran out of memory (the trial is then skipped, untrained)."""
        if self.memory is None:
            return math.nan
        try:
            return self._probe(setup)
        except (torch.OutOfMemoryError, MemoryError):  # the trial would not fit: say so
            measure.release(self.data.device)
            return math.inf

    def _probe(self, setup) -> float:
        trial_cfg, sizes = setup
        train_cfg, device = trial_cfg.train, self.data.device
        with measure.gpu_peak(device, self.memory) as peak:
            views, model, _ = self._build(trial_cfg, sizes, self.cfg.seed)  # as the trial will
            optimizers = Optimizers(model, train_cfg.lr)
            train = views["train"]
            idx = torch.argsort(train.lengths, descending=True)[: train_cfg.batch_size]
            width = max(int(train.lengths[idx].max()), 1)
            idx = idx.to(device)
            logits = model.train()(train.ids[idx, :width])
            torch.nn.functional.cross_entropy(logits, train.labels[idx]).backward()
            optimizers.step()
            best = copy.deepcopy(model.state_dict())
            val = views["validation"]
            idx = torch.argsort(val.lengths, descending=True)[: train_cfg.eval_batch_size]
            width = max(int(val.lengths[idx].max()), 1)
            with torch.no_grad():
                model.eval()(val.ids[idx.to(device), :width])
            del views, model, optimizers, train, val, logits, best
        measure.release(device)
        return peak["peak_mb"]
