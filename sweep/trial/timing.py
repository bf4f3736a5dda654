"""Where a sweep's wall time goes: the trials' shares, logged and written to ``timing.json``."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from sweep.common.atomic import write_atomic

log = logging.getLogger(__name__)


@dataclass
class Timing:
    """Where a sweep's wall time goes, summed over its trials (written to ``timing.json``)."""

    data: float = 0.0
    cutoff: float = 0.0
    model: float = 0.0
    training: float = 0.0
    reports: float = 0.0
    recipe: float = 0.0  # the recipe probe's fits and their data (sweep.trial.recipe)
    trials: int = 0

    def write(self, total: float, out_dir: Path) -> None:
        """Log the split and write ``timing.json`` (the speed benchmark's source): training
        (model init and fit, evaluation included) against everything else."""
        training = self.training + self.model
        other = total - training - self.data - self.cutoff - self.reports - self.recipe
        figures = {
            "total_s": total,
            "trials": self.trials,
            "training_s": training,
            "data_s": self.data,
            "cutoff_s": self.cutoff,
            "reports_s": self.reports,
            "recipe_s": self.recipe,
            "search_and_storage_s": other,
            "outside_training_pct": 100.0 * (total - training) / max(total, 1e-9),
        }
        log.info(
            "time: %.1fs in all; training %.1fs (%d fits), recipe probe %.1fs, data %.1fs, "
            "cutoff views %.2fs, reports %.1fs, search and storage %.1fs: %.1f%% outside "
            "training", total, training, self.trials, self.recipe, self.data, self.cutoff,
            self.reports, other,
            figures["outside_training_pct"],
        )  # fmt: skip
        write_atomic(Path(out_dir) / "timing.json", json.dumps(figures, indent=1))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
