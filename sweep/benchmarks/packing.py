"""Benchmark: packed trials (``search.pack``) against one trial at a time.

    python -m sweep.benchmarks.packing --datasets ../shared/datasets --out bench/packing

For the default synthetic sweep (bag), TREC with each of the four models and 20 Newsgroups with
the CNN (``--setups``: a choice), it runs the same sweep of ``--trials`` trials with
``search.pack`` 1, 4, 8 and 16, three seeds each, on ``--device`` (a setup whose trials do not
pack there is skipped: its ratio is 1 by construction), in this process (data cached, so each sweep's time is trials, search and reports), and prints the
trials per hour, the hypervolume of the front after those trials (validation accuracy against
log10 params_total, reference: accuracy 0 and the largest configuration any run of the setup
tried) and both as ratios to pack 1. ``--controlled`` first trains the same N random
configurations (log-uniform embedding_dim 4-256 and cutoff 100-full) alone and as packs through
``TrialRunner``, with no search around them: the packing effect alone, per setup (``--trials
0``: only that); ``--any-device`` packs there also the models ``sweep.models.pack.grouping.PACKABLE`` keeps to CUDA.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.benchmarks.models import save_and_print
from sweep.benchmarks.search_efficiency import hypervolume
from sweep.cli import compose_user
from sweep.runner import run
from sweep.trial import recipe

PACKS = (1, 4, 8, 16)


def setups(datasets: Path) -> dict[str, list[str]]:
    trec, news = datasets.resolve() / "trec", datasets.resolve() / "20newsgroups"
    trec_data = ["data=files", f"data.train={trec / 'train.csv'}", f"data.test={trec / 'test.csv'}"]
    return {
        "synthetic bag (default sweep)": ["data=synthetic", "model=bag"],
        "TREC bag": [*trec_data, "model=bag"],
        "TREC CNN": [*trec_data, "model=cnn"],
        "TREC RNN": [*trec_data, "model=rnn"],
        "TREC Transformer": [*trec_data, "model=transformer"],
        "20NG CNN": [
            "data=files", f"data.train={news / 'train.csv.gz'}",
            f"data.test={news / 'test.csv.gz'}", "data.max_length=256", "model=cnn",
            "train.epochs=4",  # long posts: 4 epochs keep it to minutes; the ratio is per step
            # Dense tables: with model.sparse=auto a cutoff above 16,384 rows (about a quarter of
            # the random cutoffs here) gets a sparse table, which never packs, so it would train
            # alone in both runs and measure nothing of packing.
            "model.sparse=false",
        ],
    }  # fmt: skip


def sweep(
    setup: list[str], pack: int, seed: int, trials: int, out: Path, device: str = "cpu"
) -> tuple[float, pd.DataFrame]:
    """(wall seconds, complete trials) of one sweep in a fresh study."""
    name = f"pack{pack}-seed{seed}"
    shutil.rmtree(out / "studies" / name, ignore_errors=True)
    overrides = [
        *setup, f"search.pack={pack}", f"seed={seed}", f"search.n_trials={trials}",
        f"search.study_name={name}", f"search.storage_dir={out / 'studies'}",
        f"data.cache_dir={out / 'cache'}", "report.repeats=0", f"device={device}",
    ]  # fmt: skip
    cfg = recipe.fixed(compose_user(overrides))
    started = time.perf_counter()
    table = run(cfg, out / "reports" / name, overrides).table
    seconds = time.perf_counter() - started
    return seconds, table[table["state"] == "COMPLETE"]


def packs_here(setup: list[str], device: str) -> bool:
    """Whether this setup's trials pack on ``device`` (``grouping.pack_key``; ``--any-device``)."""
    from sweep.models.pack import grouping

    cfg = recipe.fixed(compose_user(setup))
    return grouping.pack_key(cfg, device=device) is not None


def controlled(setup: list[str], count: int, out: Path, seed: int = 0, device: str = "cpu") -> dict:
    """Seconds to train the same ``count`` random configurations alone, then packed."""
    import random

    import torch

    from sweep.data.prepared import PreparedData
    from sweep.trial import TrialRunner

    overrides = [*setup, f"data.cache_dir={out / 'cache'}", f"device={device}", f"seed={seed}"]
    cfg = recipe.fixed(compose_user(overrides))
    torch.set_num_threads(1)
    runner = TrialRunner(cfg, PreparedData.load(cfg.data, cfg.seed, torch.device(device)))
    rng = random.Random(seed)
    full = runner.data.full_vocab
    params = [{"embedding_dim": int(round(2 ** rng.uniform(2, 8))),
               "vocab_size": int(round(10 ** rng.uniform(2, math.log10(full))))}
              for _ in range(count)]  # fmt: skip
    started = time.perf_counter()
    alone = [runner.train(p) for p in params]
    alone_s = time.perf_counter() - started
    started = time.perf_counter()
    packed = runner.train_pack(params, [None] * count, list(range(count)))
    packed_s = time.perf_counter() - started
    pairs = list(zip(alone, packed, strict=True))
    same = sum(a["val_accuracy"] == b["val_accuracy"] for a, b in pairs)
    gap = max(abs(a["val_accuracy"] - b["val_accuracy"]) for a, b in pairs)
    packs = len({r.get("pack", f"alone{i}") for i, r in enumerate(packed)})
    # Trials that could share no pack (a sparse table: model.sparse=auto above 16,384 rows;
    # a lone width): they train alone in both runs, so they pull the speed-up toward 1.
    lone = sum(isinstance(r, dict) and "pack" not in r for r in packed)
    return {"trials": count, "packs": packs, "trained alone": lone, "alone_s": round(alone_s, 2),
            "packed_s": round(packed_s, 2), "speed-up": round(alone_s / packed_s, 2),
            "same val_accuracy": f"{same}/{count}",
            "max val_accuracy gap": round(gap, 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=Path("bench/packing"))
    parser.add_argument("--trials", type=int, default=16, help="trials a sweep; 0: no sweeps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--packs", type=int, nargs="+", default=list(PACKS))
    parser.add_argument("--setups", nargs="+", help="names of setups to run (default: all)")
    parser.add_argument(
        "--controlled", type=int, default=0, help="N configurations, alone vs packed"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where every trial trains")
    parser.add_argument(
        "--any-device",
        action="store_true",
        help="pack every packable model here, also those grouping.PACKABLE keeps to CUDA",
    )
    parser.add_argument("overrides", nargs="*",
                        help="config overrides added to every setup, e.g. train.epochs=2")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    chosen = {label: [*setup, *args.overrides] for label, setup in setups(args.datasets).items()
              if not args.setups or label in args.setups}  # fmt: skip
    if args.any_device:
        from sweep.models.pack import grouping

        grouping.PACKABLE = dict.fromkeys(grouping.PACKABLE)
    out = args.out.resolve()
    if args.controlled:
        same = []
        for label, setup in chosen.items():
            same.append({"setup": label, "device": args.device,
                         **controlled(setup, args.controlled, out, device=args.device)})  # fmt: skip
        save_and_print(pd.DataFrame(same), out / "packing_controlled.csv")
    rows = []
    for label, setup in chosen.items():
        if args.trials == 0:
            break  # --controlled only
        if not packs_here(setup, args.device):
            print(f"{label}: trains alone on {args.device} (grouping.PACKABLE), skipped")
            continue
        folder = out / label.split(" (")[0].replace(" ", "-").lower()
        runs = {
            (p, s): sweep(setup, p, s, args.trials, folder, args.device)
            for p in args.packs
            for s in args.seeds
        }
        ref = math.log10(max(t["params_total"].max() for _, t in runs.values()))
        for pack in args.packs:
            seconds = [runs[(pack, s)][0] for s in args.seeds]
            hvs = [hypervolume(t["val_accuracy"].to_numpy(), np.log10(t["params_total"]), ref)
                   for t in (runs[(pack, s)][1] for s in args.seeds)]  # fmt: skip
            rows.append({
                "setup": label, "pack": pack, "trials": args.trials, "seeds": len(args.seeds),
                "sweep_s": round(statistics.mean(seconds), 2),
                "trials_per_hour": round(3600 * args.trials / statistics.mean(seconds)),
                "hypervolume": round(statistics.mean(hvs), 2),
            })  # fmt: skip
        base = next(r for r in rows if r["setup"] == label and r["pack"] == args.packs[0])
        for row in rows:
            if row["setup"] == label:
                row["speed_vs_pack1"] = round(row["trials_per_hour"] / base["trials_per_hour"], 2)
                row["hv_vs_pack1"] = round(row["hypervolume"] / base["hypervolume"], 3)
        print(
            pd.DataFrame([r for r in rows if r["setup"] == label]).to_string(index=False),
            flush=True,
        )
    if rows:
        save_and_print(pd.DataFrame(rows), out / "packing.csv")


if __name__ == "__main__":
    main()
