"""Benchmark: the default sweep alone and beside CPU-bound processes (a busy shared machine).

    python -m sweep.benchmarks.contention [--competitors 2] [--out bench/contention] [-- KEY=VALUE ...]

Runs ``run_sweep.py`` as a user would (default synthetic data, a fresh study, no seed repeats,
the default thread setting) once on an otherwise idle machine and once beside ``--competitors``
single-threaded busy loops, and prints both wall times and their ratio. Target: at most 2x on
the 2-core machine with 2 competitors. A sweep that spin-waits in OpenMP, or runs more threads
than the cores it can get, collapses here (8x before this benchmark existed). Overrides after
``--`` go to both runs (e.g. ``-- threads=2`` to compare a setting).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sweep.benchmarks.models import save_and_print, split_overrides

RUN_SWEEP = Path(__file__).resolve().parents[2] / "run_sweep.py"


def busy_loop(seconds: float) -> None:
    """A single-threaded CPU-bound competitor (pure Python arithmetic)."""
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        for i in range(10_000):
            x = (x * 31 + i) % 1_000_003


def timed_sweep(folder: Path, cache: Path, overrides: list[str]) -> tuple[float, int]:
    """Wall seconds of one default sweep in a fresh study, and its complete trials."""
    shutil.rmtree(folder, ignore_errors=True)
    argv = [sys.executable, str(RUN_SWEEP), "report.repeats=0", *overrides,
            f"search.storage_dir={folder / 'studies'}", f"data.cache_dir={cache}",
            f"hydra.run.dir={folder / 'run'}"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, cwd=folder.parent)
    seconds = time.perf_counter() - start
    table = pd.read_csv(folder / "run" / "trials.csv")
    return seconds, int((table["state"] == "COMPLETE").sum())


def main(argv: list[str] | None = None) -> None:
    own, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/contention"))
    parser.add_argument("--competitors", type=int, default=2)
    args = parser.parse_args(own)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    timed_sweep(out / "warm-up", cache, [*overrides, "search.n_trials=1"])  # fills the cache
    alone, trials_alone = timed_sweep(out / "alone", cache, overrides)
    competitors = [
        multiprocessing.Process(target=busy_loop, args=(3600,), daemon=True)
        for _ in range(args.competitors)
    ]
    for proc in competitors:
        proc.start()
    try:
        busy, trials_busy = timed_sweep(out / "busy", cache, overrides)
    finally:
        for proc in competitors:
            proc.terminate()
            proc.join()
    rows = [
        {"setting": "alone", "competitors": 0, "trials": trials_alone, "wall seconds": alone},
        {"setting": "beside busy loops", "competitors": args.competitors,
         "trials": trials_busy, "wall seconds": busy},
    ]  # fmt: skip
    table = pd.DataFrame(rows).round({"wall seconds": 1})
    table["ratio to alone"] = (table["wall seconds"] / alone).round(2)
    table["overrides"] = " ".join(overrides) or "(defaults)"
    save_and_print(table, out / "contention.csv")


if __name__ == "__main__":
    main()
