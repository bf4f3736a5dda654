"""Benchmark: the model you ship under a byte budget, against fastText's size autotune.

    python -m sweep.benchmarks.shipping --datasets ../shared/datasets --out bench/shipping

For each data set (20 Newsgroups, TREC, SST-2) and byte budget (100 KB, 1 MB, 10 MB):

- ours: a default sweep (bag model, ``--trials`` trials) with ``search.max_model_bytes`` set to
  the budget and ``search.precision=best``: configurations whose smallest (int4) file is over
  the budget are skipped before training, every trained one is measured at every precision, and
  the most accurate file under the budget on validation (``report.tolerance=0``) is exported.
  Timed from composing the config to the exported folder (reading and encoding the corpus
  included, no cache), 2 threads. Printed: its precision, the bytes of ``model.safetensors`` +
  ``vocab.txt`` on disk (and of the whole folder), its test accuracy;
- fastText: ``train_supervised`` with ``autotuneValidationFile`` (our validation split),
  ``autotuneModelSize`` = the budget and ``autotuneDuration`` = our sweep's wall time, 2
  threads, in its own virtual environment (``--fasttext-venv``, as the speed benchmark makes
  it), on the same tokens and splits; its saved ``.ftz`` file's bytes and test accuracy;
- row pruning: the exported trial pruned to half its word rows by norm (fastText's choice) and
  by frequency (``report.prune_rows``, ``report.prune_by``), test accuracy of each.

Writes ``shipping.csv`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from sweep import runner
from sweep.benchmarks.models import markdown
from sweep.benchmarks.speed import PEER, ensure_fasttext
from sweep.data import vocab
from sweep.data.corpus import SPLITS, load_corpus
from sweep.data.prepared import PreparedData
from sweep.search.settings import parse_bytes
from sweep.ship import export
from sweep.trial import TrialRunner, recipe

ROOT = Path(__file__).resolve().parents[2]
SETS = {  # folder: (train, validation or None = split off train, test)
    "20newsgroups": ("train.csv.gz", None, "test.csv.gz"),
    "trec": ("train.csv", None, "test.csv"),
    "sst2": ("train.csv", "dev.csv", "test.csv"),
}


def compose_sweep(name: str, datasets: Path, extra: list[str]):
    train, validation, test = SETS[name]
    folder = datasets / name
    overrides = ["data=files", f"data.name={name}", f"data.train={folder / train}",
                 f"data.test={folder / test}", "data.cache_dir=null", "device=cpu", "threads=2",
                 *([f"data.validation={folder / validation}"] if validation else []), *extra]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return recipe.fixed(compose("sweep", overrides))


def fasttext_files(cfg, work: Path) -> dict[str, Path]:
    """Our tokens (lower-cased, max_length) and splits in fastText's format, lines shuffled
    (words alone: fastText makes its own n-grams)."""
    cfg = recipe.fixed(cfg)
    corpus = load_corpus(cfg.data, cfg.seed)
    tokenizer = vocab.Tokenizer.from_config(cfg.data.tokenizer)
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in SPLITS:
        lines = [
            f"__label__{int(y)} {' '.join(tokenizer(text)[: cfg.data.max_length])}\n"
            for text, y in zip(corpus.texts[split], corpus.labels[split], strict=True)
        ]
        random.Random(0).shuffle(lines)  # fastText reads in file order
        files[split] = work / f"{split}.txt"
        files[split].write_text("".join(lines), encoding="utf-8")
    return files


def ours(name: str, budget: str, args) -> dict:
    out = args.out / name / budget
    study = f"{name}-{budget}-shipping"
    extra = [f"search.n_trials={args.trials}", f"search.max_model_bytes={budget}",
             "search.precision=best", "report.repeats=0", "report.tolerance=0",
             f"search.storage_dir={args.out / 'studies'}", f"search.study_name={study}",
             "search.max_consecutive_skips=500"]  # fmt: skip
    start = time.perf_counter()
    cfg = compose_sweep(name, args.datasets, extra)
    result = runner.run(cfg, out)
    wall = time.perf_counter() - start
    rec, folder = result.recommended, out / "model"
    table = result.table
    row = {"data": name, "budget": budget, "ours_s": wall,
           "trials_trained": int((table["state"] == "COMPLETE").sum()),
           "trials_skipped": int((table["state"] == "SKIPPED").sum())}  # fmt: skip
    if rec is None or not isinstance(rec.get("ship_precision"), str):
        return {**row, "ours_precision": "none fits"}
    files = sum((folder / f).stat().st_size for f in ("model.safetensors", "vocab.txt"))
    row.update(
        ours_precision=rec["ship_precision"],
        ours_dim=int(rec["embedding_dim"]),
        ours_vocab=int(rec["vocab_size"]),
        ours_bytes=files,
        ours_folder_bytes=sum(p.stat().st_size for p in folder.iterdir()),
        ours_predicted_bytes=int(rec["ship_bytes"]),
        ours_acc=float(rec["ship_test_accuracy"]),
        ours_fp32_acc=float(rec["test_accuracy"]),
    )
    row.update(pruning(cfg, rec, out))
    return row


def pruning(cfg, rec: dict, out: Path) -> dict:
    """The exported trial pruned to half its rows, by norm and by frequency (test accuracy)."""
    rows = max(int(rec["vocab_size"]) // 2, 1)
    data = PreparedData.load(cfg.data, cfg.seed, torch.device("cpu"))
    params = {"embedding_dim": int(rec["embedding_dim"]), "vocab_size": int(rec["vocab_size"])}
    found = {"prune_rows": rows}
    for by in ("norm", "frequency"):
        pruned_cfg = cfg.copy()
        pruned_cfg.report.prune_rows, pruned_cfg.report.prune_by = rows, by
        trial = TrialRunner(pruned_cfg, data)
        folder = export.export_trial(trial, params, rec, out / f"pruned-{by}",
                                     runner.kept_states(pruned_cfg))  # fmt: skip
        figures = json.loads((folder / "config.json").read_text())["figures"]["pruned"]
        found[f"pruned_{by}_acc"] = figures["test_accuracy"]
    return found


def fasttext_autotune(python: Path, files: dict, budget: str, seconds: float, work: Path) -> dict:
    job = work / f"autotune-{budget}.json"
    size = f"{int(parse_bytes(budget) // 1000)}K"  # fastText's units: K = 1000 bytes
    job.write_text(json.dumps({
        "autotune": True, "train": str(files["train"]), "validation": str(files["validation"]),
        "test": str(files["test"]), "threads": 2, "duration": max(int(round(seconds)), 1),
        "model_size": size, "model_path": str(work / f"model-{budget}.ftz"),
    }))  # fmt: skip
    run = subprocess.run([str(python), str(PEER), str(job)], capture_output=True, text=True)
    if run.returncode != 0:
        return {"ft_error": run.stderr.strip()[-300:]}
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return {"ft_s": result["wall_seconds"], "ft_bytes": result["file_bytes"],
            "ft_acc": result["test_accuracy"], "ft_args": json.dumps(result["args"])}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweep.benchmarks.shipping",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=Path("bench/shipping"))
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--budgets", nargs="+", default=["100KB", "1MB", "10MB"])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--fasttext-venv", type=Path, default=Path("bench/fasttext-venv"))
    parser.add_argument("--no-fasttext", action="store_true", help="our side only")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    python = None if args.no_fasttext else ensure_fasttext(args.fasttext_venv.resolve())
    rows = []
    for name in args.sets:
        files = fasttext_files(compose_sweep(name, args.datasets, []), args.out / name / "fasttext")
        for budget in args.budgets:
            row = ours(name, budget, args)
            if python is not None:
                row.update(fasttext_autotune(python, files, budget, row["ours_s"], args.out / name))
            rows.append(row)
            print(json.dumps(row), flush=True)
    frame = pd.DataFrame(rows)
    columns = ["data", "budget", "trials_trained", "trials_skipped", "ours_s", "ours_precision",
               "ours_dim", "ours_vocab", "ours_bytes", "ours_folder_bytes", "ours_acc",
               "ours_fp32_acc", "ft_s",
               "ft_bytes", "ft_acc", "prune_rows", "pruned_norm_acc", "pruned_frequency_acc"]  # fmt: skip
    frame = frame.reindex(columns=[c for c in columns if c in frame] + ["ft_args"])
    frame.to_csv(args.out / "shipping.csv", index=False)
    print(markdown(frame.drop(columns=["ft_args"]).round(2)))


if __name__ == "__main__":
    main()
