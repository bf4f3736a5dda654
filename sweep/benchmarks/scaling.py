"""Benchmark: trials per hour with 1 and more workers on one study.

    python -m sweep.benchmarks.scaling --out bench/scaling [--workers 1 2] [--models bag] [-- KEY=VALUE ...]

Each setting runs ``run_sweep.py search.workers=N`` as a user would (default synthetic data, a
fresh study, ``--trials`` trials, one torch thread per worker, no seed repeats) and prints the
wall time and trials per hour, and the speed-up over one worker. On a GPU box, ``--workers 1 4
--models bag cnn`` compares one trial at a time with four concurrent trials on one GPU
(``CUDA_VISIBLE_DEVICES`` pins every worker to the first GPU). Overrides after ``--`` go to
every run (e.g. ``-- data=files data.train=my.csv``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sweep.benchmarks.models import save_and_print, split_overrides

RUN_SWEEP = Path(__file__).resolve().parents[2] / "run_sweep.py"


def main(argv: list[str] | None = None) -> None:
    own, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/scaling"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", default=["bag"])
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args(own)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if env.get("CUDA_VISIBLE_DEVICES", "").strip():
        env["CUDA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"].split(",")[0]
    rows = []
    for model in args.models:
        base = None
        for workers in args.workers:
            folder = out / f"{model}-{workers}"
            shutil.rmtree(folder, ignore_errors=True)
            argv_run = [sys.executable, str(RUN_SWEEP), f"model={model}", f"search.workers={workers}",
                        f"search.n_trials={args.trials}", "report.repeats=0", "threads=1", *overrides,
                        f"search.storage_dir={folder / 'studies'}", f"data.cache_dir={out / 'cache'}",
                        f"hydra.run.dir={folder / 'run'}"]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(argv_run, check=True, env=env, capture_output=True, cwd=out.parent)
            seconds = time.perf_counter() - start
            done = pd.read_csv(folder / "run" / "trials.csv")
            complete = int((done["state"] == "COMPLETE").sum())
            per_hour = complete / seconds * 3600
            base = base or per_hour
            rows.append({"model": model, "workers": workers, "trials": complete,
                         "wall seconds": round(seconds, 1), "trials/hour": round(per_hour),
                         "speed-up": round(per_hour / base, 2)})  # fmt: skip
    table = pd.DataFrame(rows)
    save_and_print(table, out / "scaling.csv")


if __name__ == "__main__":
    main()
