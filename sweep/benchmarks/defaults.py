"""Benchmark: the default sweep on real text, for candidate defaults, against tuned fastText.

    python -m sweep.benchmarks.defaults --datasets ../shared/datasets --out bench/defaults \
        --variant before model.hidden_dim=64 train.lr=0.005 --variant after

A user's first sweep on their own data runs the defaults, so they are chosen here from real data:
for each ``--variant NAME [KEY=VALUE ...]`` (no overrides: the current defaults) and each data set
(the synthetic default, TREC, SST-2, 20 Newsgroups), ``run_sweep.py`` runs as a user would run it
on those files (``data=files`` and the paths, nothing else: 12 trials, then the seed repeats of
the front), one process at a time. Printed per run: the test accuracy of the best-validation trial
and of the recommended one, and the wall time. fastText (``train_supervised``, its own virtual
environment, lr x epochs tuned on the same validation split over the speed benchmark's grid, at
``--fasttext-dims``) is the bar: the default sweep's best-validation test accuracy should reach
fastText's on every real set.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sweep.benchmarks.models import save_and_print

ROOT = Path(__file__).resolve().parents[2]
# The files of each shared set, as a user would pass them (SST-2 ships its dev set).
FILES = {
    "synthetic": {},
    "trec": {"train": "trec/train.csv", "test": "trec/test.csv"},
    "sst2": {"train": "sst2/train.csv", "validation": "sst2/dev.csv", "test": "sst2/test.csv"},
    "20newsgroups": {"train": "20newsgroups/train.csv.gz", "test": "20newsgroups/test.csv.gz"},
}


def data_overrides(name: str, datasets: Path) -> list[str]:
    files = FILES[name]
    if not files:
        return []
    return ["data=files", *[f"data.{split}={datasets / path}" for split, path in files.items()]]


def default_sweep(name: str, variant: list[str], datasets: Path, folder: Path) -> dict:
    """Run one default sweep in a fresh study; its figures."""
    argv = [sys.executable, str(ROOT / "run_sweep.py"), *data_overrides(name, datasets), *variant,
            f"search.storage_dir={folder / 'studies'}", f"data.cache_dir={folder.parent / 'cache'}",
            f"hydra.run.dir={folder / 'run'}"]  # fmt: skip
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    start = time.perf_counter()
    run = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{name}: the sweep failed:\n{run.stderr[-3000:]}")
    table = pd.read_csv(folder / "run" / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    best = done.loc[done["val_accuracy"].idxmax()]
    rec = done[done["recommended"].astype(bool)].iloc[0]
    return {
        "best-val trial: test acc": round(best["test_accuracy"], 1),
        "its D, K": f"{int(best['embedding_dim'])}, {int(best['vocab_size'])}",
        "recommended: test acc": round(rec["test_accuracy"], 1),
        "its params": int(rec["params_total"]),
        "wall s": round(seconds, 1),
    }


def fasttext_best(name: str, datasets: Path, out: Path, dims: list[int], venv: Path) -> dict:
    """fastText tuned on our validation split (lr x epochs x dims): its test accuracy."""
    from sweep.benchmarks.speed import ensure_fasttext, fasttext_runs
    from sweep.cli import compose_user
    from sweep.data import vocab
    from sweep.data.corpus import SPLITS, load_corpus

    cfg = compose_user([*data_overrides(name, datasets), "data.cache_dir=null"])
    corpus = load_corpus(cfg.data, cfg.seed)
    encoded = vocab.build(corpus, cfg.data.tokenizer, cfg.data.max_length)
    tokenizer = vocab.Tokenizer.from_config(cfg.data.tokenizer)
    tokens = {s: [tokenizer(t)[: cfg.data.max_length] for t in corpus.texts[s]] for s in SPLITS}
    python = ensure_fasttext(venv)
    runs = pd.concat(
        [
            fasttext_runs(python, encoded, tokens, out / "fasttext" / name, dim, 2).assign(dim=dim)
            for dim in dims
        ]
    ).dropna(subset=["val_accuracy"])
    runs.to_csv(out / f"fasttext-{name}.csv", index=False)
    best = runs.sort_values(["val_accuracy", "train_seconds"], ascending=[False, True]).iloc[0]
    return {
        "fastText test acc": round(best["test_accuracy"], 1),
        "fastText dim, lr, epochs": f"{int(best['dim'])}, {best['lr']}, {int(best['epoch'])}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=Path("bench/defaults"))
    parser.add_argument("--data", nargs="+", default=list(FILES))
    parser.add_argument("--variant", nargs="+", action="append", metavar="NAME [KEY=VALUE]",
                        help="a name and its overrides; repeat for several (default: 'current')")  # fmt: skip
    parser.add_argument("--fasttext-dims", type=int, nargs="*", default=[64])
    parser.add_argument("--fasttext-venv", type=Path, default=Path("bench/fasttext-venv"))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    variants = args.variant or [["current"]]
    rows = []
    for name in args.data:
        bar = {}
        if name != "synthetic" and args.fasttext_dims:
            bar = fasttext_best(name, args.datasets, out, args.fasttext_dims, args.fasttext_venv)
        for variant in variants:
            figures = default_sweep(name, variant[1:], args.datasets, out / name / variant[0])
            row = {"data": name, "variant": variant[0], **figures, **bar}
            print(row, flush=True)
            rows.append(row)
    table = pd.DataFrame(rows)
    table["overrides"] = [" ".join(next(v[1:] for v in variants if v[0] == r)) or "(defaults)"
                          for r in table["variant"]]  # fmt: skip
    save_and_print(table, out / "defaults.csv")


if __name__ == "__main__":
    main()
