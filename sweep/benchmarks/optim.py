"""Benchmark: our FusedAdam against ``torch.optim.Adam(fused=True)`` on a default trial.

    python -m sweep.benchmarks.optim [--repeats 3] [--threads 2] [KEY=VALUE ...]

Trains the same default synthetic trial (bag model, embedding_dim 32, vocab_size 3000) with each
dense optimizer, alternating, and prints the median trial time and the accuracy of each. Both
sides import ``torch._dynamo`` before any clock starts, so only the per-step cost is compared.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from sweep.data.prepared import PreparedData
from sweep.models import optim
from sweep.trial import TrialRunner, recipe

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data=files ...")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    importlib.import_module("torch._dynamo")  # both sides: no one-off import inside the clock
    with tempfile.TemporaryDirectory() as cache:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = recipe.fixed(
                compose("sweep", ["device=cpu", f"data.cache_dir={cache}", *args.overrides])
            )
        runner = TrialRunner(cfg, PreparedData.load(cfg.data, cfg.seed, torch.device("cpu")))
    ours = optim.FusedAdam
    variants = {
        "FusedAdam (sweep.models.optim)": ours,
        "torch.optim.Adam(fused=True)": lambda p, lr: torch.optim.Adam(p, lr=lr, fused=True),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    accuracy: dict[str, float] = {}
    params = {"embedding_dim": 32, "vocab_size": 3000}
    try:
        for _ in range(args.repeats):
            for name, make in variants.items():
                optim.FusedAdam = make
                started = time.perf_counter()
                accuracy[name] = runner.train(params)["val_accuracy"]
                times[name].append(time.perf_counter() - started)
    finally:
        optim.FusedAdam = ours
    base = statistics.median(times["FusedAdam (sweep.models.optim)"])
    print("| dense optimizer | median trial s | ratio | val_accuracy |")
    print("| --- | --- | --- | --- |")
    for name in variants:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.3f} | {median / base:.2f} | {accuracy[name]:.2f} |")


if __name__ == "__main__":
    main()
