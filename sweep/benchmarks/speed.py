"""Benchmark: one sweep trial against fastText and a plain PyTorch reference, on the same data.

    python -m sweep.benchmarks.speed --datasets ../shared/datasets --out bench/speed

For each data set (20 Newsgroups, TREC, the synthetic default) and one embedding dimension, on
the same tokens (our tokenizer, ``data.max_length`` 256), splits and thread count:

- ours: a sweep trial of the bag model as the runner runs it (cutoff view of the pre-encoded
  corpus, model on the device, ``fit``: ``model.sparse=auto``, fused mean, LazyAdam, length
  buckets), the mean-of-embeddings-then-linear model that fastText trains
  (``model.hidden_dim=0``), its learning rate tuned on validation over ``--lrs``;
- reference: ``sweep.benchmarks.reference``, the same model and training settings (our tuned
  learning rate included) written the usual way (vocabulary rebuilt per trial, DataLoader over
  lists, padding collate, dense Adam);
- fastText: ``train_supervised`` at the same dimension, in its own virtual environment
  (``--fasttext-venv``; created with ``fasttext-wheel`` and ``numpy<2`` when missing), on
  shuffled lines, its lr and epochs tuned on our validation split over a grid.

It prints test accuracy, wall time, and wall time to reach the other side's accuracy (from the
test accuracy after every epoch, the measuring left out of the clock), and writes
``speed.csv``; ``--ablation`` adds a table of what each speed measure pays on our trial; and
``--sweep`` times a 20-trial default sweep through ``run_sweep.py`` to split its wall time into
training and everything else (from the run's ``timing.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from sweep.benchmarks.models import markdown, save_and_print
from sweep.benchmarks.reference import reference_trial
from sweep.data import vocab
from sweep.data.corpus import SPLITS, load_corpus
from sweep.data.prepared import PreparedData
from sweep.models import embedding, optim
from sweep.models.fit import evaluate
from sweep.trial import TrialRunner, recipe

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("fasttext_peer.py")
TRAIN = {"epochs": 30, "batch_size": 64, "lr": 0.005, "patience": 4}
FASTTEXT_GRID = [
    (lr, ep) for lr in (0.1, 0.25, 0.5, 1.0, 2.0) for ep in (1, 2, 5, 10, 20, 40, 80, 160)
]


def compose_data(name: str, datasets: Path):
    """The data config of one benchmark set, composed as a sweep would."""
    from hydra import compose, initialize_config_dir

    overrides = ["data.cache_dir=null"]
    if name == "20newsgroups":
        folder = datasets / "20newsgroups"
        overrides += ["data=files", f"data.train={folder}/train.csv.gz"]
        overrides += [f"data.test={folder}/test.csv.gz"]
    elif name == "trec":
        folder = datasets / "trec"
        overrides += [
            "data=files",
            f"data.train={folder}/train.csv",
            f"data.test={folder}/test.csv",
        ]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return recipe.fixed(compose("sweep", overrides))


def our_trial(cfg, data: PreparedData, dim: int, seed: int, curve: bool = False,
              compile: bool = False):  # fmt: skip
    """One trial as the runner runs it (``TrialRunner.train``: cutoff view, model, fit) with the
    full vocabulary, timed from the cutoff on; ``curve``: test accuracy after every epoch (the
    measuring left out of the clock)."""
    start = time.perf_counter()
    paused = 0.0
    points: list[tuple[float, float]] = []
    models: list[torch.nn.Module] = []
    test = data.view("test", data.full_vocab)

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        models.append(model)
        return torch.compile(model, dynamic=True) if compile else model

    def on_epoch(epoch: int, val_accuracy: float) -> None:
        nonlocal paused
        if curve:
            now = time.perf_counter()
            points.append((now - start - paused, evaluate(models[0], test, 1024)[0]))
            paused += time.perf_counter() - now

    runner = TrialRunner(cfg, data)
    params = {"embedding_dim": dim, "vocab_size": data.full_vocab}
    figures = runner.train(params, on_epoch, seed=seed, wrap_model=wrap)
    return {
        "seconds": time.perf_counter() - start - paused,
        "cutoff_seconds": figures["cutoff_seconds"],
        "test_accuracy": figures["test_accuracy"],
        "val_accuracy": figures["val_accuracy"],
        "epochs": figures["epochs"],
        "curve": points,
    }


def trial_config(cfg, model_change: dict, train_cfg: dict):
    """``cfg`` with the bag model's overrides and the benchmark's training settings."""
    cfg = OmegaConf.merge(cfg, {"model": model_change, "train": train_cfg})
    return cfg


@contextlib.contextmanager
def torch_sparse_adam():
    """Swap our LazyAdam for torch.optim.SparseAdam (what the runner used before)."""
    real = optim.LazyAdam
    optim.LazyAdam = torch.optim.SparseAdam
    try:
        yield
    finally:
        optim.LazyAdam = real


@contextlib.contextmanager
def embedding_bag_mean():
    """Turn the fused count-matrix mean off: F.embedding_bag's sparse backward instead."""
    real = embedding._COUNT_MATRIX_LIMIT
    embedding._COUNT_MATRIX_LIMIT = 0
    try:
        yield
    finally:
        embedding._COUNT_MATRIX_LIMIT = real


@contextlib.contextmanager
def previous_runner():
    """Both of the above: the runner as it was before LazyAdam and the fused mean."""
    with torch_sparse_adam(), embedding_bag_mean():
        yield


# label -> (model overrides, train overrides, threads (None = --threads), patch)
VARIANTS = {
    "ours (model.sparse=auto)": ({}, {}, None, contextlib.nullcontext),
    "sparse gradients (fused mean, LazyAdam)": ({"sparse": True}, {}, None, contextlib.nullcontext),
    "sparse, SparseAdam instead of LazyAdam": ({"sparse": True}, {}, None, torch_sparse_adam),
    "sparse, embedding_bag backward instead of fused mean": (
        {"sparse": True},
        {},
        None,
        embedding_bag_mean,
    ),
    "sparse, both of the above (the embedding path before)": (
        {"sparse": True},
        {},
        None,
        previous_runner,
    ),
    "dense gradients (fused Adam)": ({"sparse": False}, {}, None, contextlib.nullcontext),
    "no length buckets": ({}, {"bucket": False}, None, contextlib.nullcontext),
    "1 thread": ({}, {}, 1, contextlib.nullcontext),
    "torch.compile(dynamic=True)": ({}, {"compile": True}, None, contextlib.nullcontext),
}


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float:
    """Seconds until the curve's accuracy first reaches ``target`` (NaN if never)."""
    return next((t for t, acc in curve if acc >= target - 1e-9), float("nan"))


def reach(runs: list[dict], target: float) -> tuple[float, str]:
    """Mean time to reach ``target`` over the seeds that reach it, and 'k/n' that do."""
    times = [time_to_reach(r["curve"], target) for r in runs]
    reached = [t for t in times if not np.isnan(t)]
    return (float(np.mean(reached)) if reached else float("nan")), f"{len(reached)}/{len(times)}"


def ensure_fasttext(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with fasttext-wheel and numpy<2", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "fasttext-wheel", "numpy<2"],
                       check=True)  # fmt: skip
    return python


def fasttext_files(encoded, texts_tokens, work: Path) -> dict[str, Path]:
    """Each split as fastText reads it (``work/<split>.txt``): a ``__label__`` and our tokens
    per line, the lines shuffled (fastText reads in file order and does not shuffle)."""
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in SPLITS:
        lines = [
            f"__label__{int(y)} {' '.join(doc)}\n"
            for doc, y in zip(texts_tokens[split], encoded.labels[split].tolist(), strict=True)
        ]
        random.Random(0).shuffle(lines)
        files[split] = work / f"{split}.txt"
        files[split].write_text("".join(lines))
    return files


def fasttext_runs(
    python: Path,
    encoded,
    texts_tokens,
    work: Path,
    dim: int,
    threads: int,
    grid: list[tuple[float, int]] | None = None,
    word_ngrams: int = 1,
):
    """fastText over the lr x epoch grid (``FASTTEXT_GRID`` unless ``grid``) at ``dim`` and
    ``word_ngrams`` on shuffled lines of our tokens; one row per config."""
    files = fasttext_files(encoded, texts_tokens, work)
    job = work / "job.json"
    job.write_text(json.dumps({
        "train": str(files["train"]), "validation": str(files["validation"]),
        "test": str(files["test"]), "dim": dim, "threads": threads,
        "grid": grid or FASTTEXT_GRID, "word_ngrams": word_ngrams,
    }))  # fmt: skip
    run = subprocess.run([str(python), str(PEER), str(job)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"fastText peer failed:\n{run.stderr[-3000:]}")
    return pd.DataFrame([json.loads(line) for line in run.stdout.splitlines() if line.strip()])


def bench_dataset(name: str, args, python: Path | None) -> tuple[dict, list[dict]]:
    cfg = compose_data(name, args.datasets)
    corpus = load_corpus(cfg.data, cfg.seed)
    started = time.perf_counter()
    encoded = vocab.build(corpus, cfg.data.tokenizer, cfg.data.max_length)
    prep_seconds = time.perf_counter() - started
    data = PreparedData.from_encoded(encoded, name, corpus.stats, torch.device("cpu"))
    tokenizer = vocab.Tokenizer.from_config(cfg.data.tokenizer)
    bag = {"hidden_dim": 0}  # the mean of embeddings, then a linear layer: fastText's model
    dim, seeds = args.dim, args.seeds
    train_cfg = {**TRAIN, "eval_batch_size": 1024, "bucket": True}
    # Tuned like fastText: the learning rate with the best validation accuracy (first seed);
    # the reference then trains with the same settings, so only the engineering differs.
    tried = {
        lr: our_trial(trial_config(cfg, bag, {**train_cfg, "lr": lr}), data, dim, seeds[0])[
            "val_accuracy"
        ]
        for lr in args.lrs
    }
    train_cfg["lr"] = max(tried, key=lambda lr: (tried[lr], -lr))
    settings = {k: train_cfg[k] for k in TRAIN}
    base = trial_config(cfg, bag, train_cfg)

    ours = [our_trial(base, data, dim, s, curve=True) for s in seeds]
    labels = {s: encoded.labels[s].tolist() for s in SPLITS}
    reference = [
        reference_trial(
            corpus.texts,
            labels,
            tokenizer,
            vocab_size=encoded.full_vocab_size,
            embedding_dim=dim,
            num_classes=encoded.num_classes,
            max_length=cfg.data.max_length,
            seed=s,
            curve=True,
            **settings,
        )  # fmt: skip
        for s in seeds
    ]
    row = {
        "data": name,
        "train_docs": len(corpus.texts["train"]),
        "vocab": encoded.full_vocab_size,
        "dim": dim,
        "threads": args.threads,
        "prep_s": round(prep_seconds, 2),
        "lr": train_cfg["lr"],
        "ours_s": np.mean([r["seconds"] for r in ours]),
        "ours_acc": np.mean([r["test_accuracy"] for r in ours]),
        "ref_s": np.mean([r["seconds"] for r in reference]),
        "ref_acc": np.mean([r["test_accuracy"] for r in reference]),
        "cutoff_share_pct": 100 * np.mean([r["cutoff_seconds"] / r["seconds"] for r in ours]),
    }
    row["speedup_trial"] = row["ref_s"] / row["ours_s"]
    # Equal accuracy: the time each side needs to come within 0.5 points of the lower of the
    # two final accuracies (test accuracy after each epoch).
    row["equal_acc"] = min(row["ours_acc"], row["ref_acc"]) - 0.5
    row["ours_to_equal_s"], row["ours_reached"] = reach(ours, row["equal_acc"])
    row["ref_to_equal_s"], row["ref_reached"] = reach(reference, row["equal_acc"])
    row["speedup_equal_acc"] = row["ref_to_equal_s"] / row["ours_to_equal_s"]
    curves = {"ours": [r["curve"] for r in ours], "reference": [r["curve"] for r in reference]}
    if python is not None:
        tokens = {s: [tokenizer(t)[: cfg.data.max_length] for t in corpus.texts[s]] for s in SPLITS}
        runs = fasttext_runs(python, encoded, tokens, args.out / "fasttext" / name, dim,
                             args.threads)  # fmt: skip
        runs.to_csv(args.out / f"fasttext-{name}.csv", index=False)
        # Tuned on validation accuracy; of equally good settings, the fastest (fastText's favour).
        ranked = runs.dropna(subset=["val_accuracy"])
        best = ranked.sort_values(["val_accuracy", "train_seconds"], ascending=[False, True]).iloc[
            0
        ]
        at_lr = runs[runs["lr"] == best["lr"]].sort_values("epoch")
        ft_curve = list(zip(at_lr["train_seconds"], at_lr["test_accuracy"], strict=True))
        row.update(
            fasttext_lr=best["lr"],
            fasttext_epoch=int(best["epoch"]),
            fasttext_s=best["train_seconds"],
            fasttext_acc=best["test_accuracy"],
            fasttext_to_ours_acc_s=time_to_reach(ft_curve, row["ours_acc"]),
        )
        row["ours_to_fasttext_acc_s"], row["ours_reached_fasttext"] = reach(
            ours, best["test_accuracy"]
        )
        curves["fasttext"] = ft_curve
    (args.out / f"curves-{name}.json").write_text(json.dumps(curves))
    ablation = []
    if args.ablation:
        for label, (model_change, train_change, threads, patch) in VARIANTS.items():
            torch.set_num_threads(threads or args.threads)
            try:
                with patch():
                    changed = {k: v for k, v in train_change.items() if k != "compile"}
                    variant = trial_config(cfg, {**bag, **model_change}, {**train_cfg, **changed})
                    trial = our_trial(variant, data, dim, seeds[0],
                                      compile=bool(train_change.get("compile")))  # fmt: skip
                ablation.append({"data": name, "variant": label,
                                 "trial_s": round(trial["seconds"], 2),
                                 "test_acc": round(trial["test_accuracy"], 2),
                                 "epochs": trial["epochs"]})  # fmt: skip
            except Exception as error:  # e.g. no C++ compiler for torch.compile
                ablation.append({"data": name, "variant": label, "trial_s": float("nan"),
                                 "test_acc": float("nan"), "epochs": f"failed: {error}"[:80]})  # fmt: skip
            finally:
                torch.set_num_threads(args.threads)
    return row, ablation


def sweep_overhead(args) -> dict:
    """A 20-trial default sweep as a user runs it; its timing.json splits the wall time."""
    run_dir = args.out / "sweep"
    for stale in (run_dir, args.out / "studies"):  # a fresh study: nothing to resume
        shutil.rmtree(stale, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_sweep.py"), "search.n_trials=20",
         f"threads={args.threads}", f"hydra.run.dir={run_dir}",
         f"search.storage_dir={args.out / 'studies'}", f"data.cache_dir={args.out / 'cache'}",
         "search.study_name=speed-overhead"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    process_seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    timing = json.loads((run_dir / "timing.json").read_text())
    timing["process_seconds"] = round(process_seconds, 2)
    return timing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=Path("bench/speed"))
    parser.add_argument("--data", nargs="+", default=["20newsgroups", "trec", "synthetic"])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.0025, 0.005, 0.01, 0.02])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fasttext-venv", type=Path, default=Path("bench/fasttext-venv"))
    parser.add_argument("--no-fasttext", action="store_true")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    # Creating the first optimizer imports torch._dynamo (about a second, once per process):
    # import it before any clock starts so neither side pays it.
    importlib.import_module("torch._dynamo")

    python = None if args.no_fasttext else ensure_fasttext(args.fasttext_venv.resolve())
    rows, ablation = [], []
    for name in args.data:
        row, extra = bench_dataset(name, args, python)
        rows.append(row)
        ablation += extra
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows).round(4)
    save_and_print(table, args.out / "speed.csv")
    if ablation:
        print()
        save_and_print(pd.DataFrame(ablation), args.out / "ablation.csv")
    if args.sweep:
        timing = sweep_overhead(args)
        (args.out / "sweep_timing.json").write_text(json.dumps(timing, indent=1))
        print()
        print(markdown(pd.DataFrame([timing])))


if __name__ == "__main__":
    main()
