"""Benchmark: what bounding the bigram rows (``data.ngram_min_count``) costs in accuracy.

    python -m sweep.benchmarks.ngram_bound [--datasets ../shared/datasets] [--sets trec sst2 20newsgroups]
        [--min-counts 1 2 3] [--dims 8 32] [--seeds 0 1 2] [--out bench/ngram_bound]

For each set: a bag model with bigrams, as the training recipe usually picks it
(``model.hidden_dim=0 train.lr=0.01 data.tokenizer.word_ngrams=2``), trained at the top of the
cutoff axis (every kept word and bigram) with each minimum count, width and seed; prints the
rows and the mean ± standard deviation of the validation and test accuracy over the seeds. The
bigrams come from one word encoding per set (``sweep.data.ngrams``), so only the bound changes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import torch

from sweep.benchmarks.defaults import FILES, data_overrides
from sweep.benchmarks.models import save_and_print
from sweep.data.prepared import PreparedData
from sweep.trial import TrialRunner, recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ["train.lr=0.01", "model.hidden_dim=0", "device=cpu"]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return recipe.fixed(hydra_compose("sweep", overrides))


def bench_set(name: str, datasets: Path, args, cache: str) -> list[dict]:
    base = [*data_overrides(name, datasets), f"data.cache_dir={cache}", *RECIPE]
    words_cfg = compose([*base, "data.tokenizer.word_ngrams=1"])
    words = PreparedData.load(words_cfg.data, 0, torch.device("cpu"), keep_streams=True)
    rows = []
    for count in args.min_counts:
        cfg = compose([*base, "data.tokenizer.word_ngrams=2", f"data.ngram_min_count={count}"])
        data = PreparedData.load(cfg.data, cfg.seed, torch.device("cpu"), words=words)
        trial = TrialRunner(cfg, data)
        for dim in args.dims:
            runs = [trial.train({"embedding_dim": dim, "vocab_size": data.full_vocab}, seed=s)
                    for s in args.seeds]  # fmt: skip
            row = {"set": name, "min_count": count, "words_and_ngrams": data.full_vocab, "dim": dim}
            for column in ("val_accuracy", "test_accuracy"):
                values = [r[column] for r in runs]
                row[column] = round(statistics.mean(values), 2)
                row[f"{column}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else 0
            rows.append(row)
            print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--sets", nargs="+", default=["trec", "sst2", "20newsgroups"],
                        choices=sorted(FILES))  # fmt: skip
    parser.add_argument("--min-counts", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench/ngram_bound"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as cache:
        rows = [row for name in args.sets for row in bench_set(name, args.datasets, args, cache)]
    save_and_print(pd.DataFrame(rows), args.out / "ngram_bound.csv")


if __name__ == "__main__":
    main()
