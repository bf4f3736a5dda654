"""The summary of a Hydra multirun: every study's front overlaid, one row per study.

``python run_sweep.py --multirun model=bag,cnn`` runs one study per combination (the default
study name holds the data, model and search names, so each gets its own). When the multirun
ends, this callback reads each job's ``pareto.csv`` and ``trials.csv`` and writes
``summary.csv`` and ``summary.html`` into the multirun folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from markupsafe import Markup
from omegaconf import DictConfig

from sweep.common.atomic import write_atomic
from sweep.report import page, plots

log = logging.getLogger(__name__)


def summarize(sweep_dir: Path) -> pd.DataFrame | None:
    """Write summary.csv and summary.html for the job folders under ``sweep_dir``."""
    rows, series = [], []
    for index, job in enumerate(
        sorted(p for p in sweep_dir.iterdir() if (p / "trials.csv").is_file())
    ):
        table = pd.read_csv(job / "trials.csv")
        done = table[table["state"] == "COMPLETE"]
        name = job.name.split("-", 1)[-1]
        if done.empty:
            rows.append({"study": name, "folder": job.name, "complete trials": 0})
            continue
        best = done.loc[done["val_accuracy"].idxmax()]
        rec = done[done["recommended"].astype(bool)]
        rec = rec.iloc[0] if len(rec) else best
        rows.append({
            "study": name, "folder": job.name, "complete trials": len(done),
            "best val_accuracy": round(best["val_accuracy"], 2),
            "best test_accuracy": round(best["test_accuracy"], 2),
            "best params_total": int(best["params_total"]),
            "recommended embedding_dim": int(rec["embedding_dim"]),
            "recommended vocab_size": int(rec["vocab_size"]),
            "recommended params_total": int(rec["params_total"]),
            "recommended val_accuracy": round(rec["val_accuracy"], 2),
        })  # fmt: skip
        front = done[done["pareto"].astype(bool)].sort_values("params_total")
        tips = [f"{name}: embedding_dim={r.embedding_dim}, vocab_size={r.vocab_size}, "
                f"params={r.params_total:,}, val_accuracy={r.val_accuracy:.2f}" for r in front.itertuples()]  # fmt: skip
        series.append(plots.Series(name, front["params_total"], front["val_accuracy"], tips,
                                   plots.PALETTE[index % len(plots.PALETTE)], line=True))  # fmt: skip
    if not rows:
        return None
    summary = pd.DataFrame(rows)
    write_atomic(sweep_dir / "summary.csv", summary.to_csv(index=False))
    chart = plots.chart("Pareto fronts of every study", series, x_label="params_total (log scale)",
                        y_label="validation accuracy (%)", x_log=True, chart_id="chart-fronts")  # fmt: skip
    table = page.html_table(summary, list(summary.columns), "summary")
    html_text = page.page("summary.html.j2", "Multirun summary", count=len(summary),
                          chart=Markup(chart), table=Markup(table))  # fmt: skip
    write_atomic(sweep_dir / "summary.html", html_text)
    return summary


class MultirunSummary(Callback):
    """Hydra callback: after a multirun, overlay every study's front (summary.html/csv)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and summarize(sweep_dir) is not None:
            log.info("multirun summary: %s/summary.html", sweep_dir)
