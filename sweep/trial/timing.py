"""Where a sweep's wall time goes, phase by phase: logged as one ``time:`` line and written to
``timing.json``. The phases add up to the run's wall time: data, the recipe probe, the trials
(their training, cutoff views, and the search and storage around them), the seed repeats, the
precisions, the export, every report write, and the rest (start-up, opening the study)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sweep.common.atomic import write_atomic

log = logging.getLogger(__name__)

# The phases the runner times as wholes (``Timing.phase``), in the order a run goes through them.
PHASES = ("trials", "repeats", "precisions", "export")


@dataclass
class Timing:
    """Counters the trial runner adds to as it trains (every fit: model build, fit, cutoff
    views), the reports' seconds, and the wall time of each phase the runner marks."""

    data: float = 0.0
    cutoff: float = 0.0
    model: float = 0.0
    training: float = 0.0
    reports: float = 0.0
    recipe: float = 0.0  # the recipe probe's fits and their data (sweep.trial.recipe)
    trials: int = 0  # fits, every phase
    walls: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds
    fits: dict[str, int] = field(default_factory=dict)  # phase -> fits in it
    within: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> counters in it

    def _counters(self) -> dict[str, float]:
        return {"training": self.training + self.model, "cutoff": self.cutoff,
                "reports": self.reports}  # fmt: skip

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``: its wall time, its fits and the training, cutoff
        and report seconds spent inside it (summed when a phase runs more than once)."""
        before, fits, started = self._counters(), self.trials, time.perf_counter()
        try:
            yield
        finally:
            self.walls[name] = self.walls.get(name, 0.0) + time.perf_counter() - started
            self.fits[name] = self.fits.get(name, 0) + self.trials - fits
            inside = self.within.setdefault(name, {})
            for key, value in self._counters().items():
                inside[key] = inside.get(key, 0.0) + value - before[key]

    def figures(self, total: float) -> dict[str, float]:
        """timing.json: seconds per phase (``*_s``) that add up to ``total``, and fit counts."""
        inside = self.within.get("trials", {})
        training = inside.get("training", 0.0)
        cutoff = inside.get("cutoff", 0.0)
        search = self.walls.get("trials", 0.0) - training - cutoff - inside.get("reports", 0.0)
        other_phases = {f"{name}_s": self.walls.get(name, 0.0) - self.within.get(name, {}).get(
            "reports", 0.0) for name in PHASES[1:]}  # fmt: skip
        figures = {
            "total_s": total,
            "trials": self.fits.get("trials", 0),
            "training_s": training,
            "data_s": self.data,
            "recipe_s": self.recipe,
            "cutoff_s": cutoff,
            "search_and_storage_s": search,
            **other_phases,
            "repeat_fits": self.fits.get("repeats", 0),
            "reports_s": self.reports,
        }
        parts = [v for k, v in figures.items() if k.endswith("_s") and k != "total_s"]
        figures["other_s"] = total - sum(parts)
        figures["outside_training_pct"] = 100.0 * (total - training) / max(total, 1e-9)
        return figures

    def timeline(self, total: float) -> list[tuple[str, float, int | None]]:
        """The page's time line: (phase, seconds, fits or None) in the order a run goes, the
        phases of ``figures(total)`` that add up to ``total``."""
        f = self.figures(total)
        return [
            ("data", f["data_s"], None),
            ("recipe probe", f["recipe_s"], None),
            ("trials: training", f["training_s"], f["trials"]),
            ("trials: cutoff views", f["cutoff_s"], None),
            ("trials: search and storage", f["search_and_storage_s"], None),
            ("seed repeats", f["repeats_s"], f["repeat_fits"]),
            ("precisions", f["precisions_s"], None),
            ("export", f["export_s"], None),
            ("reports", f["reports_s"], None),
            ("other (start-up, opening the study)", f["other_s"], None),
        ]

    def write(self, total: float, out_dir: Path) -> dict[str, float]:
        """Log the time line and write ``timing.json`` (the speed benchmark's source)."""
        f = self.figures(total)
        log.info(
            "time: %.1fs in all: data %.1fs, recipe probe %.1fs, trials %.1fs (%d fits: training "
            "%.1fs, cutoff views %.2fs, search and storage %.1fs), seed repeats %.1fs (%d fits), "
            "precisions %.1fs, export %.1fs, reports %.1fs, other %.1fs; %.1f%% outside the "
            "trials' training", f["total_s"], f["data_s"], f["recipe_s"],
            f["training_s"] + f["cutoff_s"] + f["search_and_storage_s"], f["trials"],
            f["training_s"], f["cutoff_s"], f["search_and_storage_s"], f["repeats_s"],
            f["repeat_fits"], f["precisions_s"], f["export_s"], f["reports_s"], f["other_s"],
            f["outside_training_pct"],
        )  # fmt: skip
        write_atomic(Path(out_dir) / "timing.json", json.dumps(f, indent=1))
        return f

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
