"""report.html in a real headless Chromium: no console error, no request, every chart drawn.

Needs Debian's chromium (.ci/run installs it) and the playwright package (the dev extra; it
drives the system browser, it downloads none).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import optuna
import pytest

from sweep.report import build as report
from sweep.report.summary import summarize
from sweep.search.storage import journal_storage

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"),
        reason="no chromium here (CI installs it and never skips)",
    ),
]


def synthetic_storage(path: Path, n_trials: int, name: str = "big") -> str:
    """A journal storage holding ``n_trials`` made-up trials of every state (no training)."""
    storage = journal_storage(path)
    study = optuna.create_study(
        storage=storage, study_name=name, directions=["maximize", "minimize"]
    )
    rng = random.Random(0)
    dist = {
        "embedding_dim": optuna.distributions.IntDistribution(4, 256, log=True),
        "vocab_size": optuna.distributions.IntDistribution(100, 20000, log=True),
    }
    trials = []
    for number in range(n_trials):
        d, k = rng.randint(4, 256), rng.randint(100, 20000)
        params_total = (k + 2) * d + d * 64 + 64 + 64 * 4 + 4
        acc = min(95.0, 40 + 12 * (d**0.2) + 4 * (k**0.15) + rng.gauss(0, 2))
        attrs = {"val_accuracy": acc, "test_accuracy": acc - 1, "params_total": params_total,
                 "params_embedding": (k + 2) * d, "num_embeddings": k + 2, "vocab_size": k,
                 "est_peak_mb": params_total * 16 / 2**20, "train_coverage": 0.9,
                 "val_oov_rate": 0.1, "model": "bag <b>&</b>",
                 **{f"file_bytes_{p}": params_total * w + 8 * k
                    for p, w in (("fp32", 4), ("fp16", 2), ("int8", 1), ("int4", 0.5))}}  # fmt: skip
        if number % 3 == 0:  # measured at the lower precisions (a front, report.quantize)
            attrs.update(val_accuracy_fp16=acc, val_accuracy_int8=acc - 0.1,
                         val_accuracy_int4=acc - 1.5, test_accuracy_int8=acc - 1.1)  # fmt: skip
        state = optuna.trial.TrialState.COMPLETE if number % 50 else optuna.trial.TrialState.FAIL
        if state == optuna.trial.TrialState.FAIL:
            attrs["fail_reason"] = "RuntimeError: <script>alert('x')</script>"
        trials.append(optuna.trial.create_trial(
            params={"embedding_dim": d, "vocab_size": k}, distributions=dist,
            values=[acc, params_total] if state == optuna.trial.TrialState.COMPLETE else None,
            state=state, user_attrs=attrs))  # fmt: skip
    study.add_trials(trials)
    ks = [1, 10, 100, 1000, 10000, 20000]
    study.set_user_attr("report_context", {
        "study_name": name, "space": {"embedding_dim": "embedding_dim", "vocab_size": "vocab_size"},
        "coverage_curve": {"vocab_size": ks, "train_coverage": [0.1, 0.3, 0.6, 0.85, 0.98, 1.0],
                           "val_oov_rate": [0.9, 0.7, 0.45, 0.2, 0.06, 0.04]},
        "config": "label: <img src=x onerror=alert(1)>", "tolerance": 0.5})  # fmt: skip
    return str(path)


def open_in_chromium(page_path: Path, screenshot: Path, top: Path | None = None) -> dict:
    """Load the page; return console errors, requests leaving the file, load seconds, chart stats.
    ``screenshot``: the whole page after the clicks; ``top``: the window as first loaded."""
    from playwright.sync_api import sync_playwright

    url = page_path.resolve().as_uri()
    errors, requests = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url) if r.url != url else None)
        start = time.perf_counter()
        page.goto(url, wait_until="load")
        seconds = time.perf_counter() - start
        if top is not None:
            page.screenshot(path=str(top))
        charts = page.eval_on_selector_all(
            "figure.chart svg",
            "els => els.map(s => s.querySelectorAll('circle,rect,polyline').length)",
        )
        ids = page.eval_on_selector_all("figure.chart", "els => els.map(e => e.id)")
        # Hover a point: the tooltip shows the trial's settings.
        page.hover("#chart-front circle[data-tip]")
        tip = page.inner_text("#tip")
        # Sort the trial table by a column: the first row changes to the smallest value.
        page.click("#trials th:nth-child(3)")
        first = page.inner_text("#trials tbody tr:first-child td:nth-child(3)")
        alerts = page.evaluate("typeof window.__alerted")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return {"errors": errors, "requests": requests, "seconds": seconds, "charts": charts,
            "ids": ids, "tip": tip, "first": first, "alerts": alerts}  # fmt: skip


def test_big_report_renders_offline_fast_and_small(tmp_path):
    storage = synthetic_storage(tmp_path / "journal.log", 1000)
    table = report.rebuild(storage, "big", tmp_path / "out")
    assert len(table) == 1000
    page_path = tmp_path / "out" / "report.html"
    size_mb = page_path.stat().st_size / 2**20
    assert size_mb < 10, f"report.html is {size_mb:.1f} MB"
    result = open_in_chromium(page_path, tmp_path / "report.png")
    print(f"1000-trial report: {size_mb:.2f} MB, loaded in {result['seconds']:.2f} s")
    assert result["errors"] == []
    assert result["requests"] == []
    assert result["seconds"] < 5
    assert result["ids"] == ["chart-front", "chart-heatmap", "chart-embedding_dim",
                             "chart-vocab_size", "chart-coverage", "chart-history",
                             "chart-importance", "chart-memory", "chart-precision"]  # fmt: skip
    assert all(n > 0 for n in result["charts"]), result["charts"]
    assert result["tip"].startswith("trial ") and "embedding_dim=" in result["tip"]
    assert result["first"].strip() == "4"  # sorted by embedding_dim, ascending
    assert result["alerts"] == "undefined"
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_real_sweep_report_in_chromium(tiny_cfg, tmp_path):
    """A real sweep's page. The window as a person first sees it is a PNG; with
    ``SWEEP_DOCS_SCREENSHOT=FILE`` it is copied to FILE, and ``SWEEP_DOCS_REPORT=report.html``
    shoots that page instead of the tiny sweep's: docs/img/report.png is the README example's
    report (``SWEEP_DOCS_REPORT=outputs/.../report.html SWEEP_DOCS_SCREENSHOT=docs/img/report.png
    python -m pytest tests/test_browser.py -m slow -k real_sweep``)."""
    from sweep.runner import run

    page_path = Path(os.environ.get("SWEEP_DOCS_REPORT", tmp_path / "out" / "report.html"))
    if "SWEEP_DOCS_REPORT" not in os.environ:
        run(tiny_cfg, tmp_path / "out")
    top = tmp_path / "top.png"
    result = open_in_chromium(page_path, tmp_path / "shot.png", top=top)
    assert result["errors"] == [] and result["requests"] == []
    assert all(n > 0 for n in result["charts"][:6]), result["charts"]
    assert png_width(top) == 1280 and top.stat().st_size > 20_000  # drawn, not blank
    if os.environ.get("SWEEP_DOCS_SCREENSHOT"):
        shutil.copyfile(top, os.environ["SWEEP_DOCS_SCREENSHOT"])


LAYOUT_JS = """
svgs => svgs.map(svg => {
  const box = svg.getBoundingClientRect(), bad = [];
  const inside = (b, o) => b.left >= o.left - 1 && b.right <= o.right + 1 &&
                           b.top >= o.top - 1 && b.bottom <= o.bottom + 1;
  svg.querySelectorAll('text').forEach(t => {
    if (!inside(t.getBoundingClientRect(), box)) bad.push('text outside: ' + t.textContent);
  });
  const frame = svg.querySelector('rect[fill="#fafafa"]');  // a chart's plot area
  if (frame) {
    const area = frame.getBoundingClientRect();
    svg.querySelectorAll('line[stroke="#e6e6e6"]').forEach(l => {
      if (!inside(l.getBoundingClientRect(), area)) bad.push('gridline outside the axes');
    });
  }
  return bad;
}).flat()
"""


def png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def layout_at(page_path: Path, width: int, screenshot: Path) -> dict:
    """Open the page ``width`` px wide: horizontal overflow, text or gridlines outside a chart."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        problems = page.eval_on_selector_all("figure.chart svg", LAYOUT_JS)
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return {"overflow": overflow, "problems": problems, "shot_width": png_width(screenshot)}


@pytest.mark.parametrize("width", [1400, 800])
def test_report_and_summary_fit_the_window(tmp_path, width):
    storage = synthetic_storage(tmp_path / "journal.log", 60)
    report.rebuild(storage, "big", tmp_path / "out")
    job = tmp_path / "mr" / "0-big"  # a multirun folder holding that study as one job
    job.mkdir(parents=True)
    shutil.copy(tmp_path / "out" / "trials.csv", job / "trials.csv")
    summarize(tmp_path / "mr")
    for page_path in (tmp_path / "out" / "report.html", tmp_path / "mr" / "summary.html"):
        shot = tmp_path / f"{page_path.stem}-{width}.png"
        result = layout_at(page_path, width, shot)
        assert result["overflow"] <= 0, f"{page_path.name} scrolls sideways at {width} px"
        assert result["shot_width"] == width  # the screenshot is no wider than the window
        assert result["problems"] == [], result["problems"]
