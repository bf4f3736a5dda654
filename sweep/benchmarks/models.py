"""Benchmark: every model swept on real data sets, against the published reference.

    python -m sweep.benchmarks.models --datasets ../shared/datasets --out bench/models

For each data set and model it runs (or resumes) a Pareto sweep of at most 30 trials and
prints one table row: the test accuracy of the trial with the best validation accuracy, the
smallest configuration whose validation accuracy is within 1 point of that best (with its size and
test accuracy), and the published reference. Studies live under ``--out``, so an interrupted
benchmark resumes where it stopped. It needs the data sets at ``--datasets`` (CSV with
``text,label``), which are not part of the project.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from sweep.runner import run
from sweep.trial import recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Data set -> (files relative to --datasets, overrides, published reference).
DATASETS = {
    "trec": (
        {"train": "trec/train.csv", "test": "trec/test.csv"},
        # Kim's TREC preprocessing keeps case; capitalised names are evidence for HUM and LOC.
        ["data.tokenizer.lowercase=false", "data.max_length=64"],
        "Kim 2014 CNN-rand 91.2",
    ),
    "sst2": (
        {"train": "sst2/train.csv", "validation": "sst2/dev.csv", "test": "sst2/test.csv"},
        ["data.max_length=64"],
        "Kim 2014 CNN-rand 82.7 (phrases too)",
    ),
    "20newsgroups": (
        {"train": "20newsgroups/train.csv.gz", "test": "20newsgroups/test.csv.gz"},
        ["data.max_length=256"],
        "none published; mean-of-embeddings D=64: 82.8",
    ),
}
MODELS = {
    "bag": ["train.lr=0.005"],
    "cnn": ["train.lr=0.001"],
    "rnn": ["train.lr=0.002"],
    "transformer": ["train.lr=0.001"],
}
# Trials per sweep (all <= 30): the slower sequence models get fewer, 20 Newsgroups fewest.
TRIALS = {"bag": 30, "cnn": 30, "rnn": 20, "transformer": 20}
TRIALS_20NG = {"bag": 12, "cnn": 6}  # long posts: a CNN trial takes minutes on 2 CPU cores
# 20 Newsgroups posts are long: only the bag and CNN models, the CNN with a narrower space.
PAIRS = [(d, m) for d in ("trec", "sst2") for m in MODELS] + [
    ("20newsgroups", "bag"),
    ("20newsgroups", "cnn"),
]
EXTRA = {
    ("20newsgroups", "cnn"): ["search.space.embedding_dim.high=128", "train.epochs=8"],
}

log = logging.getLogger("benchmark")


def sweep_one(
    dataset: str, model: str, root: Path, out: Path, trials: int, threads: int = 1
) -> dict:
    """Run or resume one sweep; return its table row."""
    files, data_overrides, reference = DATASETS[dataset]
    overrides = [
        "data=files",
        f"model={model}",
        *[f"data.{split}={root / path}" for split, path in files.items()],
        *data_overrides,
        *MODELS[model],
        "train.batch_size=50",
        "train.patience=5",
        "search.space.embedding_dim.low=16",
        "search.space.embedding_dim.high=300",
        "search.space.vocab_size.low=500",
        f"search.n_trials={trials}",
        "report.repeats=0",
        f"threads={threads}",
        f"search.study_name={dataset}-{model}",
        f"search.storage_dir={out / 'studies'}",
        f"data.cache_dir={out / 'cache'}",
        *EXTRA.get((dataset, model), []),
    ]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = recipe.fixed(compose(config_name="sweep", overrides=overrides))
    result = run(cfg, out / "reports" / f"{dataset}-{model}", overrides)
    done = result.table[result.table["state"] == "COMPLETE"]
    best = done.loc[done["val_accuracy"].idxmax()]
    close = done[done["val_accuracy"] >= best["val_accuracy"] - 1.0]
    small = close.sort_values(["params_total", "val_accuracy"], ascending=[True, False]).iloc[0]
    return {
        "dataset": dataset,
        "model": model,
        "trials": len(done),
        "best test acc": round(best["test_accuracy"], 1),
        "best D, K": f"{int(best['embedding_dim'])}, {int(best['vocab_size'])}",
        "best params": int(best["params_total"]),
        "smallest within 1pt: D, K": f"{int(small['embedding_dim'])}, {int(small['vocab_size'])}",
        "its params": int(small["params_total"]),
        "its test acc": round(small["test_accuracy"], 1),
        "reference": reference,
        "sweep minutes": round(done["duration_seconds"].sum() / 60, 1),
    }


def save_and_print(table: pd.DataFrame, path: Path) -> None:
    """Write a benchmark's table as CSV and print it as markdown (for docs/benchmarks.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    print(markdown(table))


def split_overrides(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """A command line as (the benchmark's own arguments, the config overrides after ``--``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pandas' own needs the optional tabulate package)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + " --- |" * len(table.columns))
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=Path("bench/models"))
    parser.add_argument("--trials", type=int, help="trials of every sweep (default: TRIALS)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per trial")
    parser.add_argument("--only", nargs="*", help="dataset-model pairs, e.g. trec-cnn")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    missing = [d for d in DATASETS if not (args.datasets / d).is_dir()]
    if missing:
        raise SystemExit(f"--datasets {args.datasets}: missing {missing}; point it at the folder")
    rows = []
    for dataset, model in PAIRS:
        if args.only and f"{dataset}-{model}" not in args.only:
            continue
        trials = args.trials or (TRIALS_20NG if dataset == "20newsgroups" else TRIALS)[model]
        rows.append(
            sweep_one(
                dataset, model, args.datasets.resolve(), args.out.resolve(), trials, args.threads
            )
        )
        # After every sweep: an interrupted benchmark keeps the rows it has.
        args.out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out / "models.csv", index=False)
    save_and_print(pd.DataFrame(rows), args.out / "models.csv")


if __name__ == "__main__":
    main()
