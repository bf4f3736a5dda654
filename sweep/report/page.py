"""report.html: one self-contained page (no network request of any kind) from an annotated frame.

Charts are inline SVG (``sweep.report.plots``); a few lines of inline script sort tables and show hover
tips. Every text that comes from data or config is escaped.
"""

from __future__ import annotations

import html
import math
import shlex
from collections.abc import Sequence
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from sweep import schema
from sweep.common.overrides import override_key
from sweep.common.secrets import HIDDEN
from sweep.report import plots, wording
from sweep.search.space import MAIN_AXES


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


def _pct(row: pd.Series, metric: str = "val_accuracy") -> str:
    """The accuracy as the console says it too (``sweep.report.wording``)."""
    return wording.accuracy(row, metric)


def html_table(frame: pd.DataFrame, columns: Sequence[str], table_id: str) -> str:
    """An HTML table (every cell escaped) whose headers sort it on click."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    # Plain dicts, not iterrows' Series (a missing column reads as None either way).
    for row in frame.to_dict("records"):
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


_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var i = th.cellIndex;
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


# The keys the training recipe may set (sweep.trial.recipe.KEYS), and the keys of a whole
# sweep that one trial alone does not take (several workers, a time budget).
RECIPE_KEYS = ("data.tokenizer.word_ngrams", "model.hidden_dim", "train.lr")
ALONE = ("search.workers", "search.worker_index", "search.timeout_s", "search.timeout_grace_s")


def reproduce_overrides(
    row: pd.Series, base: Sequence[str], space: dict[str, str], recipe: dict | None = None
) -> list[str]:
    """Command-line overrides that train exactly the configuration in ``row`` once.

    ``base`` are the sweep's own overrides; ``space`` maps each search key to the config key it
    sets (``embedding_dim`` and ``vocab_size`` to themselves); ``recipe`` is what the study's
    recipe probe stored (``choice``: {config key: value}). Each searched key is pinned, the
    probe's picks and the seed are set, so that the command run as printed probes nothing and
    trains the same model; its seed repeats are left out (they do not change the model).
    """
    # The recipe's keys only (the context is read back from a storage: never a _target_).
    choice = {k: v for k, v in dict((recipe or {}).get("choice") or {}).items()
              if k in RECIPE_KEYS}  # fmt: skip
    pinned = {"search.n_trials", "search.study_name", "seed", "report.repeats", *choice,
              *ALONE}  # fmt: skip
    out = [o for o in base if override_key(o) not in pinned and "_target_" not in o]
    out = [o for o in out if not o.lstrip("+~").startswith("search.space.")]
    out += [f"{key}={value}" for key, value in choice.items()]
    seed = row.get("seed")
    if seed is not None and not pd.isna(seed):
        out.append(f"seed={int(seed)}")
    for name, key in space.items():
        value = row[name]
        if name in MAIN_AXES:
            value = int(value)
            out += [f"search.space.{name}.low={value}", f"search.space.{name}.high={value}"]
        else:
            out += [f"~search.space.{name}", f"{key}={value}"]
    study = row.get("study_name") or "sweep"
    return out + ["report.repeats=0", "search.n_trials=1",
                  f"search.study_name={study}-recommended"]  # fmt: skip


# Stands for the storage password the page leaves out; the command reads it from the
# environment. Another key's secret (a data URL's token) gets SWEEP_SECRET_<KEY>.
SECRET_VARIABLE = "SWEEP_PASSWORD"


def secret_variable(key: str, index: int) -> str:
    """The environment variable that stands for the ``index``-th secret of override ``key``."""
    name = SECRET_VARIABLE if key == "search.storage" else (
        "SWEEP_SECRET_" + "".join(c if c.isalnum() else "_" for c in key.upper()))  # fmt: skip
    return name if index == 0 else f"{name}_{index + 1}"


def reproduce_command(overrides: Sequence[str]) -> tuple[str, str]:
    """(shell command, note): every override shell-quoted, so a value with spaces, quotes,
    ``$()`` or non-ASCII text runs as shown and never in the shell; each masked secret becomes
    ``${oc.env:VARIABLE}`` (``secret_variable``) and the note says which variables to set."""
    variables, out = [], []
    for override in overrides:
        key, parts = override_key(override), override.split(HIDDEN)
        names = [secret_variable(key, i) for i in range(len(parts) - 1)]
        variables += [(name, key) for name in names]
        out.append("".join(p + (f"${{oc.env:{names[i]}}}" if i < len(names) else "")
                           for i, p in enumerate(parts)))  # fmt: skip
    command = shlex.join(["python", "run_sweep.py", *out])
    note = ""
    if variables:
        note = ("Secrets are left out; the command reads them from the environment: "
                + "; ".join(f"export {name}=... (the secret of {key})"
                            for name, key in variables) + ".")  # fmt: skip
    return command, note


_TIP_JS = """
var tip = document.getElementById('tip');
document.querySelectorAll('[data-tip]').forEach(function (el) {
  el.addEventListener('mouseenter', function () { tip.textContent = el.dataset.tip; tip.style.display = 'block'; });
  el.addEventListener('mousemove', function (e) { tip.style.left = (e.pageX + 12) + 'px'; tip.style.top = (e.pageY + 12) + 'px'; });
  el.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
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
.scroll{max-height:480px;max-width:100%;overflow:auto}
.charts{display:flex;flex-wrap:wrap;gap:12px}
figure.chart{margin:0;border:1px solid #eee;padding:4px}
figcaption{font-weight:600;font-size:13px;margin:2px 4px}
#tip{position:absolute;display:none;background:#222;color:#fff;padding:4px 8px;border-radius:4px;
font-size:12px;pointer-events:none;max-width:420px}
"""

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("sweep.report", "templates"),
    autoescape=True,  # every value from data or config is escaped unless marked Markup
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,  # a name the template uses and the code forgot fails
)


def page(template: str, title: str, **values: Any) -> str:
    """A whole self-contained page from ``templates/<template>`` (which extends page.html.j2):
    the styles, the hover tip and the table sorting inline, no network request of any kind.
    ``values`` are escaped unless they are ``Markup`` (tables and charts built here)."""
    return _ENV.get_template(template).render(
        title=title, css=Markup(_CSS), script=Markup(_SORT_JS + _TIP_JS), **values
    )


def render(
    table: pd.DataFrame, tolerance: float, context: dict[str, Any], noise: float, tie_margin: float
) -> str:
    """The whole report page: no external resource, every user-provided text escaped."""
    objectives = schema.Objectives.of(context.get("objectives"))
    study = str(context.get("study_name", ""))
    counts = table["state"].value_counts().to_dict()
    count_text = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no trials"
    axes = list(context.get("space", {}))
    shown = schema.with_axes(schema.names(shown=True), axes)
    failed = table[table["state"].isin(["FAIL", "SKIPPED"])]
    failure_columns = ["trial", *[a for a in axes if a in table], "state", "fail_reason"]
    front = table[table["pareto"]].sort_values(objectives.size or objectives.quality)
    classes, notes = data_section(context.get("data", {}))
    recipe_text, recipe_table = recipe_section(context.get("recipe"))
    return page(
        "report.html.j2",
        f"Embedding sweep: {study}",
        study=study,
        storage=str(context.get("storage", "")),
        counts=count_text,
        ending=str(context.get("ending") or ""),
        front_axes=_front_axes(objectives),
        rec=recommendation(table, tolerance, context, noise, tie_margin, objectives),
        charts=Markup(charts(table, context, objectives)),
        front_count=len(front),
        front_table=Markup(html_table(front, shown, "pareto")),
        shipping_table=Markup(html_table(front, SHIPPING_COLUMNS, "shipping")),
        trials_table=Markup(html_table(table, shown, "trials")),
        failures_table=Markup(html_table(failed, failure_columns, "failures"))
        if len(failed)
        else "",
        classes_table=Markup(classes) if classes else "",
        data_notes=notes,
        recipe_text=recipe_text,
        recipe_table=Markup(recipe_table) if recipe_table else "",
        environment=[(str(k), str(v)) for k, v in context.get("environment", {}).items()],
        config=str(context.get("config", "")),
        timeline=timeline_rows(context.get("timeline") or []),
    )


def timeline_rows(timeline: Sequence) -> list[tuple[str, str, str, str]]:
    """(phase, seconds, share of the run so far, fits) per phase of the run's time line."""
    total = sum(float(seconds) for _, seconds, _ in timeline)
    return [(str(name), f"{float(seconds):.1f} s", f"{100 * float(seconds) / total:.0f}%",
             "" if fits is None else str(int(fits))) for name, seconds, fits in timeline
            if total > 0]  # fmt: skip


def _front_axes(objectives) -> str:
    if objectives.size is None:
        return f"the best {objectives.quality} (one objective: search.objectives)"
    return " against ".join(objectives.names)


def recommendation(table, tolerance, context, noise, tie_margin, objectives) -> dict | None:
    """What the page's box says of the recommended trial (None before any complete trial)."""
    rec = table[table["recommended"]]
    if rec.empty:
        return None
    row = rec.iloc[0].copy()
    row["study_name"] = str(context.get("study_name", ""))
    overrides = reproduce_overrides(row, context.get("overrides", []), context.get("space", {}),
                                    context.get("recipe"))  # fmt: skip
    command, secret_note = reproduce_command(overrides)
    axes = [a for a in context.get("space", {}) if a in row] or list(MAIN_AXES)
    return {
        "settings": ", ".join(f"{name}={_fmt(row[name])}" for name in axes),
        "num_embeddings": _fmt(row["num_embeddings"]),
        "params_total": _fmt(row["params_total"]),
        "params_embedding": _fmt(row["params_embedding"]),
        "val_accuracy": _pct(row),
        "test_accuracy": _pct(row, "test_accuracy"),
        "ship": _ship_text(row),
        "rule": _rule(table, tolerance, noise, tie_margin, objectives),
        "noise": _noise_text(noise, tie_margin),
        "command": command,
        "secret_note": secret_note,
    }


def _ship_text(row: pd.Series) -> str:
    """Where the recommended model ships: its precision, file bytes and accuracies there."""
    if not isinstance(row.get("ship_precision"), str):
        return "No measured precision of it fits search.max_model_bytes."
    if pd.isna(row.get("ship_val_accuracy")):
        measured = "its accuracy at that precision not measured (report.quantize)"
    else:
        measured = (f"validation accuracy {_pct(row, 'ship_val_accuracy')}, test accuracy "
                    f"{_pct(row, 'ship_test_accuracy')}")  # fmt: skip
    return (
        f"It ships at {row['ship_precision']}: {_fmt(row['ship_bytes'])} bytes of weights and "
        f"vocabulary, {measured} (search.precision, search.max_model_bytes; exported to model/)."
    )


# How the rule names the usual objectives.
_LABELS = {"params_total": "parameters", "val_accuracy": "validation accuracy"}


def _rule(table, tolerance, noise, tie_margin, objectives) -> str:
    """The recommendation rule in words, with the best trial it measures against."""
    quality = objectives.quality
    done = table[(table["state"] == "COMPLETE") & table[quality].notna()]
    best = done.loc[objectives.score(done).idxmax()]
    shown = _pct(best, quality) if quality.endswith("accuracy") else _fmt(best[quality])
    if objectives.size is None:
        return (
            f"the best {quality} ({objectives.directions[0]}d), {shown} (trial "
            f"{int(best['trial'])}); fewer parameters break a tie"
        )
    word = "highest" if objectives.higher_is_better(objectives.size) else "fewest"
    rule = (
        f"the {word} {_LABELS.get(objectives.size, objectives.size)} among the trials within "
        f"{tie_margin:.2f} points of the best {_LABELS.get(quality, quality)}, {shown} "
        f"(trial {int(best['trial'])})"
    )
    if math.isfinite(noise) and tie_margin > tolerance:
        return rule + (
            f"; {tie_margin:.2f} points is the seed noise, larger than report.tolerance "
            f"({tolerance:.2f})"
        )
    return rule + " (report.tolerance)"


def _noise_text(noise: float, tie_margin: float) -> str:
    if not math.isfinite(noise):
        return ""
    return (
        f"Seed noise: retrained trials vary by {noise:.2f} points (median standard deviation of "
        "validation accuracy over seeds). Where a trial was retrained, the recommendation ranks "
        f"by its mean over seeds, and trials within {tie_margin:.2f} points of the best tie, so "
        "no difference smaller than the noise counts as a win."
    )


def recipe_section(stored: dict[str, Any] | None) -> tuple[str, str]:
    """(what the study's recipe probe picked, its table: one row per choice it tried), from
    what ``sweep.trial.recipe.probe`` stored; a sentence alone when nothing was probed."""
    if not stored or not stored.get("choice"):
        return ("No key was left at auto: every trial trained with the recipe the config sets "
                "(columns recipe_lr, recipe_hidden_dim, recipe_word_ngrams).", "")  # fmt: skip
    picked = ", ".join(f"{key}={value}" for key, value in stored["choice"].items())
    sample = (f" on a sample of {stored['train_texts']} training texts (train.recipe.max_texts)"
              if stored.get("train_texts") else "")  # fmt: skip
    text = (f"Picked before the first trial: {picked}. The probe trained each choice at "
            f"embedding_dim={stored.get('embedding_dim')} and the cutoffs shown{sample}, in "
            f"{_fmt(stored.get('seconds'))} s; a choice replaces the first only where its "
            "validation accuracy beats it by more than train.recipe.margin; one clearly behind "
            "the incumbent at the first cutoff (train.recipe.stop_behind) stopped there.")  # fmt: skip
    frame = pd.DataFrame(stored.get("probes", []))
    if frame.empty:
        return text, ""
    for column in ("vocab_sizes", "epochs"):
        if column in frame:
            frame[column] = frame[column].map(lambda v: ", ".join(map(str, v)))
    return text, html_table(frame, list(frame.columns), "recipe")


def data_section(data: dict[str, Any]) -> tuple[str, list[str]]:
    """(table of documents per class and split, notes: rows dropped as empty, texts shared with
    train, the vocabulary); ("", []) when the study stored no data summary."""
    classes = data.get("classes")
    if not classes:
        return "", []
    splits = ("train", "validation", "test")
    frame = pd.DataFrame(
        [
            {"class": name, **{s: counts.get(s, 0) for s in splits}}
            for name, counts in classes.items()
        ]
    )
    frame.loc[len(frame)] = {"class": "all", **{s: int(frame[s].sum()) for s in splits}}
    notes = []
    for key, label in (
        ("dropped_empty", "Rows dropped for an empty text or label"),
        ("leakage", "Texts that also occur in train (leakage; accuracy on them is optimistic)"),
    ):
        counts = {s: n for s, n in data.get(key, {}).items() if n}
        if counts:
            notes.append(f"{label}: " + ", ".join(f"{s} {n}" for s, n in counts.items()) + ".")
    if "vocabulary" in data:
        notes.append(
            f"Vocabulary: {_fmt(data['vocabulary'])} distinct train words (and n-grams), "
            f"{_fmt(data.get('train_tokens'))} train tokens."
        )
    return html_table(frame, ["class", *splits], "classes"), notes


def _tips(frame: pd.DataFrame) -> list[str]:
    # The four columns only: itertuples over the whole frame (some 60 columns) cost more than
    # the rest of a chart (the page is rewritten after trials: runner.Reports).
    columns = ("trial", "embedding_dim", "vocab_size", "params_total", "val_accuracy")
    return [
        f"trial {int(trial)}: embedding_dim={_fmt(dim)}, vocab_size={_fmt(k)}, "
        f"params={_fmt(params)}, val_accuracy={_fmt(acc)}"
        for trial, dim, k, params, acc in zip(*(frame[c] for c in columns), strict=True)
    ]


def _bands(values: pd.Series, count: int = 3) -> list[tuple[float, float]]:
    """Up to ``count`` log-spaced bands covering ``values``."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return [(low, high)]
    edges = np.geomspace(low, high, count + 1)
    return [(edges[i], edges[i + 1]) for i in range(count)]


def charts(table: pd.DataFrame, context: dict[str, Any], objectives=None) -> str:
    """The report's charts, as SVG figures (the first follows ``search.objectives``)."""
    objectives = objectives or schema.DEFAULT_OBJECTIVES
    done = table[(table["state"] == "COMPLETE") & table["val_accuracy"].notna()]
    done = done.sort_values("trial")
    return "".join(
        [
            _front_chart(done, objectives, table),
            _heatmap(done),
            *_axis_charts(done),
            _coverage_chart(context.get("coverage_curve") or {}),
            _history_chart(table),
            plots.bars("6. Parameter importance for validation accuracy", context.get("importance") or {},
                       x_label="importance (PED-ANOVA, sums to 1)", chart_id="chart-importance"),
            _memory_chart(done),
            _precision_chart(done),
        ]
    )  # fmt: skip


_ACC = "validation accuracy (%)"


def _front_chart(done: pd.DataFrame, objectives, table: pd.DataFrame) -> str:
    """1. The quality objective against the size objective (params_total with one objective):
    trials grey, the front blue, the recommendation ringed; pruned trials (their accuracy when
    they stopped, never on the front) as hollow marks."""
    x = objectives.size or "params_total"
    y = objectives.quality
    others, front = done[~done["pareto"]], done[done["pareto"]].sort_values(x)
    pruned = table[(table["state"] == "PRUNED") & table[y].notna()]
    rec = done[done["recommended"]]
    y_label = _ACC if y == "val_accuracy" else y
    return plots.chart(
        f"1. {'Accuracy' if y == 'val_accuracy' else y} against {'parameters' if x == 'params_total' else x}",
        [
            plots.Series("trials", others[x], others[y], _tips(others), "#999"),
            *([plots.Series("pruned (stopped early)", pruned[x], pruned[y], _tips(pruned), "none",
                            marker_attrs='stroke="#999" stroke-width="1.5"')] if len(pruned) else []),
            plots.Series("Pareto front", front[x], front[y], _tips(front), plots.PALETTE[0], line=True),
            plots.Series(  # a ring around its front point, which stays visible inside
                "recommended", rec[x], rec[y], _tips(rec), "none", radius=8,
                marker_attrs='stroke="#d62728" stroke-width="3"',
            ),
        ],
        x_label=f"{x} (log scale)", y_label=y_label, x_log=True, chart_id="chart-front",
    )  # fmt: skip


def _heatmap(done: pd.DataFrame) -> str:
    """2. Best validation accuracy per (embedding_dim, vocab_size) cell, log-spaced bins."""
    cells: dict[tuple[int, int], tuple[float, str]] = {}
    x_labels: list[str] = []
    y_labels: list[str] = []
    if len(done):
        d_edges = np.geomspace(done["embedding_dim"].min(), done["embedding_dim"].max() + 1, 7)
        k_edges = np.geomspace(done["vocab_size"].min(), done["vocab_size"].max() + 1, 7)
        d_bin = np.clip(np.searchsorted(d_edges, done["embedding_dim"], side="right") - 1, 0, 5)
        k_bin = np.clip(np.searchsorted(k_edges, done["vocab_size"], side="right") - 1, 0, 5)
        x_labels = [f"{d_edges[i]:.0f}-{d_edges[i + 1]:.0f}" for i in range(6)]
        y_labels = [f"{k_edges[i]:.0f}-{k_edges[i + 1]:.0f}" for i in range(6)]
        grouped = done.assign(d=d_bin, k=k_bin).groupby(["d", "k"])["val_accuracy"]
        for (d, k), best in grouped.max().items():
            n = grouped.size()[(d, k)]
            cells[(int(d), int(k))] = (
                float(best),
                f"embedding_dim {x_labels[d]}, vocab_size {y_labels[k]}: best {best:.2f}% of {n} trials",
            )
    lo, hi = (done["val_accuracy"].min(), done["val_accuracy"].max()) if len(done) else (0, 1)
    return plots.heatmap("2. Best accuracy over embedding_dim and vocab_size", cells, x_labels, y_labels,
                         x_label="embedding_dim", y_label="vocab_size", value_range=(lo, hi), chart_id="chart-heatmap")  # fmt: skip


def _axis_charts(done: pd.DataFrame) -> list[str]:
    """3. Accuracy against one axis, one colour per band of the other; a line joins only trials
    of the same value of the other axis. A line across a band would join trials of different
    cutoffs (or widths): a drop that a small cutoff causes would read as "wider hurts"."""
    out = []
    for axis, other, number in (
        ("embedding_dim", "vocab_size", "3a"),
        ("vocab_size", "embedding_dim", "3b"),
    ):
        series = []
        if len(done):
            for i, (low, high) in enumerate(_bands(done[other])):
                band = done[(done[other] >= low) & (done[other] <= high)].sort_values(axis)
                name, color = f"{other} {low:.0f}-{high:.0f}", plots.PALETTE[i + 1]
                series.append(
                    plots.Series(name, band[axis], band["val_accuracy"], _tips(band), color)
                )
                for _, same in band.groupby(other):
                    if same[axis].nunique() > 1:
                        series.append(plots.Series(name, same[axis], same["val_accuracy"], (),
                                                   color, line=True, radius=0))  # fmt: skip
        out.append(plots.chart(f"{number}. Accuracy against {axis}, by {other} band (lines: one {other})",
                               series, x_label=f"{axis} (log scale)", y_label=_ACC, x_log=True,
                               chart_id=f"chart-{axis}"))  # fmt: skip
    return out


def _coverage_chart(curve: dict[str, list]) -> str:
    """4. Coverage and OOV rate against the cutoff, from the vocabulary itself."""
    ks = curve.get("vocab_size", [])
    series = []
    for key, name, color in (
        ("train_coverage", "train coverage", plots.PALETTE[2]),
        ("val_oov_rate", "validation OOV rate", plots.PALETTE[1]),
    ):
        values = curve.get(key, [])
        tips = [f"K={k}: {name} {100 * c:.1f}%" for k, c in zip(ks, values, strict=True)]
        series.append(
            plots.Series(name, ks, [100 * c for c in values], tips, color, line=True, radius=2)
        )
    return plots.chart("4. Train-token coverage and validation OOV rate against the cutoff", series,
                       x_label="vocab_size K (log scale)", y_label="% of tokens", x_log=True,
                       y_range=(0, 100), chart_id="chart-coverage")  # fmt: skip


def _history_chart(table: pd.DataFrame) -> str:
    """5. Optimisation history: each finished trial and the best so far."""
    finished = table[
        table["val_accuracy"].notna() & table["state"].isin(["COMPLETE", "PRUNED"])
    ].sort_values("trial")
    return plots.chart(
        "5. Optimisation history",
        [plots.Series("trial", finished["trial"], finished["val_accuracy"], _tips(finished), "#999"),
         plots.Series("best so far", finished["trial"], finished["val_accuracy"].cummax(), (), plots.PALETTE[0], line=True, radius=0)],
        x_label="trial", y_label=_ACC, chart_id="chart-history", x_integer=True)  # fmt: skip


def _memory_chart(done: pd.DataFrame) -> str:
    """7. Memory of the trial itself against parameters: measured on the GPU where there is
    one (with the estimate beside it), else the estimate; the process baseline every trial runs
    on (context workspaces, the corpus) drawn as a line."""
    measured = done["gpu_peak_mb"].notna().any() if "gpu_peak_mb" in done else False
    column, label = ("gpu_peak_mb", "trial's own peak (MiB, measured)") if measured else (
        "est_peak_mb", "trial's own peak (MiB, estimated; no GPU measured)")  # fmt: skip
    memory = done[done[column].notna()] if column in done else done.iloc[0:0]
    tips = [f"{t}, {column}={_fmt(m)}" for t, m in zip(_tips(memory), memory[column], strict=True)]
    series = [plots.Series(column, memory["params_total"], memory[column], tips, plots.PALETTE[3])]
    if measured:
        series.append(plots.Series("est_peak_mb", memory["params_total"], memory["est_peak_mb"],
                                   tips, plots.PALETTE[4]))  # fmt: skip
    base = "gpu_baseline_mb" if measured else "est_baseline_mb"
    if len(memory) and base in memory and memory[base].notna().any():
        level = float(memory[base].median())
        xs = [memory["params_total"].min(), memory["params_total"].max()]
        series.append(plots.Series(f"baseline ({base}, median {level:.0f})", xs, [level, level],
                                   (), "#999", line=True, radius=0))  # fmt: skip
    return plots.chart("7. Peak memory against parameters", series,
                       x_label="params_total (log scale)", y_label=label, x_log=True, chart_id="chart-memory")  # fmt: skip


def _staircase(xs: pd.Series, ys: pd.Series) -> tuple[list[float], list[float]]:
    """The points no other beats (smaller x and higher y): the front of accuracy against bytes."""
    front_x, front_y, best = [], [], -math.inf
    for x, y in sorted(zip(xs, ys, strict=True), key=lambda p: (p[0], -p[1])):
        if y > best:
            front_x.append(x)
            front_y.append(y)
            best = y
    return front_x, front_y


def _precision_chart(done: pd.DataFrame) -> str:
    """8. Shipping: validation accuracy against the exported files' bytes, the front at each
    precision (trials measured at it: report.quantize), the shipped file of the
    recommendation ringed."""
    series = []
    for i, precision in enumerate(schema.PRECISIONS):
        acc = schema.accuracy_column("val", precision)
        size = schema.file_bytes_column(precision)
        measured = done[done[acc].notna() & done[size].notna()] if acc in done else done.iloc[0:0]
        xs, ys = _staircase(measured[size].astype(float), measured[acc].astype(float))
        tips = [f"{precision}: {_fmt(x)} bytes, {y:.2f}%" for x, y in zip(xs, ys, strict=True)]
        series.append(plots.Series(f"{precision} front", xs, ys, tips, plots.PALETTE[i], line=True))
    rec = done[done["recommended"] & done["ship_bytes"].notna()]
    series.append(plots.Series(
        "shipped (recommended)", rec["ship_bytes"], rec["ship_val_accuracy"], _tips(rec), "none",
        radius=8, marker_attrs='stroke="#d62728" stroke-width="3"',
    ))  # fmt: skip
    return plots.chart("8. Accuracy against file size at each precision", series,
                       x_label="weights + vocabulary, bytes (log scale)", y_label=_ACC,
                       x_log=True, chart_id="chart-precision")  # fmt: skip


SHIPPING_COLUMNS = [
    "trial", "embedding_dim", "vocab_size",
    *(c for p in schema.PRECISIONS
      for c in (schema.accuracy_column("val", p), schema.file_bytes_column(p))),
    "ship_precision", "ship_bytes", "ship_test_accuracy",
]  # fmt: skip
