"""One command for a GPU box: the GPU tests, the memory table, CUDA against CPU, packing.

    python -m sweep.benchmarks.gpu --out bench/gpu          # at most about 6 minutes

Each step runs in its own process with its own time limit, so one that hangs or fails leaves
the others' figures; the summary table comes last:

1. ``python -m pytest -m gpu``: passed and failed counts (the memory bounds: the estimate within
   15% of the measured trial peak, the probe within 2%);
2. the memory table (``sweep.benchmarks.memory``): for every built-in model at the corners of
   the default space, the trial's own measured peak, the probe, the estimate and their ratios,
   and the measured and estimated process baseline;
3. the default sweep (12 trials, ``report.repeats=0``) with ``device=cuda`` and ``device=cpu``:
   wall time and trials per hour of each, process start included;
4. packed trials: the default sweep at ``search.pack=16`` on the GPU, with the default
   ``search.pack_padding`` (1.5: about 4 packs of 16 random configurations) and with 8 (about
   one): trials per hour, against pack 1 above.

With ``--datasets`` (the folder of real data sets; at most 3.5 minutes more): 16 random 20
Newsgroups CNN configurations trained alone and then packed on the GPU for 2 epochs each, at
``search.pack_padding=8`` (``sweep.benchmarks.packing --controlled 16 --trials 0 --device cuda
train.epochs=2 search.pack_padding=8``).

Without CUDA it says so and stops: every figure here is the GPU's.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sweep.benchmarks.models import markdown

ROOT = Path(__file__).resolve().parents[2]


def step(name: str, argv: list[str], timeout: int, cwd: Path = ROOT) -> dict:
    """Run one step; its wall time, exit code and output tail (a timeout is a result too)."""
    print(f"== {name}: {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    try:
        run = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        code, out = run.returncode, run.stdout + run.stderr
    except subprocess.TimeoutExpired as expired:
        code, out = "timeout", f"{expired.stdout or ''}{expired.stderr or ''}"
        out = out.decode() if isinstance(out, bytes) else out
    wall = time.perf_counter() - start
    print(out[-3000:], flush=True)
    return {"step": name, "seconds": round(wall, 1), "exit": code, "output": out}


def sweep_time(device: str, out: Path, extra: list[str], timeout: int) -> dict:
    name = f"default sweep, device={device} {' '.join(extra)}".strip()
    argv = [sys.executable, str(ROOT / "run_sweep.py"), f"device={device}", "search.n_trials=12",
            "report.repeats=0", "report.export=none", f"search.storage_dir={out / 'studies'}",
            f"hydra.run.dir={out / name.replace(' ', '_').replace('=', '-')}",
            f"search.study_name=gpu-bench-{device}-{len(extra)}-{int(time.time())}", *extra]  # fmt: skip
    result = step(name, argv, timeout)
    result["figure"] = sweep_figure(result)
    return result


def ended(result: dict) -> str:
    """How a step that did not exit 0 ended: 'timed out' or 'exit N'."""
    return "timed out" if result["exit"] == "timeout" else f"exit {result['exit']}"


def sweep_figure(result: dict) -> str:
    """Trials per hour of a sweep step, from the trials its progress lines say completed: a
    sweep cut by its time limit (or failing late) still gives its rate, marked as such."""
    done = len(re.findall(r"trial \d+/\d+ \(#\d+\) complete", result["output"]))
    if not done:
        return "failed" if result["exit"] != 0 else "no trial completed"
    rate = f"{done / result['seconds'] * 3600:.0f} trials/h"
    if result["exit"] == 0:
        return rate
    return f"{rate} ({done} trials in {result['seconds']} s, {ended(result)})"


def gpu_tests_figure(result: dict) -> str:
    """Passed and failed counts of the pytest step: its summary line, or (cut by its time
    limit before the summary) its verbose lines so far."""
    summaries = re.findall(r"^=+ (.*) in [\d.]+s.* =+$", result["output"], re.MULTILINE)
    if summaries:
        return ", ".join(f"{n} {what}" for n, what in
                         re.findall(r"(\d+) (passed|failed|errors?)", summaries[-1]))  # fmt: skip
    seen = re.findall(r"::\S+ (PASSED|FAILED|ERROR)", result["output"])
    counts = ", ".join(f"{seen.count(w)} {w.lower()}" for w in ("PASSED", "FAILED", "ERROR")
                       if w in seen)  # fmt: skip
    return (
        f"{counts or 'no result'} ({'timed out' if result['exit'] == 'timeout' else 'no summary'})"
    )


def memory_figure(result: dict, table_path: Path) -> str:
    """The memory table's ratio ranges (its rows so far, if the step was cut short)."""
    if not table_path.is_file():
        return "failed"
    try:
        table = pd.read_csv(table_path)
    except pd.errors.EmptyDataError:  # written before any model had a complete trial
        return "no row"
    if table.empty:
        return "no row"
    figure = (f"est/measured {table['est / measured'].min():.2f}-"
              f"{table['est / measured'].max():.2f}, probe/measured "
              f"{table['probe / measured'].min():.3f}-{table['probe / measured'].max():.3f}")  # fmt: skip
    if result["exit"] != 0:
        figure += f" ({len(table)} rows, {ended(result)})"
    return figure


def controlled_20ng(datasets: Path, out: Path) -> dict:
    """16 random 20 Newsgroups CNN configurations alone, then packed, on the GPU, 2 epochs
    each, at search.pack_padding=8 (the ratio is per step; 16, as in a sweep at search.pack=16:
    4 could never show 5x, and grouped by width at the default 1.5 they make packs of 2.6 trials
    at most on average)."""
    argv = [sys.executable, "-m", "sweep.benchmarks.packing", "--datasets", str(datasets),
            "--out", str(out / "packing"), "--device", "cuda", "--setups", "20NG CNN",
            "--controlled", "16", "--trials", "0", "train.epochs=2",
            "search.pack_padding=8"]  # fmt: skip
    result = step("20NG CNN alone vs packed (pack_padding 8)", argv, 200)
    table = out / "packing" / "packing_controlled.csv"
    if result["exit"] == 0 and table.is_file():
        row = pd.read_csv(table).iloc[0]
        result["figure"] = (f"{row['alone_s']} s alone, {row['packed_s']} s packed "
                            f"({row['speed-up']}x, same val_accuracy {row['same val_accuracy']})")  # fmt: skip
    else:
        result["figure"] = "failed"
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweep.benchmarks.gpu",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/gpu"))
    parser.add_argument("--datasets", type=Path, help="real data sets: adds 20 Newsgroups packing")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device here: this command measures a GPU (docs/parallel.md 'On a GPU box')"
        )
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}", flush=True)
    rows = []
    tests = step("pytest -m gpu", [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-p",
                                   "no:cacheprovider", "tests/test_gpu.py"], 90)  # fmt: skip
    tests["figure"] = gpu_tests_figure(tests)
    rows.append(tests)
    (out / "memory" / "memory.csv").unlink(missing_ok=True)  # a table of an earlier run
    memory = step("memory table", [sys.executable, "-m", "sweep.benchmarks.memory", "--out",
                                   str(out / "memory"), "--device", "cuda"], 100)  # fmt: skip
    memory["figure"] = memory_figure(memory, out / "memory" / "memory.csv")
    rows.append(memory)
    rows.append(sweep_time("cuda", out, [], 50))
    rows.append(sweep_time("cpu", out, [], 45))
    rows.append(sweep_time("cuda", out, ["search.pack=16"], 40))
    rows.append(sweep_time("cuda", out, ["search.pack=16", "search.pack_padding=8"], 40))
    if args.datasets is not None:
        rows.append(controlled_20ng(args.datasets.resolve(), out))
    summary = pd.DataFrame(
        [{k: r.get(k, "") for k in ("step", "seconds", "exit", "figure")} for r in rows]
    )
    (out / "summary.json").write_text(json.dumps(summary.to_dict("records"), indent=1))
    print(markdown(summary))


if __name__ == "__main__":
    main()
