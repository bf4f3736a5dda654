"""Benchmark: preparing a large corpus (generate, clean, split, tokenize, count, encode).

    python -m sweep.benchmarks.data_prep [--docs 1000000] [--out bench/data_prep]

Runs the data stages exactly as a sweep does (``load_corpus`` then the vocabulary build, cache
off) on the synthetic corpus in a fresh process, and prints the wall time of each stage, the
tokens prepared and the process's peak resident memory (``ru_maxrss``, the torch import
included). The target for 1,000,000 documents (about 50M tokens) on 2 cores: under 60 s and
under 4 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sweep.benchmarks.models import save_and_print
from sweep.trial import recipe


def prepare(num_docs: int) -> dict:
    """Run the data stages once in this process; return the figures."""
    from hydra import compose, initialize_config_dir

    from sweep.data import vocab
    from sweep.data.corpus import load_corpus

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = recipe.fixed(
            compose("sweep", [f"data.synthetic.num_docs={num_docs}", "data.cache_dir=null"])
        )
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    corpus = load_corpus(cfg.data, cfg.seed)
    loaded = time.perf_counter()
    encoded, _ = vocab.load_or_build(corpus, cfg.data)
    done = time.perf_counter()
    return {
        "documents": num_docs,
        "train_tokens": int(encoded.train_counts.sum()),
        "all_tokens_kept": int(sum(int(t.sum()) for t in encoded.lengths.values())),
        "vocabulary": encoded.full_vocab_size,
        "corpus_s": round(loaded - started, 1),
        "vocab_encode_s": round(done - loaded, 1),
        "total_s": round(done - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_imports_mb": round(baseline),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--out", type=Path, default=Path("bench/data_prep"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(prepare(args.child)))
        return
    rows = []
    for docs in args.docs:
        # A fresh process per size: its peak memory is this preparation's alone.
        run = subprocess.run(
            [sys.executable, "-m", "sweep.benchmarks.data_prep", "--child", str(docs)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    save_and_print(pd.DataFrame(rows), args.out / "data_prep.csv")


if __name__ == "__main__":
    main()
