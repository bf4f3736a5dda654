"""Benchmark: does a study with several workers reach the front of one worker, trial for trial?

    python -m sweep.benchmarks.workers_front --out bench/workers-front \\
        [--workers 1 2 4] [--seeds 0 1 2] [--trials 24] [-- KEY=VALUE ...]

Each (workers, seed) runs ``run_sweep.py search.workers=N search.n_trials=T seed=S`` as a user
would: the default synthetic data, model (bag) and sampler (``ehvi``), a fresh study, one torch
thread per worker, no seed repeats, nothing exported, and the training recipe fixed so that no
probe runs (``train.lr=0.01 model.hidden_dim=64 data.tokenizer.word_ngrams=1``; overrides after
``--`` go to every run). The seed sets the data and the sampler, so each seed is its own problem;
the worker counts of one seed share its data.

Printed per worker count: the hypervolume of validation accuracy against log10 params_total
(``search_efficiency.hypervolume``) of the study's first T complete trials by trial number (a
run with workers may overshoot T by one), as a percentage of the best run of that seed, each
seed against one reference shared by that seed's runs (accuracy: the lowest accuracy on any of
their fronts minus one point; size: log10 of their largest params_total plus 0.05); the median
over seeds; the median wall seconds; and ``overlaps``: pairs of trials of one study that
trained the same configuration at overlapping times (no two workers may). ``runs.csv`` holds
every run.
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.benchmarks.models import save_and_print, split_overrides
from sweep.benchmarks.search_efficiency import hypervolume

RUN_SWEEP = Path(__file__).resolve().parents[2] / "run_sweep.py"
FIXED_RECIPE = ["train.lr=0.01", "model.hidden_dim=64", "data.tokenizer.word_ngrams=1"]


def run_study(folder: Path, cache: Path, workers: int, seed: int, trials: int,
              overrides: list[str]) -> tuple[pd.DataFrame, float]:  # fmt: skip
    """One fresh study: its trials.csv (the parent's combined report) and its wall seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    argv = [sys.executable, str(RUN_SWEEP), f"search.workers={workers}", f"seed={seed}",
            f"search.n_trials={trials}", "report.repeats=0", "report.export=none",
            "report.quantize=none", "threads=1", *FIXED_RECIPE, *overrides,
            f"search.storage_dir={folder / 'studies'}", f"data.cache_dir={cache}",
            f"hydra.run.dir={folder / 'run'}"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, cwd=folder.parent)
    return pd.read_csv(folder / "run" / "trials.csv"), time.perf_counter() - started


def first_complete(table: pd.DataFrame, trials: int) -> pd.DataFrame:
    """The first ``trials`` complete trials by trial number (the order they were asked in)."""
    done = table[table["state"] == "COMPLETE"].sort_values("trial")
    return done.head(trials)


def overlaps(table: pd.DataFrame) -> int:
    """Pairs of trials that trained one configuration at overlapping times (a reused result,
    which trains nothing, left out)."""
    trained = table[table["params_total"].notna()]
    if "reused_from" in trained:
        trained = trained[trained["reused_from"].isna()]
    start = pd.to_datetime(trained["datetime_start"]).map(lambda t: t.timestamp())
    end = start + trained["duration_seconds"].fillna(math.inf)
    spans = pd.DataFrame({"dim": trained["embedding_dim"], "vocab": trained["vocab_size"],
                          "start": start, "end": end})  # fmt: skip
    count = 0
    for _, group in spans.groupby(["dim", "vocab"]):
        for (_, a), (_, b) in itertools.combinations(group.iterrows(), 2):
            count += a["start"] < b["end"] and b["start"] < a["end"]
    return int(count)


def shares(runs: pd.DataFrame, done: dict) -> pd.Series:
    """Each run's hypervolume as a percentage of the best run of its seed, against the
    reference shared by that seed's runs."""
    out = pd.Series(index=runs.index, dtype=float)
    for _, group in runs.groupby("seed"):
        tables = [done[i] for i in group.index]
        acc_ref = min(t.loc[t["pareto"].astype(bool), "val_accuracy"].min() for t in tables) - 1.0
        log_ref = max(np.log10(t["params_total"].astype(float)).max() for t in tables) + 0.05
        volumes = {i: hypervolume(done[i]["val_accuracy"],
                                  np.log10(done[i]["params_total"].astype(float)), log_ref, acc_ref)
                   for i in group.index}  # fmt: skip
        best = max(volumes.values()) or 1.0
        for i, volume in volumes.items():
            out[i] = round(100.0 * volume / best, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    own, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/workers-front"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args(own)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows, done = [], {}
    for seed, workers in itertools.product(args.seeds, args.workers):
        table, seconds = run_study(out / f"w{workers}-s{seed}", out / "cache", workers, seed,
                                   args.trials, overrides)  # fmt: skip
        done[len(rows)] = first_complete(table, args.trials)
        rows.append({"workers": workers, "seed": seed, "complete": len(done[len(rows)]),
                     "wall seconds": round(seconds, 1), "overlaps": overlaps(table)})  # fmt: skip
        print(rows[-1], flush=True)
    runs = pd.DataFrame(rows)
    runs["hypervolume %"] = shares(runs, done)
    runs.to_csv(out / "runs.csv", index=False)
    summary = []
    for workers, group in runs.groupby("workers", sort=False):
        row = {"workers": workers, "trials": args.trials}
        row.update(
            {f"seed {s}": v for s, v in zip(group["seed"], group["hypervolume %"], strict=True)}
        )
        row["median"] = statistics.median(group["hypervolume %"])
        row["wall seconds (median)"] = statistics.median(group["wall seconds"])
        row["overlaps"] = int(group["overlaps"].sum())
        summary.append(row)
    save_and_print(pd.DataFrame(summary), out / "workers_front.csv")


if __name__ == "__main__":
    main()
