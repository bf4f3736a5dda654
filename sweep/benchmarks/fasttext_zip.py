"""FastText.zip as the peer on bytes (issue 42): the frontends benchmark's ``--ftz`` part.

Per set and seed, fastText (its own virtual environment, 2 threads, our tokens and splits) is
first tuned as ``python -m sweep.benchmarks.defaults`` tunes it (dims x lr x epochs x word
n-grams, on our validation split; the grid is cached and shared with that benchmark). Its best
supervised model is then trained once more and quantized (``model.quantize``, Joulin et al.
2016) over cutoff {1000, 10000, 50000} x dsub {2, 4, 8} x qnorm x retrain, each from the same
saved model: 36 ``.ftz`` files and the unquantized ``.bin``, each with its bytes and accuracies.

The comparison, per byte budget (100 KB and 1 MB): each side's best file under the budget by
validation accuracy (the tie to the smaller file), and its test accuracy. Ours: every finished
trial of every kind the fronts part ran, at every precision measured (fp32 for every trial;
fp16, int8 and int4 for the trials ``report.quantize=front`` measured), its bytes the exported
folder's files (weights and vocabulary, ``file_bytes_*``). Theirs: the ``.ftz`` (or ``.bin``)
file's bytes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd

from sweep.benchmarks.defaults import (
    data_overrides,
    fasttext_best,
    fasttext_grid,
    fasttext_inputs,
    fasttext_pick,
    seeded,
)
from sweep.benchmarks.speed import PEER, ensure_fasttext, fasttext_files

QUANTIZE_GRID = [(cutoff, dsub, qnorm, retrain) for cutoff in (1000, 10000, 50000)
                 for dsub in (2, 4, 8) for qnorm in (False, True) for retrain in (False, True)]  # fmt: skip
BUDGETS = {"100 KB": 100_000, "1 MB": 1_000_000}
DIMS, NGRAMS = [10, 50, 100, 200], [1, 2]  # the defaults benchmark's fastText grid
PRECISIONS = ("fp32", "fp16", "int8", "int4")


def ftz_files(name: str, datasets: Path, seed: int, out: Path, extra: list[str], venv: Path):
    """fastText's tuned model and its quantized files on set ``name`` at ``seed``: one row per
    file (``quantized``, the settings, ``file_bytes``, accuracies), cached in
    ``<out>/ftz-<set>.csv``."""
    label = seeded(name, seed)
    cache = out / f"ftz-{label}.csv"
    if cache.exists():
        return pd.read_csv(cache)
    data = [*data_overrides(name, datasets), *extra, f"seed={seed}"]
    runs = fasttext_grid(label, data, out, DIMS, NGRAMS, venv)
    best = fasttext_pick(runs)
    work = out / "fasttext" / label
    files = {s: work / f"{s}.txt" for s in ("train", "validation", "test")}
    if not all(path.is_file() for path in files.values()):  # the grid came from its cache
        files = fasttext_files(*fasttext_inputs(data), work)
    job = work / "quantize.json"
    job.write_text(json.dumps({
        "quantize": True, "train": str(files["train"]), "validation": str(files["validation"]),
        "test": str(files["test"]), "dim": int(best["dim"]), "lr": float(best["lr"]),
        "epoch": int(best["epoch"]), "word_ngrams": int(best["word_ngrams"]), "threads": 2,
        "seed": 0, "grid": QUANTIZE_GRID, "work": str(work),
    }))  # fmt: skip
    run = subprocess.run([str(ensure_fasttext(venv)), str(PEER), str(job)], capture_output=True,
                         text=True)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"fastText quantize failed:\n{run.stderr[-3000:]}")
    rows = pd.DataFrame([json.loads(line) for line in run.stdout.splitlines() if line.strip()])
    rows = rows.assign(**{"tuned": fasttext_best(runs)["fastText dim, lr, epochs, ngrams"]})
    rows.to_csv(cache, index=False)
    return rows


def our_files(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every (trial, precision) file of every kind's finished trials whose accuracy was
    measured: kind, trial, precision, bytes, validation and test accuracy."""
    rows = []
    for kind, table in tables.items():
        for precision in PRECISIONS:
            suffix = "" if precision == "fp32" else f"_{precision}"
            val, test = f"val_accuracy{suffix}", f"test_accuracy{suffix}"
            if val not in table or f"file_bytes_{precision}" not in table:
                continue
            measured = table.dropna(subset=[val, test])
            rows += [{"kind": kind, "trial": int(r["trial"]), "precision": precision,
                      "bytes": int(r[f"file_bytes_{precision}"]), "val": float(r[val]),
                      "test": float(r[test])} for r in measured.to_dict("records")]  # fmt: skip
    return pd.DataFrame(rows)


def best_under(files: pd.DataFrame, budget: int, val: str, size: str) -> dict | None:
    """The file of best validation accuracy (``val``) within ``budget`` bytes (``size``), the
    smaller on a tie; None when no file fits."""
    under = files[files[size] <= budget]
    if under.empty:
        return None
    return under.sort_values([val, size], ascending=[False, True]).iloc[0].to_dict()


def compare(name: str, seed: int, tables: dict[str, pd.DataFrame], ftz: pd.DataFrame) -> list:
    """Per budget: our best file and FastText.zip's, their test accuracies and the difference."""
    ours, rows = our_files(tables), []
    for label, budget in BUDGETS.items():
        mine = best_under(ours, budget, "val", "bytes")
        theirs = best_under(ftz, budget, "val_accuracy", "file_bytes")
        row = {"set": name, "seed": seed, "budget": label,
               "ours: test acc": None if mine is None else round(mine["test"], 2),
               "ours: kind, precision, trial": None if mine is None else
               f"{mine['kind']}, {mine['precision']}, {mine['trial']}",
               "ours: bytes": None if mine is None else int(mine["bytes"]),
               "ftz: test acc": None if theirs is None else round(theirs["test_accuracy"], 2),
               "ftz: cutoff, dsub, qnorm, retrain": None if theirs is None else (
                   "unquantized" if not theirs["quantized"] else
                   f"{int(theirs['cutoff'])}, {int(theirs['dsub'])}, {bool(theirs['qnorm'])}, "
                   f"{bool(theirs['retrain'])}"),
               "ftz: bytes": None if theirs is None else int(theirs["file_bytes"])}  # fmt: skip
        if mine is not None and theirs is not None:
            row["ours - ftz"] = round(mine["test"] - theirs["test_accuracy"], 2)
        rows.append(row)
    return rows
