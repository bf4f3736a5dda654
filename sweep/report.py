"""Stage 7, report: trials.csv, pareto.csv and a self-contained report.html from a trials frame.

Input is the frame ``sweep.trials.trials_frame`` builds from the study storage, so reports can be
rebuilt from the storage alone. The Pareto front is the set of complete trials that no other
complete trial beats on both validation accuracy (higher) and params_total (lower). The
recommendation is the trial with the fewest parameters whose validation accuracy is within
``tolerance`` points of the best. Every file is written to a temp file, then renamed, so a killed
run always leaves complete reports.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep import page
from sweep.atomic import replacing
from sweep.secrets import mask

# Stable column order of trials.csv (documented in the README); extra params follow.
COLUMNS = [
    "trial",
    "state",
    "fail_reason",
    "embedding_dim",
    "vocab_size",
    "num_embeddings",
    "hash_buckets",
    "min_freq",
    "train_coverage",
    "val_oov_rate",
    "params_total",
    "params_embedding",
    "embedding_share",
    "model_mb",
    "embedding_mb_fp32",
    "embedding_mb_fp16",
    "embedding_mb_int8",
    "rest_mb_fp32",
    "rest_mb_fp16",
    "rest_mb_int8",
    "val_accuracy",
    "test_accuracy",
    "val_accuracy_mean",
    "val_accuracy_std",
    "test_accuracy_mean",
    "test_accuracy_std",
    "seeds",
    "val_loss",
    "epochs",
    "best_epoch",
    "pruned_epoch",
    "reused_from",
    "train_seconds",
    "cutoff_seconds",
    "tokens_per_second",
    "examples_per_second",
    "eval_tokens_per_second",
    "eval_examples_per_second",
    "gpu_peak_mb",
    "gpu_reserved_mb",
    "est_peak_mb",
    "est_embedding_mb",
    "budget_excess",
    "device",
    "seed",
    "model",
    "pareto",
    "recommended",
    "datetime_start",
    "duration_seconds",
]


def pareto_mask(accuracy: np.ndarray, params: np.ndarray) -> np.ndarray:
    """True where no other point has accuracy >= and params <= with one of them strict."""
    accuracy, params = np.asarray(accuracy, float), np.asarray(params, float)
    better_or_equal = (accuracy[None, :] >= accuracy[:, None]) & (
        params[None, :] <= params[:, None]
    )
    strictly = (accuracy[None, :] > accuracy[:, None]) | (params[None, :] < params[:, None])
    return ~(better_or_equal & strictly).any(axis=1)


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


def annotate(frame: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Return the frame with stable columns and the ``pareto`` and ``recommended`` flags.

    The recommendation ranks by ``val_accuracy_mean`` where extra seeds were run, and treats
    differences below ``margin`` (tolerance or seed noise) as ties: no win smaller than noise.
    """
    frame = frame.copy()
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = math.nan
    frame["pareto"] = False
    frame["recommended"] = False
    done = frame.index[(frame["state"] == "COMPLETE") & frame["val_accuracy"].notna()]
    if len(done):
        accuracy = frame.loc[done, "val_accuracy"].to_numpy(float)
        params = frame.loc[done, "params_total"].to_numpy(float)
        frame.loc[done, "pareto"] = pareto_mask(accuracy, params)
        score = frame.loc[done, "val_accuracy_mean"].fillna(frame.loc[done, "val_accuracy"])
        score = score.to_numpy(float)
        within = frame.loc[done][score >= score.max() - margin(frame, tolerance)]
        best = within.sort_values(["params_total", "val_accuracy"], ascending=[True, False])
        frame.loc[best.index[0], "recommended"] = True
    extras = [c for c in frame.columns if c not in COLUMNS]
    return frame[COLUMNS + extras].sort_values("trial").reset_index(drop=True)


class ReportError(OSError):
    """A report file could not be written (full disk, no permission); one line for the user."""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename.

    An ``OSError`` becomes a ``ReportError`` naming the folder and its free space; the old file
    (if any) is left whole.
    """
    path = Path(path)
    try:
        with replacing(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    except OSError as error:
        raise ReportError(
            f"cannot write the report {str(path)!r} ({error.strerror or error}); "
            f"{free_space(path.parent)} free in {str(path.parent)!r}. Free some space or "
            "choose another folder (hydra.run.dir=...); the study storage keeps every finished "
            "trial: rerun the same command, or python -m sweep.report, to write the reports"
        ) from None


def free_space(folder: Path) -> str:
    """Free space on ``folder``'s file system in MB (e.g. ``12.3 MB``), or ``unknown``."""
    import shutil

    try:
        return f"{shutil.disk_usage(folder).free / 1e6:,.1f} MB"
    except OSError:
        return "unknown"


def write_reports(
    frame: pd.DataFrame, out_dir: Path, *, tolerance: float, context: dict[str, Any]
) -> pd.DataFrame:
    """Write trials.csv, pareto.csv and report.html into ``out_dir``; return the annotated frame.

    ``context`` carries what the page shows besides the trials: ``study_name``, ``storage``,
    ``overrides`` (the sweep's command-line overrides), ``space`` (search key -> config key),
    ``config`` (the composed config as YAML) and ``environment`` (versions, device).
    """
    out_dir = Path(out_dir)
    table = annotate(frame, tolerance)
    write_atomic(out_dir / "trials.csv", table.to_csv(index=False))
    write_atomic(out_dir / "pareto.csv", table[table["pareto"]].to_csv(index=False))
    noise = seed_noise(table)
    html_text = page.render(table, tolerance, context, noise, margin(table, tolerance))
    write_atomic(out_dir / "report.html", html_text)
    return table


def rebuild(storage: str, study_name: str, out_dir: Path, tolerance: float | None = None):
    """Rewrite trials.csv, pareto.csv and report.html of a study from its storage alone."""
    from sweep import storage as storages  # the storage readers (they import optuna)
    from sweep import trials

    opened = storages.make_storage({"storage": storage}, create=False)
    study = trials.load_study(opened, study_name, mask(storage))
    return rebuild_study(study, out_dir, tolerance, mask(storage))


def rebuild_study(study, out_dir: Path, tolerance: float | None, storage_text: str):
    """The reports of a loaded study, with the page context the study stored."""
    from sweep import trials

    context = dict(study.user_attrs.get("report_context") or {"study_name": study.study_name})
    context["storage"] = storage_text
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
    parser.add_argument("--out", required=True, type=Path, help="folder for the reports")
    parser.add_argument("--tolerance", type=float, help="accuracy points (default: the study's)")
    args = parser.parse_args(argv)
    try:
        table = rebuild(args.storage, args.study, args.out, args.tolerance)
    except ValueError as error:  # SearchError and friends: a message, not a traceback
        raise SystemExit(f"error: {error}") from None
    print(f"{len(table)} trials: {args.out / 'report.html'}")


if __name__ == "__main__":
    main()
