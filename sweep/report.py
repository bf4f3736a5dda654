"""Stage 7, report: trials.csv, pareto.csv and a self-contained report.html from a trials frame.

Input is the frame ``sweep.search.trials_frame`` builds from the study storage, so reports can be
rebuilt from the storage alone. The Pareto front is the set of complete trials that no other
complete trial beats on both validation accuracy (higher) and params_total (lower). The
recommendation is the trial with the fewest parameters whose validation accuracy is within
``tolerance`` points of the best. Every file is written to a temp file, then renamed, so a killed
run always leaves complete reports.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
    "tokens_per_second",
    "gpu_peak_mb",
    "gpu_reserved_mb",
    "est_peak_mb",
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


def reproduce_overrides(row: pd.Series, base: Sequence[str], space: dict[str, str]) -> list[str]:
    """Command-line overrides that train exactly the configuration in ``row`` once.

    ``base`` are the sweep's own overrides; ``space`` maps each search key to the config key it
    sets (``embedding_dim`` and ``vocab_size`` to themselves). Each searched key is pinned.
    """
    pinned = {"search.n_trials", "search.study_name"}
    out = [o for o in base if o.split("=", 1)[0].lstrip("+~") not in pinned]
    out = [o for o in out if not o.lstrip("+~").startswith("search.space.")]
    for name, key in space.items():
        value = row[name]
        if (
            isinstance(value, float)
            and value.is_integer()
            and name in ("embedding_dim", "vocab_size")
        ):
            value = int(value)
        if name in ("embedding_dim", "vocab_size"):
            out += [f"search.space.{name}.low={value}", f"search.space.{name}.high={value}"]
        else:
            out += [f"~search.space.{name}", f"{key}={value}"]
    study = row.get("study_name") or "sweep"
    return out + ["search.n_trials=1", f"search.study_name={study}-recommended"]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    write_atomic(out_dir / "report.html", render_html(table, tolerance, context))
    return table


# ---------------------------------------------------------------------------------------------
# HTML


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (float, np.floating)):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return str(value)


def html_table(frame: pd.DataFrame, columns: Sequence[str], table_id: str) -> str:
    """An HTML table (every cell escaped) whose headers sort it on click."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for _, row in frame.iterrows():
        cls = ' class="rec"' if row.get("recommended") else ""
        cells = []
        for c in columns:
            value = row.get(c)
            sort_key = "" if _fmt(value) == "" else html.escape(str(value), quote=True)
            cells.append(f'<td data-v="{sort_key}">{html.escape(_fmt(value))}</td>')
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def scatter_svg(table: pd.DataFrame, width: int = 720, height: int = 400) -> str:
    """Validation accuracy against params_total (log axis): trials, front and recommendation."""
    done = table[(table["state"] == "COMPLETE") & table["val_accuracy"].notna()]
    if done.empty:
        return "<p>No complete trial yet.</p>"
    left, right, top, bottom = 60, 20, 20, 50
    x = np.log10(done["params_total"].to_numpy(float))
    y = done["val_accuracy"].to_numpy(float)
    x0, x1 = math.floor(x.min()), math.ceil(x.max())
    x1 = x1 if x1 > x0 else x0 + 1
    y0, y1 = math.floor(y.min() / 5) * 5, min(math.ceil(y.max() / 5) * 5, 100)
    y1 = y1 if y1 > y0 else y0 + 5

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def py(v: float) -> float:
        return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'role="img" aria-label="validation accuracy against parameter count">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for power in range(x0, x1 + 1):
        parts.append(
            f'<line x1="{px(power):.1f}" x2="{px(power):.1f}" y1="{top}" y2="{height - bottom}" '
            f'stroke="#e4e4e4"/><text x="{px(power):.1f}" y="{height - bottom + 16}" '
            f'text-anchor="middle" font-size="12">1e{power}</text>'
        )
    for tick in np.linspace(y0, y1, 6):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
            f'stroke="#e4e4e4"/><text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" '
            f'font-size="12">{tick:.0f}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle" '
        'font-size="13">params_total (log scale)</text>'
        f'<text transform="translate(16 {(top + height - bottom) / 2}) rotate(-90)" '
        'text-anchor="middle" font-size="13">validation accuracy (%)</text>'
    )
    front = done[done["pareto"]].sort_values("params_total")
    if len(front) > 1:
        points = " ".join(
            f"{px(math.log10(p)):.1f},{py(a):.1f}"
            for p, a in zip(front["params_total"], front["val_accuracy"], strict=True)
        )
        parts.append(f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for _, row in done.iterrows():
        cx, cy = px(math.log10(row["params_total"])), py(row["val_accuracy"])
        tip = html.escape(
            f"trial {row['trial']}: embedding_dim={_fmt(row['embedding_dim'])}, "
            f"vocab_size={_fmt(row['vocab_size'])}, params={_fmt(row['params_total'])}, "
            f"val_accuracy={_fmt(row['val_accuracy'])}"
        )
        if row["recommended"]:
            style = 'r="8" fill="#d62728" stroke="#000"'
        elif row["pareto"]:
            style = 'r="5" fill="#1f77b4"'
        else:
            style = 'r="4" fill="#999" fill-opacity="0.7"'
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" {style}><title>{tip}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, i) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], asc = th.dataset.asc !== '1';
    th.dataset.asc = asc ? '1' : '0';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f0f0f0;cursor:pointer;position:sticky;top:0}
tr.rec td{background:#fde8e8;font-weight:600}
code,pre{background:#f6f6f6;padding:2px 4px}
pre{padding:8px;white-space:pre-wrap;word-break:break-all}
.box{border:2px solid #d62728;padding:8px 14px;border-radius:6px}
.scroll{max-height:480px;overflow:auto}
"""

_SHOWN = [
    "trial", "state", "embedding_dim", "vocab_size", "num_embeddings", "min_freq",
    "train_coverage", "val_oov_rate", "params_total", "params_embedding", "model_mb",
    "val_accuracy", "test_accuracy", "val_accuracy_mean", "val_accuracy_std", "seeds",
    "val_loss", "epochs", "train_seconds",
    "tokens_per_second", "gpu_peak_mb", "est_peak_mb", "pareto", "recommended",
]  # fmt: skip


def render_html(table: pd.DataFrame, tolerance: float, context: dict[str, Any]) -> str:
    """The whole report page: no external resource, every user-provided text escaped."""
    esc = html.escape
    study = str(context.get("study_name", ""))
    counts = table["state"].value_counts().to_dict()
    count_text = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no trials"
    extra = [c for c in context.get("space", {}) if c not in ("embedding_dim", "vocab_size")]
    shown = _SHOWN[:4] + [c for c in extra if c in table.columns] + _SHOWN[4:]
    done = table[table["state"] == "COMPLETE"]
    rec = table[table["recommended"]]
    if rec.empty:
        summary = "<p>No complete trial yet: no recommendation.</p>"
    else:
        row = rec.iloc[0].copy()
        row["study_name"] = study
        best = done["val_accuracy"].max()
        noise = seed_noise(table)
        noise_text = ""
        if math.isfinite(noise):
            seeds = _fmt(row["seeds"]) or "1"
            noise_text = (
                f"<p>Seed noise: retrained front trials vary by {esc(_fmt(noise))} points "
                "(median standard deviation of validation accuracy over seeds). The "
                f"recommendation ranks by the mean over seeds (this one: "
                f"{esc(_fmt(row['val_accuracy_mean']))}% +- {esc(_fmt(row['val_accuracy_std']))}"
                f" over {esc(seeds)} seeds) and treats trials within "
                f"{esc(_fmt(margin(table, tolerance)))} points of the best as ties, so no "
                "difference smaller than the noise counts as a win.</p>"
            )
        overrides = reproduce_overrides(row, context.get("overrides", []), context.get("space", {}))
        command = "python run_sweep.py " + " ".join(overrides)
        settings = ", ".join(
            f"{name}={_fmt(row[name])}" for name in ["embedding_dim", "vocab_size", *extra]
        )
        summary = (
            '<div class="box"><h2>Recommended configuration</h2>'
            f"<p><b>{esc(settings)}</b> (num_embeddings={esc(_fmt(row['num_embeddings']))}): "
            f"{esc(_fmt(row['params_total']))} parameters "
            f"({esc(_fmt(row['params_embedding']))} in the embedding table), "
            f"validation accuracy {esc(_fmt(row['val_accuracy']))}% "
            f"(best {esc(_fmt(best))}%, tolerance {esc(_fmt(tolerance))} points), "
            f"test accuracy {esc(_fmt(row['test_accuracy']))}%.</p>{noise_text}"
            f"<p>Reproduce it alone:</p><pre>{esc(command)}</pre></div>"
        )
    failed = table[table["state"].isin(["FAIL", "SKIPPED"])]
    failures = (
        html_table(
            failed, ["trial", "embedding_dim", "vocab_size", "state", "fail_reason"], "failures"
        )
        if len(failed)
        else "<p>None.</p>"
    )
    environment = "".join(
        f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
        for k, v in context.get("environment", {}).items()
    )
    front = table[table["pareto"]].sort_values("params_total")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>Embedding sweep: {esc(study)}</title><style>{_CSS}</style></head>
<body>
<h1>Embedding sweep: {esc(study)}</h1>
<p>Storage <code>{esc(str(context.get("storage", "")))}</code>. Trials: {esc(count_text)}.
Accuracies are in percent; the front is validation accuracy against params_total.</p>
{summary}
<h2>Accuracy against size</h2>
<p>Grey: trials; blue: Pareto front; red: recommended. Hover a point for its settings.</p>
{scatter_svg(table)}
<h2>Pareto front ({len(front)} trials)</h2>
{html_table(front, shown, "pareto")}
<h2>All trials</h2>
<div class="scroll">{html_table(table, shown, "trials")}</div>
<h2>Failed trials</h2>
{failures}
<h2>Environment</h2>
<table>{environment}</table>
<h2>Config</h2>
<pre>{esc(str(context.get("config", "")))}</pre>
<script>{_SORT_JS}</script>
</body></html>
"""
