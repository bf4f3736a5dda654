"""Benchmark: measured GPU peak memory against the analytic estimate, for every built-in model.

    python -m sweep.benchmarks.memory --out bench/memory

On the default synthetic data, for each model and each corner of the default search space
(embedding_dim 4 and 256, vocab_size 100 and the full vocabulary), it trains one trial for two
epochs and prints the trial's own measured peak (``gpu_peak_mb``: the CUDA allocator's peak
minus what the process held before the trial), the probe (``probe_peak_mb``: one step on the
longest batch before training) and the estimate (``est_peak_mb``), their ratios, and the process
baseline measured and estimated. On a machine without CUDA the measured columns are NaN and only
the estimate is shown. Targets: the estimate within 15% of the measured peak everywhere, the
probe within 2%.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from sweep.benchmarks.models import CONFIGS, save_and_print
from sweep.measure import device_name, resolve_device
from sweep.runner import run
from sweep.trial import recipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/memory"))
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "overrides", nargs="*", help="extra config overrides, e.g. train.batch_size=128"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = args.out.resolve()
    rows = []
    for model in ("bag", "cnn", "rnn", "transformer"):
        overrides = [
            f"model={model}", f"device={args.device}", "search/sampler=grid",
            "search.sampler.values.embedding_dim=[4,256]", "search.sampler.values.vocab_size=[100,null]",
            "train.epochs=2", "report.repeats=0", f"search.study_name=memory-{model}",
            f"search.storage_dir={out / 'studies'}", f"data.cache_dir={out / 'cache'}",
            *args.overrides,
        ]  # fmt: skip
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = recipe.fixed(compose(config_name="sweep", overrides=overrides))
        table = run(cfg, out / "reports" / model, overrides).table
        for row in table[table["state"] == "COMPLETE"].itertuples():
            rows.append({
                "model": model, "embedding_dim": row.embedding_dim, "vocab_size": row.vocab_size,
                "params_total": row.params_total, "gpu_peak_mb": round(row.gpu_peak_mb, 1),
                "probe_peak_mb": round(row.probe_peak_mb, 1),
                "est_peak_mb": round(row.est_peak_mb, 1),
                "est / measured": round(row.est_peak_mb / row.gpu_peak_mb, 3),
                "probe / measured": round(row.probe_peak_mb / row.gpu_peak_mb, 3),
                "gpu_baseline_mb": round(row.gpu_baseline_mb, 1),
                "est_baseline_mb": round(row.est_baseline_mb, 1),
            })  # fmt: skip
        # After each model, so a run cut short (the GPU command's time limit) keeps its rows.
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(out / "memory.csv", index=False)
    table = pd.DataFrame(rows)
    print(f"device: {device_name(resolve_device(args.device))}")
    save_and_print(table, out / "memory.csv")


if __name__ == "__main__":
    main()
