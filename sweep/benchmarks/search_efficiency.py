"""Benchmark: how fast do TPE and NSGA-II find the accuracy-size front, against a full grid?

    python -m sweep.benchmarks.search_efficiency --datasets ../shared/datasets --out bench/search \
        [--data synthetic trec] [--trials 30] [--grid DIMS VOCABS] [-- KEY=VALUE ...]

On the synthetic data and on TREC (bag model), it runs a full grid over embedding_dim and
vocab_size, then TPE and NSGA-II sweeps of 30 trials over the same ranges, and prints the
hypervolume (validation accuracy against log10 params_total) of the front each reaches after 10,
20 and 30 trials, as a fraction of the grid's. Reference point: accuracy 0 and the log10 size of
the largest configuration in the space. Studies live under ``--out`` and resume. ``--grid 4,16
100,null`` replaces the grid's values (null: the full vocabulary); overrides after ``--`` go to
every study.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

from sweep.benchmarks.models import CONFIGS, save_and_print, split_overrides
from sweep.runner import run

DIMS = [4, 8, 16, 32, 64, 128, 256]
VOCABS = [100, 200, 500, 1000, 2000, 5000, 10000, None]  # None = the full train vocabulary
CHECKPOINTS = (10, 20, 30)


def vocab_value(vocab: int | None) -> str:
    return "null" if vocab is None else str(vocab)


def hypervolume(accuracy: np.ndarray, log_params: np.ndarray, log_params_ref: float) -> float:
    """Area dominated by the points (max accuracy, min log params) above accuracy 0."""
    accuracy, log_params = np.asarray(accuracy, float), np.asarray(log_params, float)
    order = np.argsort(log_params)
    best, area = -math.inf, 0.0
    xs, ys = log_params[order], accuracy[order]
    front = []
    for x, y in zip(xs, ys, strict=True):  # staircase: keep points that raise the accuracy
        if y > best:
            front.append((x, y))
            best = y
    for i, (x, y) in enumerate(front):
        next_x = front[i + 1][0] if i + 1 < len(front) else log_params_ref
        area += max(next_x - x, 0.0) * y
    return area


def study(name: str, data: list[str], sampler: list[str], trials: int, out: Path,
          extra: list[str] = ()) -> pd.DataFrame:  # fmt: skip
    overrides = [
        *data,
        "model=bag",
        *sampler,
        "search.space.embedding_dim.low=4",
        "search.space.embedding_dim.high=256",
        "search.space.vocab_size.low=100",
        f"search.n_trials={trials}",
        f"search.study_name={name}",
        f"search.storage_dir={out / 'studies'}",
        f"data.cache_dir={out / 'cache'}",
        "report.repeats=0",
        "threads=1",  # one thread per trial: steady timings beside other work
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="sweep", overrides=overrides)
    table = run(cfg, out / "reports" / name, overrides).table
    return table[table["state"] == "COMPLETE"].sort_values("trial")


def main(argv: list[str] | None = None) -> None:
    own, extra = split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=Path("bench/search"))
    parser.add_argument("--data", nargs="+", default=["synthetic", "trec"])
    parser.add_argument("--trials", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--grid", nargs=2, metavar=("DIMS", "VOCABS"),
                        default=[",".join(map(str, DIMS)), ",".join(map(vocab_value, VOCABS))])  # fmt: skip
    args = parser.parse_args(own)
    logging.basicConfig(level=logging.WARNING)
    out = args.out.resolve()
    trec = args.datasets.resolve() / "trec"
    datasets = {
        "synthetic": ["data=synthetic"],
        "trec": [
            "data=files",
            f"data.train={trec / 'train.csv'}",
            f"data.test={trec / 'test.csv'}",
            "data.tokenizer.lowercase=false",
        ],  # fmt: skip
    }
    dims, vocabs = (values.split(",") for values in args.grid)
    grid = ["search/sampler=grid", f"search.sampler.values.embedding_dim=[{','.join(dims)}]",
            f"search.sampler.values.vocab_size=[{','.join(vocabs)}]"]  # fmt: skip
    checkpoints = sorted({n for n in CHECKPOINTS if n < args.trials} | {args.trials})
    rows = []
    for dataset in args.data:
        data = datasets[dataset]
        full = study(f"{dataset}-grid", data, grid, len(dims) * len(vocabs), out, extra)
        ref = math.log10(full["params_total"].max())
        grid_hv = hypervolume(full["val_accuracy"].to_numpy(), np.log10(full["params_total"]), ref)
        for sampler in ("tpe", "nsga2"):
            sampler_cfg = [f"search/sampler={sampler}"]
            table = study(f"{dataset}-{sampler}", data, sampler_cfg, args.trials, out, extra)
            row = {"dataset": dataset, "sampler": sampler, "grid trials": len(full)}
            for n in checkpoints:
                head = table.head(n)
                hv = hypervolume(
                    head["val_accuracy"].to_numpy(), np.log10(head["params_total"]), ref
                )
                row[f"HV after {n}"] = f"{100 * hv / grid_hv:.1f}%"
                row[f"{n} trials as share of grid"] = f"{100 * n / len(full):.0f}%"
            rows.append(row)
    table = pd.DataFrame(rows)
    save_and_print(table, out / "search_efficiency.csv")


if __name__ == "__main__":
    main()
