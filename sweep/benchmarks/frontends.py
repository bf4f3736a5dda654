"""Benchmark: which front end, at how many bytes: the word cut against BPE pieces (issue 42).

    python -m sweep.benchmarks.frontends --datasets ../shared/datasets --out bench/frontends \
        --data synthetic trec sst2 --seeds 0 --cost-set 20newsgroups

Three parts, one process at a time on this machine:

- **Cost** (``--cost-set``): the set's corpus read once, then the word table's encoding
  (``sweep.data.vocab.build``, words only) and the subword encoding (``sweep.data.subword.build``:
  the tokenizer learned at ``data.subword_vocab``, every split laid out), each timed, no cache;
  then one trial of each kind at the same rows and width (``--rows``, ``--dim``; a fixed recipe,
  ``--epochs`` epochs, no early stop), its seconds per epoch including its cutoff view, and
  the train tokens per document each kind feeds the model. Printed: both ratios (the targets:
  preparation at most 3x, a trial at most 1.3x).
- **Fronts** (``--data``, ``--seeds``): the default sweep (``run_sweep.py``, 12 trials, as a user
  runs it on the set's files) once per kind, ``model.frontend=word``, ``=subword`` and
  ``=mixed`` (``--kind LABEL KEY=VALUE ...``, repeated, compares others). Per set
  and seed: the word cut's recommended validation accuracy R and its int8 file bytes; per kind,
  the smallest int8 file among its finished trials whose validation accuracy is at least R
  minus ``report.tolerance``, that trial's test accuracy, and the bytes against the word cut's
  recommended file; the wall time of each kind's whole command; and each kind's recommended
  model (its exported folder) on the test texts that hold a word outside the word cut's
  recommended vocabulary (``unseen_accuracy``). ``<out>/fronts.csv`` holds the rows,
  ``<out>/cost.csv`` the cost part.
- **On bytes** (``--ftz`` after the fronts, ``--ftz-only`` on the fronts already in ``--out``):
  FastText.zip's best file against ours at 100 KB and 1 MB (``sweep.benchmarks.fasttext_zip``),
  in ``<out>/ftz.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from sweep.benchmarks.defaults import data_overrides, default_sweep, seeded
from sweep.benchmarks.models import save_and_print
from sweep.cli import compose_user
from sweep.data import subword, vocab
from sweep.data.corpus import load_corpus
from sweep.data.prepared import PreparedData
from sweep.models.frontends import SUBWORD, WORD
from sweep.ship.export import load
from sweep.trial import TrialRunner, recipe

# The front ends compared by default: a label and its overrides (``--kind LABEL KEY=VALUE ...``
# replaces them; the first is the reference, the word cut).
KINDS = {"word": ["model.frontend=word"], "subword": ["model.frontend=subword"],
         "mixed": ["model.frontend=mixed"]}  # fmt: skip
TOLERANCE = 0.5  # report.tolerance's default: "reaches" means within it


def cost(name: str, datasets: Path, rows: int, dim: int, epochs: int,
         extra: list[str] = ()) -> list[dict]:  # fmt: skip
    """The cost part on set ``name`` (module docstring): one row per kind."""
    overrides = [*data_overrides(name, datasets), *extra, "data.cache_dir=null", "train.lr=0.01",
                 "data.tokenizer.word_ngrams=1", "model.hidden_dim=0", f"train.epochs={epochs}",
                 f"train.patience={epochs}", "report.repeats=0", "processes=1"]  # fmt: skip
    cfg = recipe.fixed(compose_user(overrides))
    corpus = load_corpus(cfg.data, cfg.seed)
    started = time.perf_counter()
    words = vocab.build(corpus, cfg.data.tokenizer, int(cfg.data.max_length))
    word_s = time.perf_counter() - started
    started = time.perf_counter()
    pieces = subword.build(corpus, cfg.data)
    subword_s = time.perf_counter() - started
    out = []
    for kind, encoded, seconds in (("word", words, word_s), ("subword", pieces, subword_s)):
        kind_cfg = cfg.copy()
        kind_cfg.model.frontend = kind
        frontend = WORD if kind == "word" else SUBWORD
        data = PreparedData.from_encoded(encoded, f"{kind}-bench", corpus.stats, "cpu")
        runner = TrialRunner(kind_cfg, data)
        params = {"embedding_dim": dim, "vocab_size": min(rows, data.full_vocab)}
        _, sizes = runner.setup(params)
        started = time.perf_counter()
        figures = runner.train(params, seed=cfg.seed)
        trial_s = time.perf_counter() - started
        view = frontend.view(data, "train", sizes)
        out.append({
            "set": name, "kind": kind, "prepare s": round(seconds, 2),
            "rows": sizes.num_embeddings, "dim": dim, "epochs": int(figures["epochs"]),
            "trial s/epoch": round(trial_s / max(int(figures["epochs"]), 1), 3),
            "train tokens/doc": round(view.tokens / len(view.lengths), 1),
            "val acc": round(float(figures["val_accuracy"]), 2),
        })  # fmt: skip
    for row in out:
        row["prepare x word"] = round(row["prepare s"] / out[0]["prepare s"], 2)
        row["trial x word"] = round(row["trial s/epoch"] / out[0]["trial s/epoch"], 2)
    return out


def fronts(name: str, datasets: Path, seed: int, out: Path, extra: list[str] = (),
           kinds: dict[str, list[str]] | None = None) -> list[dict]:  # fmt: skip
    """The fronts part on set ``name`` at ``seed`` (module docstring): one row per kind
    (``kinds``: label -> overrides, the word cut first); ``extra``: overrides for every sweep."""
    kinds = kinds or KINDS
    data = [*data_overrides(name, datasets), *extra]
    walls = {}
    for kind, overrides in kinds.items():
        folder = out / seeded(name, seed) / kind
        figures = default_sweep(name, [*overrides, f"seed={seed}"], data, folder)
        walls[kind] = figures["wall s"]
    tables = finished(name, seed, out, kinds)
    unseen = unseen_accuracy(name, datasets, seed, out, extra, list(kinds))
    word = tables[next(iter(kinds))]
    rec = word[word["recommended"].astype(bool)].iloc[0]
    bar = float(rec["val_accuracy"]) - TOLERANCE
    rows = []
    for kind, table in tables.items():
        reaching = table[table["val_accuracy"] >= bar]
        row = {"set": name, "seed": seed, "kind": kind, "wall s": walls[kind],
               "word rec val": round(float(rec["val_accuracy"]), 2),
               "word rec int8 B": int(rec["file_bytes_int8"]),
               "best val": round(float(table["val_accuracy"].max()), 2),
               "rec test acc": round(float(table[table["recommended"].astype(bool)].iloc[0][
                   "test_accuracy"]), 2),
               "rec test acc, unseen-word texts": unseen[kind],
               "unseen-word texts": unseen["texts"]}  # fmt: skip
        if reaching.empty:
            row.update({"reaches at int8 B": None, "x word rec bytes": None, "its test acc": None})
        else:
            first = reaching.loc[reaching["file_bytes_int8"].idxmin()]
            row.update({
                "reaches at int8 B": int(first["file_bytes_int8"]),
                "x word rec bytes": round(first["file_bytes_int8"] / rec["file_bytes_int8"], 3),
                "its test acc": round(float(first["test_accuracy"]), 2),
                "its D, K": f"{int(first['embedding_dim'])}, {int(first['vocab_size'])}",
            })  # fmt: skip
        rows.append(row)
    return rows


def finished(name: str, seed: int, out: Path, kinds) -> dict[str, pd.DataFrame]:
    """Each kind's finished trials (its run's trials.csv) on set ``name`` at ``seed``."""
    tables = {}
    for kind in kinds:
        table = pd.read_csv(out / seeded(name, seed) / kind / "run" / "trials.csv")
        tables[kind] = table[table["state"] == "COMPLETE"]
    return tables


def unseen_accuracy(name: str, datasets: Path, seed: int, out: Path, extra: list[str] = (),
                    kinds: list[str] = tuple(KINDS)) -> dict:  # fmt: skip
    """Each kind's recommended model (its exported folder) on the test texts holding a word
    outside the word cut's recommended vocabulary: where a subword table can read what a word
    table reads as ``<unk>``. ``texts``: how many such test texts."""
    folders = {kind: out / seeded(name, seed) / kind / "run" / "model" for kind in kinds}
    cfg = compose_user([*data_overrides(name, datasets), *extra, f"seed={seed}",
                        "data.cache_dir=null"])  # fmt: skip
    corpus = load_corpus(cfg.data, seed)
    word_model = load(folders[kinds[0]])
    # <unk> among the ids the word model reads (padding is <pad>, never <unk>)
    holds = (word_model.encode(corpus.texts["test"]) == vocab.UNK).any(dim=1).tolist()
    texts = [t for t, h in zip(corpus.texts["test"], holds, strict=True) if h]
    truth = [corpus.label_names[y] for y, h in zip(corpus.labels["test"], holds, strict=True) if h]
    result: dict = {"texts": len(texts)}
    for kind, folder in folders.items():
        predicted = load(folder).predict(texts) if texts else []
        hits = sum(p == t for p, t in zip(predicted, truth, strict=True))
        result[kind] = round(100.0 * hits / len(texts), 2) if texts else None
    return result


def on_bytes(args, kinds) -> None:
    """The FastText.zip part (``sweep.benchmarks.fasttext_zip``) on the fronts runs in
    ``args.out``, per set and seed: ``<out>/ftz.csv``."""
    from sweep.benchmarks import fasttext_zip

    rows = []
    for name in args.data:
        for seed in args.seeds:
            ftz = fasttext_zip.ftz_files(name, args.datasets, seed, args.out, args.override,
                                         args.fasttext_venv)  # fmt: skip
            rows += fasttext_zip.compare(name, seed, finished(name, seed, args.out, kinds), ftz)
    save_and_print(pd.DataFrame(rows), args.out / "ftz.csv")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweep.benchmarks.frontends",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=Path("bench/frontends"))
    parser.add_argument("--data", nargs="*", default=["synthetic", "trec", "sst2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--cost-set", default="20newsgroups", help="'' skips the cost part")
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--override", nargs="*", default=[], help="KEY=VALUE for every run")
    parser.add_argument(
        "--ftz",
        action="store_true",
        help="FastText.zip against our files at 100 KB and 1 MB (fasttext_zip)",
    )
    parser.add_argument(
        "--ftz-only",
        action="store_true",
        help="only the FastText.zip part, on the fronts runs already in --out",
    )
    parser.add_argument("--fasttext-venv", type=Path, default=Path("bench/fasttext-venv"))
    parser.add_argument(
        "--kind",
        nargs="+",
        action="append",
        metavar="LABEL [KEY=VALUE]",
        help="a front end to compare (repeat; the first is the reference)",
    )
    args = parser.parse_args(argv)
    kinds = {k[0]: k[1:] for k in args.kind} if args.kind else KINDS
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.ftz_only:  # on the fronts runs already in --out
        on_bytes(args, kinds)
        return
    if args.cost_set:
        rows = cost(args.cost_set, args.datasets, args.rows, args.dim, args.epochs, args.override)
        save_and_print(pd.DataFrame(rows), args.out / "cost.csv")
    rows = [row for name in args.data for seed in args.seeds
            for row in fronts(name, args.datasets, seed, args.out, args.override, kinds)]  # fmt: skip
    if rows:
        save_and_print(pd.DataFrame(rows), args.out / "fronts.csv")
    if args.ftz:  # on the fronts runs just made
        on_bytes(args, kinds)


if __name__ == "__main__":
    main()
