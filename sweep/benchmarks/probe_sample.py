"""Benchmark: the recipe probe on a sample of a large corpus (``train.recipe.max_texts``).

    python -m sweep.benchmarks.probe_sample [--docs 100000] [--seeds 0 1 2]
        [--limits null 10000 20000 50000] [--out bench/probe_sample] [-- KEY=VALUE ...]

On the synthetic corpus of ``--docs`` documents (``data.synthetic.vocab_words`` 100,000 from a
million up, as ``corpus_scale``), loaded once per seed: the probe of the default config with
each ``--limits`` (``null``: every text), as the run does it (its choices side by side where
``processes`` allows). Prints each probe's pick, its seconds and its rows' validation accuracy,
and per limit how many seeds picked what every text picks (where ``null`` is among the limits).
The probe's seconds do not include loading the data, but do include deriving the bigram
encoding for the first limit that needs it (later ones reuse it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from sweep.benchmarks.corpus_scale import vocab_words
from sweep.benchmarks.models import save_and_print, split_overrides
from sweep.data.prepared import PreparedData
from sweep.models.frontends import frontend_of
from sweep.trial import recipe

ROOT = Path(__file__).resolve().parents[2]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sweep.naming import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose("sweep", overrides)


def probe_rows(docs: int, seed: int, limits: list[int | None], overrides: list[str]) -> list[dict]:
    """One row per limit: the probe's pick and cost on the corpus of ``docs`` at ``seed``."""
    words = [] if any(o.startswith("data.synthetic.vocab_words=") for o in overrides) else [
        f"data.synthetic.vocab_words={vocab_words(docs)}"]  # fmt: skip
    cfg = compose([f"seed={seed}", f"data.synthetic.num_docs={docs}", *words, "device=cpu",
                   "data.cache_dir=null", *overrides])  # fmt: skip
    first, device = recipe.fixed(cfg), torch.device("cpu")
    started = time.perf_counter()
    data = PreparedData.load(first.data, seed, device, frontend_of(cfg.model).encode,
                             keep_streams="word_ngrams" in recipe.to_probe(cfg))  # fmt: skip
    loaded = time.perf_counter() - started
    prepared, rows = {int(first.data.tokenizer.word_ngrams): data}, []
    for limit in limits:
        run = cfg.copy()
        run.train.recipe.max_texts = limit
        probed = recipe.probe(run, device, None, prepared)
        rows.append({"documents": docs, "seed": seed, "max_texts": limit or "every",
                     "train_texts": probed.get("train_texts", len(data.labels["train"])),
                     **{key.split(".")[-1]: value for key, value in probed["choice"].items()},
                     "probe_s": round(probed["seconds"], 1), "load_s": round(loaded, 1),
                     "fits": sum(len(r["vocab_sizes"]) for r in probed["probes"]),
                     "val_accuracy": " ".join(f"{r['val_accuracy']:.2f}" for r in probed["probes"])})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    own, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limits", nargs="+", default=["null", "10000", "20000", "50000"])
    parser.add_argument("--out", type=Path, default=Path("bench/probe_sample"))
    args = parser.parse_args(own)
    limits = [None if v == "null" else int(v) for v in args.limits]
    table = pd.DataFrame([row for seed in args.seeds
                          for row in probe_rows(args.docs, seed, limits, overrides)])  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    save_and_print(table, args.out / f"probe_sample-{args.docs}.csv")
    keys = [k for k in ("word_ngrams", "hidden_dim", "lr") if k in table]
    if None in limits and keys:
        every = table[table["max_texts"] == "every"].set_index("seed")[keys]
        agree = table.groupby("max_texts", sort=False).apply(
            lambda g: sum(every.loc[s].tolist() == r for s, r in
                          zip(g["seed"], g[keys].values.tolist(), strict=True)))  # fmt: skip
        seconds = table.groupby("max_texts", sort=False)["probe_s"].mean().round(1)
        summary = pd.DataFrame({"same pick as every text": agree, "seeds": len(args.seeds),
                                "probe s (mean)": seconds}).reset_index()  # fmt: skip
        save_and_print(summary, args.out / f"probe_sample-{args.docs}-summary.csv")


if __name__ == "__main__":
    main()
