"""Stage 7, report: trials.csv, pareto.csv and a self-contained report.html from a trials frame.

Input is the frame ``sweep.search.loop.trials_frame`` builds from the study storage, so reports can be
rebuilt from the storage alone. Both follow the study's objectives (``search.objectives``; by
default validation accuracy, higher, against params_total, lower): the Pareto front is the set of
complete trials no other complete trial beats on every objective, and the recommendation is the
trial best on the second objective among those within ``tolerance`` points of the best on the
first (the best trial, with one objective). Columns come from ``sweep.schema``. Every file is
written to a temp file, then renamed, so a killed run always leaves complete reports.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep import schema
from sweep.common.atomic import write_atomic
from sweep.common.secrets import mask
from sweep.report import page
from sweep.schema import Objectives  # noqa: F401  (part of this module's API)

# Stable column order of trials.csv (docs/reference/columns.md): the schema's; extra params follow.
COLUMNS = schema.NAMES


def pareto_mask(*columns: np.ndarray, maximize: tuple[bool, ...] = (True, False)) -> np.ndarray:
    """True where no other point is at least as good on every column and better on one.

    ``maximize`` says per column whether higher is better (default: accuracy, then parameters).
    """
    values = np.column_stack([np.asarray(c, float) for c in columns])
    values = values * np.where(np.asarray(maximize[: values.shape[1]]), 1.0, -1.0)
    at_least = (values[None, :, :] >= values[:, None, :]).all(axis=2)
    better = (values[None, :, :] > values[:, None, :]).any(axis=2)
    return ~(at_least & better).any(axis=1)


def seed_noise(frame: pd.DataFrame) -> float:
    """Median standard deviation (points) of validation accuracy over seeds; NaN if unmeasured."""
    if "val_accuracy_std" not in frame:
        return math.nan
    stds = frame["val_accuracy_std"].dropna()
    return float(stds.median()) if len(stds) else math.nan


def margin(frame: pd.DataFrame, tolerance: float) -> float:
    """Accuracy points within which trials tie: the tolerance, or the seed noise if larger."""
    noise = seed_noise(frame)
    return max(tolerance, noise) if math.isfinite(noise) else tolerance


def annotate(
    frame: pd.DataFrame,
    tolerance: float,
    objectives: Objectives = schema.DEFAULT_OBJECTIVES,
    shipping: dict[str, Any] | None = None,
):
    """Return the frame with the schema's columns, the ``pareto`` and ``recommended`` flags and
    the ``ship_*`` columns (``ship_columns``).

    The front is the set of complete trials no other complete trial beats on every objective.
    The recommendation: among the trials whose quality (the first objective; its mean over seeds
    where extra seeds were run) is within ``margin`` (tolerance or seed noise) of the best, the
    best on the second objective; with one objective, the best trial (fewer parameters on a tie).
    With a byte budget (``shipping["max_model_bytes"]``) and validation accuracy as the quality,
    the quality is the accuracy of the file that ships (``ship_val_accuracy``) and only trials
    with a file under the budget are candidates.
    """
    frame = ship_columns(schema.complete(frame), shipping or {})
    frame["pareto"] = on_front(frame, objectives)
    frame["recommended"] = False
    done = scored(frame, objectives)
    if len(done):
        candidates = frame.loc[done]
        budget = (shipping or {}).get("max_model_bytes")
        if budget is not None and objectives.quality == "val_accuracy":
            candidates = candidates[candidates["ship_val_accuracy"].notna()]
            candidates = candidates.assign(val_accuracy=candidates["ship_val_accuracy"],
                                           val_accuracy_mean=math.nan)  # fmt: skip
        if len(candidates):
            frame.loc[
                recommend(candidates, objectives, margin(frame, tolerance)), "recommended"
            ] = True
    return frame.sort_values("trial").reset_index(drop=True)


def scored(frame: pd.DataFrame, objectives: Objectives) -> pd.Index:
    """The complete trials with a value for every objective (none while a column is missing)."""
    if not all(n in frame.columns for n in objectives.names):
        return frame.index[:0]
    names = list(objectives.names)
    return frame.index[(frame["state"] == "COMPLETE") & frame[names].notna().all(axis=1)]


def on_front(frame: pd.DataFrame, objectives: Objectives) -> pd.Series:
    """Per row, whether it is on the Pareto front of the ``scored`` trials."""
    flags = pd.Series(False, index=frame.index)
    done = scored(frame, objectives)
    if len(done):
        maximize = tuple(objectives.higher_is_better(n) for n in objectives.names)
        columns = [frame.loc[done, n].to_numpy(float) for n in objectives.names]
        flags[done] = pareto_mask(*columns, maximize=maximize)
    return flags


def ship_columns(frame: pd.DataFrame, shipping: dict[str, Any]) -> pd.DataFrame:
    """Per complete trial, the file it ships: at ``shipping["precision"]``, or (``best``) the
    precision with the best validation accuracy among those measured (fp32 always; fp16, int8,
    int4 once quantized: ``report.quantize``) whose files fit ``max_model_bytes``, the smaller
    file on a tie. ``ship_precision``, ``ship_bytes``, ``ship_val_accuracy``,
    ``ship_test_accuracy``; empty where no measured precision fits (a precision named in
    ``search.precision`` ships unmeasured, its accuracies empty)."""
    precision = shipping.get("precision", "best")
    limit = shipping.get("max_model_bytes")
    candidates = schema.PRECISIONS if precision == "best" else (precision,)
    chosen = []
    for row in frame.to_dict("records"):
        options = []
        for p in candidates if row["state"] == "COMPLETE" else ():
            val, size = row[schema.accuracy_column("val", p)], row[schema.file_bytes_column(p)]
            # A precision asked for by name ships even where it was not measured
            # (report.quantize): its bytes are known, its accuracy stays empty.
            measured = pd.notna(val) or precision != "best"
            if measured and pd.notna(size) and (limit is None or size <= limit):
                test = row[schema.accuracy_column("test", p)]
                options.append((-float(val) if pd.notna(val) else math.inf, float(size), p, test))
        best = min(options, key=lambda o: o[:2]) if options else None
        chosen.append((best[2], best[1], -best[0] if math.isfinite(best[0]) else math.nan, best[3])
                      if best else (None,) + (math.nan,) * 3)  # fmt: skip
    names = ["ship_precision", "ship_bytes", "ship_val_accuracy", "ship_test_accuracy"]
    for i, name in enumerate(names):
        frame[name] = [c[i] for c in chosen]
    return frame


def recommend(done: pd.DataFrame, objectives: Objectives, tie_margin: float):
    """The index of the recommended trial among the complete trials ``done`` (see annotate)."""
    score = objectives.score(done)
    if objectives.size is None:
        best = done.assign(_score=score).sort_values(["_score", "params_total"],
                                                     ascending=[False, True])  # fmt: skip
        return best.index[0]
    within = done[score >= score.max() - tie_margin]
    size_up = not objectives.higher_is_better(objectives.size)
    best = within.assign(_score=score).sort_values([objectives.size, "_score"],
                                                   ascending=[size_up, False])  # fmt: skip
    return best.index[0]


def write_reports(
    frame: pd.DataFrame, out_dir: Path, *, tolerance: float, context: dict[str, Any]
) -> pd.DataFrame:
    """Write trials.csv, pareto.csv and report.html into ``out_dir``; return the annotated frame.

    ``context`` carries what the page shows besides the trials: ``study_name``, ``storage``,
    ``overrides`` (the sweep's command-line overrides), ``space`` (search key -> config key),
    ``config`` (the composed config as YAML) and ``environment`` (versions, device).
    """
    out_dir = Path(out_dir)
    objectives = Objectives.of(context.get("objectives"))
    table = annotate(frame, tolerance, objectives, context.get("shipping"))
    write_atomic(out_dir / "trials.csv", table.to_csv(index=False))
    write_atomic(out_dir / "pareto.csv", table[table["pareto"]].to_csv(index=False))
    noise = seed_noise(table)
    html_text = page.render(table, tolerance, context, noise, margin(table, tolerance))
    write_atomic(out_dir / "report.html", html_text)
    return table


def rebuild(storage: str, study_name: str, out_dir: Path, tolerance: float | None = None):
    """Rewrite trials.csv, pareto.csv and report.html of a study from its storage alone."""
    from sweep.search import storage as storages  # the storage readers (they import optuna)
    from sweep.search.study import load_study

    opened = storages.make_storage({"storage": storage}, create=False)
    study = load_study(opened, study_name, mask(storage))
    return rebuild_study(study, out_dir, tolerance, mask(storage))


def rebuild_study(study, out_dir: Path, tolerance: float | None, storage_text: str):
    """The reports of a loaded study, with the page context the study stored."""
    from sweep.search import loop as trials

    context = dict(study.user_attrs.get("report_context") or {"study_name": study.study_name})
    context["storage"] = storage_text
    if "objectives" not in context:  # stored before the page followed search.objectives
        names = study.metric_names or ["val_accuracy", "params_total"][: len(study.directions)]
        directions = [d.name.lower() for d in study.directions]
        context["objectives"] = [list(p) for p in zip(names, directions, strict=True)]
    context["importance"] = trials.importances(study)
    if tolerance is None:
        tolerance = float(context.get("tolerance", 0.5))
    frame = trials.trials_frame(study)
    if frame.empty:
        raise SystemExit(f"study {study.study_name!r} has no trials yet")
    return write_reports(frame, out_dir, tolerance=tolerance, context=context)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m sweep.report",
        description="Rebuild trials.csv, pareto.csv and report.html from a study storage.",
    )
    parser.add_argument("--storage", required=True,
                        help="Optuna storage URL (sqlite:///x.db, postgresql://...) or journal file")  # fmt: skip
    parser.add_argument("--study", required=True, help="study name (search.study_name)")
    parser.add_argument("--out", type=Path,
                        help="folder for the reports (default: outputs/STUDY/report)")  # fmt: skip
    parser.add_argument("--tolerance", type=float, help="accuracy points (default: the study's)")
    args = parser.parse_args(argv)
    out = args.out or Path("outputs") / Path(args.study).name / "report"
    try:
        table = rebuild(args.storage, args.study, out, args.tolerance)
    except ValueError as error:  # SearchError and friends: a message, not a traceback
        raise SystemExit(f"error: {error}") from None
    print(f"{len(table)} trials: {out / 'report.html'}")


if __name__ == "__main__":
    main()
