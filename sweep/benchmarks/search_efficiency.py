"""Benchmark: how soon does each search strategy find the accuracy-size front, in wall time?

    python -m sweep.benchmarks.search_efficiency --datasets ../shared/datasets --out bench/search \\
        [--sets synthetic trec sst2 20newsgroups trec-cnn] \\
        [--strategies tpe ehvi ehvi-wide ehvi-size nsga2 random size pack size-pack moasha] \\
        [--seeds 0 1 2] [--trials 60] [--grid DIMS VOCABS] [--noise-seeds 1 2] [-- KEY=VALUE ...]

For each set (bag model unless the name says otherwise; the files as a user passes them) it runs
a full grid over embedding_dim and vocab_size once, the reference (cached: studies live under
``--out`` and resume), then each strategy with each sampler seed (``search.worker_index``; the
training seed stays ``seed``, so every strategy trains exactly the grid's trials) for
``--trials`` trials, one torch thread. Strategies: ``tpe`` (Optuna's TPE, the default before
``ehvi``), ``ehvi`` (the cost-aware sampler, the default), ``ehvi-wide`` (it with its startup
trials drawn over the whole width axis, the default before), ``ehvi-size`` (it with
``search/pruner=size``), ``nsga2``, ``random``, ``size`` (TPE with ``search/pruner=size``),
``pack`` (TPE with ``search.pack=4``: four trials a round, trained together where the model
packs), ``size-pack`` (both) and ``moasha`` (Syne Tune's MOASHA on the same trial function, in
its own virtual environment: ``moasha_peer``). The strategies that stop
trials early run ``--trials-pruning`` trials (default twice ``--trials``): a stopped trial costs
a fraction of one, and every figure is read against wall time, not trials.

Printed per set and strategy, the median over seeds, against wall time from the first trial's
start (the trials' own timestamps in the storage):

- the hypervolume of validation accuracy against log10 params_total as a share of the grid's,
  with the reference point at the grid front's lowest accuracy minus one point (accuracy 0
  would make every front look 95% done) and the log10 size of the grid's largest trial; and the
  seconds until it reaches 99% of the grid's;
- the seconds until the sweep's own recommendation (``report.tolerance``) is within the
  tolerance of the grid's recommended accuracy at no more than 1.5x its parameters, and stays
  so to the end of the run;
- each as a ratio to ``tpe``'s (target of ours: at most 1/3), and the final figures where a run never
  gets there;
- a row ``oracle``: the least training time in which the grid's own trials, chosen knowing their
  results, reach 99% of its hypervolume, and its cheapest right trial (``Reference.oracle``). No
  search that trains whole configurations can beat it: where its ratio to TPE is over 1/3, the
  target is out of reach on that set, by that much;
- rows ``grid-reseeded``: the grid's own trials retrained with another training seed each
  (``--noise-seeds``; same data, splits and sizes, another draw of initialisation and batch
  order), scored against the grid (``reseeded_table``). Their final share of the grid's
  hypervolume and whether their recommendation is right are what the grid itself measures under
  seed noise: where a whole reseeded grid misses 99%, reaching it is a matter of drawing the
  grid's lucky trials, not of finding its front. (Their seconds are those of the whole reseeded
  grid in its order, so they have no ratio to TPE.)

``search_efficiency.csv`` holds the table, ``runs.csv`` every run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sweep import measure
from sweep.benchmarks.defaults import data_overrides
from sweep.benchmarks.models import save_and_print, split_overrides
from sweep.cli import compose_user
from sweep.common.atomic import write_atomic
from sweep.data.prepared import PreparedData
from sweep.report.build import annotate
from sweep.runner import run, thread_count
from sweep.search.space import SearchSpace
from sweep.trial import TrialRunner, recipe

DIMS = [4, 8, 16, 32, 64, 128, 256]
VOCABS = [100, 200, 500, 1000, 2000, 5000, 10000, None]  # None = the full train vocabulary
# Set -> (data set of benchmarks.defaults.FILES, model overrides).
SETS = {
    "synthetic": ("synthetic", []),
    "trec": ("trec", []),
    "sst2": ("sst2", []),
    "20newsgroups": ("20newsgroups", []),
    "trec-cnn": ("trec", ["model=cnn"]),
}
STRATEGIES = {
    "tpe": ["search/sampler=tpe"],
    "nsga2": ["search/sampler=nsga2"],
    "random": ["search/sampler=random"],
    "size": ["search/sampler=tpe", "search/pruner=size"],
    "pack": ["search/sampler=tpe", "search.pack=4"],
    "size-pack": ["search/sampler=tpe", "search/pruner=size", "search.pack=4"],
    "ehvi": ["search/sampler=ehvi"],
    "ehvi-size": ["search/sampler=ehvi", "search/pruner=size"],
    "ehvi-wide": ["search/sampler=ehvi", "search.sampler.startup_width=1.0"],
    "moasha": None,  # Syne Tune's, in its own environment (moasha_peer)
}
# The strategies that stop trials early: they run --trials-pruning trials.
PRUNING = ("size", "size-pack", "ehvi-size", "moasha")
ROOT = Path(__file__).resolve().parents[2]
HV_TARGET = 0.99
PARAMS_SLACK = 1.5  # a recommendation is right at no more than this times the grid's params


def vocab_value(vocab: int | None) -> str:
    return "null" if vocab is None else str(vocab)


def hypervolume(accuracy, log_params, log_params_ref: float, accuracy_ref: float = 0.0) -> float:
    """Area dominated by the points (max accuracy, min log params) inside the reference box
    (accuracy above ``accuracy_ref``, size below ``log_params_ref``)."""
    accuracy, log_params = np.asarray(accuracy, float), np.asarray(log_params, float)
    order = np.argsort(log_params, kind="stable")
    best, front = -math.inf, []
    for x, y in zip(log_params[order], accuracy[order], strict=True):
        if y > best and x < log_params_ref:  # staircase: keep points that raise the accuracy
            front.append((x, y))
            best = y
    area = 0.0
    for i, (x, y) in enumerate(front):
        next_x = front[i + 1][0] if i + 1 < len(front) else log_params_ref
        area += max(next_x - x, 0.0) * max(y - accuracy_ref, 0.0)
    return area


def shared(overrides: list[str], out: Path) -> list[str]:
    """What every run of the benchmark shares: the space, the cache, no repeats or exports."""
    return [
        *overrides,
        "search.space.embedding_dim.low=4",
        "search.space.embedding_dim.high=256",
        "search.space.vocab_size.low=100",
        f"data.cache_dir={out / 'cache'}",
        "report.repeats=0",
        "report.quantize=none",
        "report.export=none",
        "threads=1",  # one thread per trial: steady timings beside other work
    ]


def sweep_table(name: str, overrides: list[str], out: Path) -> pd.DataFrame:
    """Run (or resume) one study; its trials with ``seconds``: completion time from the first
    trial's start."""
    overrides = [*shared(overrides, out), f"search.study_name={name}",
                 f"search.storage_dir={out / 'studies'}"]  # fmt: skip
    table = run(recipe.fixed(compose_user(overrides)), out / "reports" / name, overrides).table
    start = pd.to_datetime(table["datetime_start"]).min()
    ends = pd.to_datetime(table["datetime_start"]) + pd.to_timedelta(
        table["duration_seconds"], unit="s"
    )
    return table.assign(seconds=(ends - start).dt.total_seconds()).sort_values("seconds")


class Reference:
    """What the grid found: its hypervolume box and its recommended trial."""

    def __init__(self, grid: pd.DataFrame, tolerance: float):
        done = grid[grid["state"] == "COMPLETE"]
        front = done[done["pareto"].astype(bool)]
        self.log_ref = math.log10(done["params_total"].max())
        self.acc_ref = front["val_accuracy"].min() - 1.0
        self.hv = self.of(done)
        rec = done[done["recommended"].astype(bool)].iloc[0]
        self.rec_acc, self.rec_params = float(rec["val_accuracy"]), float(rec["params_total"])
        self.tolerance, self.trials, self.seconds = tolerance, len(grid), grid["seconds"].max()

    def oracle(self, grid: pd.DataFrame) -> dict | None:
        """What a search that knew the grid's results in advance would need: the least training
        time in which some of the grid's trials, each at its grid duration and nothing between
        them, reach 99% of its hypervolume (the cheapest subset of its front: a dominated trial
        adds nothing), and the duration of its cheapest right trial. A search that trains whole
        configurations of the grid cannot be faster, so a strategy's target (1/3 of TPE's time)
        is out of reach on a set where this is over it. None past 22 front trials (2^22 subsets
        is as far as this exhaustive search goes)."""
        done = grid[grid["state"] == "COMPLETE"]
        front = done[done["pareto"].astype(bool)].sort_values("params_total")
        x = np.log10(front["params_total"].to_numpy(float))
        gain = front["val_accuracy"].to_numpy(float) - self.acc_ref
        seconds = front["duration_seconds"].to_numpy(float)
        if len(front) > 22:
            return None
        # Every subset at once (bit i of a row: front trial i in it). Going from the largest
        # trial down, each chosen trial adds its accuracy times the log size up to the next
        # chosen one (or the reference): the staircase's area, as in hypervolume().
        chosen = (np.arange(2 ** len(front))[:, None] >> np.arange(len(front))) & 1 == 1
        area, next_x = np.zeros(len(chosen)), np.full(len(chosen), self.log_ref)
        for i in reversed(range(len(front))):
            area += np.where(
                chosen[:, i], np.clip(next_x - x[i], 0.0, None) * max(gain[i], 0.0), 0.0
            )
            next_x = np.where(chosen[:, i], x[i], next_x)
        cost = chosen @ seconds
        enough = area >= HV_TARGET * self.hv
        best = int(np.argmin(np.where(enough, cost, math.inf)))
        right = done.loc[done.apply(self.right, axis=1), "duration_seconds"]
        return {
            "seconds_to_99pct_hv": float(cost[best]),
            "seconds_to_right_pick": float(right.min()) if len(right) else math.nan,
            "final_hv_pct": 100 * float(area[best]) / self.hv,
            "final_pick_right": bool(len(right)),
            "run_seconds": float(cost[best]),
            "complete": int(chosen[best].sum()),
            "pruned": 0,
        }

    def of(self, done: pd.DataFrame) -> float:
        return hypervolume(done["val_accuracy"], np.log10(done["params_total"].astype(float)),
                           self.log_ref, self.acc_ref)  # fmt: skip

    def right(self, rec: pd.Series) -> bool:
        return (rec["val_accuracy"] >= self.rec_acc - self.tolerance
                and rec["params_total"] <= PARAMS_SLACK * self.rec_params)  # fmt: skip


def reseeded_table(name: str, overrides: list[str], grid: pd.DataFrame, seed: int,
                   out: Path) -> pd.DataFrame:  # fmt: skip
    """The grid's complete trials retrained with training seed ``seed`` (the data, its splits and
    every size as the grid's: ``seed`` of the config still draws those), in the grid's order;
    with ``seconds``, completion time from the first. Cached in ``out/noise/NAME.csv``. With the
    config's own seed it repeats the grid's figures exactly (the test checks that)."""
    cache = out / "noise" / f"{name}.csv"
    if cache.exists():
        return pd.read_csv(cache)
    cfg = recipe.fixed(compose_user(shared(overrides, out)))
    torch.set_num_threads(thread_count(cfg.get("threads")))
    data = PreparedData.load(cfg.data, cfg.seed, measure.resolve_device(cfg.device))
    runner = TrialRunner(cfg, data, SearchSpace(cfg.search.space).with_vocabulary(data.full_vocab))
    rows, elapsed = [], 0.0
    for trial in grid[grid["state"] == "COMPLETE"].sort_values("trial").itertuples():
        params = {"embedding_dim": int(trial.embedding_dim), "vocab_size": int(trial.vocab_size)}
        started = time.perf_counter()
        measured = runner.train(params, seed=seed)
        duration = time.perf_counter() - started
        elapsed += duration
        rows.append({"trial": trial.trial, **params, "state": "COMPLETE",
                     "params_total": trial.params_total, "val_accuracy": measured["val_accuracy"],
                     "duration_seconds": duration, "seconds": elapsed})  # fmt: skip
    table = pd.DataFrame(rows)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache, table.to_csv(index=False))  # a run cut short leaves no half table
    return table


def moasha_table(name: str, overrides: list[str], trials: int, seed: int, out: Path,
                 venv: Path) -> pd.DataFrame:  # fmt: skip
    """Syne Tune's MOASHA on the same trial function (``moasha_peer``, its own environment);
    its trials, cached in ``out/peer/NAME.json``."""
    from sweep.benchmarks.moasha_peer import ensure_synetune

    result = out / "peer" / f"{name}.json"
    if not result.exists():
        result.parent.mkdir(parents=True, exist_ok=True)
        job = result.with_suffix(".job.json")
        job.write_text(json.dumps({"overrides": shared(overrides, out), "trials": trials,
                                   "seed": seed, "out": str(result), "threads": 1}))  # fmt: skip
        python = ensure_synetune(venv)
        subprocess.run([str(python), "-m", "sweep.benchmarks.moasha_peer", str(job)],
                       check=True, cwd=ROOT)  # fmt: skip
    return pd.DataFrame(json.loads(result.read_text()))


def course(table: pd.DataFrame, ref: Reference) -> dict:
    """One run's figures: seconds to 99% of the grid's hypervolume and to a right
    recommendation that stays right, the final share and whether the final pick is right."""
    finished = table[table["state"].isin(["COMPLETE", "PRUNED", "FAIL"])]
    t_hv = t_right = math.nan
    right = False
    for seconds in finished["seconds"]:
        done = finished[(finished["seconds"] <= seconds) & (finished["state"] == "COMPLETE")]
        if not len(done):
            continue
        if math.isnan(t_hv) and ref.of(done) >= HV_TARGET * ref.hv:
            t_hv = seconds
        marked = annotate(
            done.drop(columns=["pareto", "recommended"], errors="ignore"), ref.tolerance
        )
        now_right = ref.right(marked[marked["recommended"]].iloc[0])
        if now_right and not right:
            t_right = seconds
        right = now_right
    complete = finished[finished["state"] == "COMPLETE"]
    return {
        "seconds_to_99pct_hv": t_hv,
        "seconds_to_right_pick": t_right if right else math.nan,
        "final_hv_pct": 100 * ref.of(complete) / ref.hv if len(complete) else 0.0,
        "final_pick_right": right,
        "run_seconds": float(finished["seconds"].max()),
        "complete": len(complete),
        "pruned": int((finished["state"] == "PRUNED").sum()),
    }


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Median over seeds per set and strategy, with ratios to tpe's medians."""
    rows = []
    for (set_name, strategy), group in runs.groupby(["set", "strategy"], sort=False):
        row = {"set": set_name, "strategy": strategy, "seeds": len(group)}
        for column in ("seconds_to_99pct_hv", "seconds_to_right_pick", "final_hv_pct",
                       "run_seconds"):  # fmt: skip
            values = group[column].to_numpy(float)
            reached = values[np.isfinite(values)]
            # A run that never got there counts as the slowest (its median is then NaN if
            # most runs never did).
            padded = np.where(np.isfinite(values), values, math.inf)
            median = statistics.median(padded) if len(values) else math.nan
            row[column] = round(median, 1) if math.isfinite(median) else math.nan
            if column.startswith("seconds_to"):
                row[column.replace("seconds_to", "reached")] = f"{len(reached)}/{len(values)}"
        row["pruned"] = int(group["pruned"].sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("seconds_to_99pct_hv", "seconds_to_right_pick"):
        base = table[table["strategy"] == "tpe"].set_index("set")[column]
        table[column.replace("seconds_to", "ratio_to_tpe")] = [
            round(v / base.get(s, math.nan), 2)
            if math.isfinite(v) and strategy != "grid-reseeded"  # a whole grid, not a search
            else math.nan
            for s, strategy, v in zip(table["set"], table["strategy"], table[column], strict=True)
        ]
    return table


def main(argv: list[str] | None = None) -> None:
    own, extra = split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=Path("bench/search"))
    parser.add_argument("--sets", nargs="+", default=["synthetic", "trec", "sst2"],
                        choices=list(SETS))  # fmt: skip
    parser.add_argument("--strategies", nargs="*", default=["tpe", "ehvi", "ehvi-size"],
                        choices=list(STRATEGIES))  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="sampler seeds (search.worker_index); training keeps seed")  # fmt: skip
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--trials-pruning", type=int,
                        help="trials of the strategies that stop trials early (size, ehvi-size, moasha; "
                             "default: twice --trials, as a stopped trial costs a fraction)")  # fmt: skip
    parser.add_argument("--noise-seeds", type=int, nargs="*", default=[1, 2],
                        help="training seeds of the grid-reseeded rows (none: no such rows; "
                             "the config's own seed repeats the grid)")  # fmt: skip
    parser.add_argument("--synetune-venv", type=Path, default=Path("bench/synetune-venv"))
    parser.add_argument("--grid", nargs=2, metavar=("DIMS", "VOCABS"),
                        default=[",".join(map(str, DIMS)), ",".join(map(vocab_value, VOCABS))])  # fmt: skip
    args = parser.parse_args(own)
    logging.basicConfig(level=logging.WARNING)
    out, datasets = args.out.resolve(), args.datasets.resolve()
    dims, vocabs = (values.split(",") for values in args.grid)
    grid = ["search/sampler=grid", f"search.sampler.values.embedding_dim=[{','.join(dims)}]",
            f"search.sampler.values.vocab_size=[{','.join(vocabs)}]",
            f"search.n_trials={len(dims) * len(vocabs)}"]  # fmt: skip
    tolerance = float(compose_user(extra).report.tolerance)
    runs = []
    for set_name in args.sets:
        data_set, model = SETS[set_name]
        base = [*data_overrides(data_set, datasets), *model, *extra]
        grid_table = sweep_table(f"{set_name}-grid", [*base, *grid], out)
        ref = Reference(grid_table, tolerance)
        print(f"{set_name}: grid of {ref.trials} trials in {ref.seconds:.0f} s; recommended "
              f"{ref.rec_acc:.2f}% at {ref.rec_params:,.0f} params", flush=True)  # fmt: skip
        oracle = ref.oracle(grid_table)
        if oracle is None:
            print(f"{set_name}: no oracle row, the grid's front has over 22 trials", flush=True)
        else:
            row = {"set": set_name, "strategy": "oracle", "seed": "grid", **oracle}
            print(row, flush=True)
            runs.append(row)
        for seed in args.noise_seeds:
            table = reseeded_table(f"{set_name}-grid-seed{seed}", [*base, *grid], grid_table,
                                   seed, out)  # fmt: skip
            row = {"set": set_name, "strategy": "grid-reseeded", "seed": seed,
                   **course(table, ref)}  # fmt: skip
            print(row, flush=True)
            runs.append(row)
        for strategy in args.strategies:
            trials = args.trials
            if strategy in PRUNING:
                trials = args.trials_pruning or 2 * args.trials
            for seed in args.seeds:
                name = f"{set_name}-{strategy}-n{trials}-s{seed}"
                if STRATEGIES[strategy] is None:
                    table = moasha_table(name, base, trials, seed, out,
                                         args.synetune_venv.resolve())  # fmt: skip
                else:
                    overrides = [*base, *STRATEGIES[strategy], f"search.n_trials={trials}",
                                 f"search.worker_index={seed}"]  # fmt: skip
                    table = sweep_table(name, overrides, out)
                row = {"set": set_name, "strategy": strategy, "seed": seed,
                       **course(table, ref)}  # fmt: skip
                print(row, flush=True)
                runs.append(row)
                # After each run: a benchmark cut short keeps what it measured.
                out.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)
    save_and_print(summary(pd.DataFrame(runs)), out / "search_efficiency.csv")


if __name__ == "__main__":
    main()
