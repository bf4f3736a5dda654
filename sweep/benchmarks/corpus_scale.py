"""Benchmark: the default command as the corpus grows, against fastText at the same sizes.

    python -m sweep.benchmarks.corpus_scale [--docs 10000 100000 1000000] [--prep-docs 10000000]
        [--threads 1 2] [--out bench/corpus_scale] [--no-fasttext] [--no-steps] [-- KEY=VALUE ...]

1. The default command (``python run_sweep.py``) on the synthetic corpus at each ``--docs``
   (``data.synthetic.vocab_words`` 20,000 up to 100k documents, 100,000 above), each in a fresh
   process: its wall time, its own time line (``timing.json``: data, recipe probe, trials,
   seed repeats, precisions, export, reports), its peak memory (the largest process's
   resident peak, ``ru_maxrss``, and on Linux the peak of its whole process tree's Pss, sampled
   every 0.5 s: what the run takes from the machine, the corpus its forked children share
   counted once), the trials' median tokens per second, and each phase's growth exponent per
   10x (log10 of the time ratio: 1.0 is linear).
2. ``--prep-docs``: data preparation plus one trial (the recipe fixed) at that size, in a fresh
   process: wall time and peak memory.
3. fastText (its own virtual environment, ``--fasttext-venv``) on the same tokens and splits at
   each size, with each ``--threads``: one supervised model (dim 32, lr 0.1, 5 epochs): wall
   time, train tokens per second, peak memory.
4. The time of one training step against the table's rows (bag model, batch 64 x 100 ids,
   embedding_dim 32, hidden 64, sparse table, one thread): 20k, 100k, 1.5M and 11.46M rows.

Config overrides after ``--`` go to every run of the command (e.g. ``-- threads=2``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from sweep.benchmarks.models import save_and_print, split_overrides

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("fasttext_peer.py")
PHASES = ("data_s", "recipe_s", "training_s", "search_and_storage_s", "repeats_s",
          "precisions_s", "export_s", "reports_s", "other_s")  # fmt: skip


def vocab_words(docs: int) -> int:
    """The synthetic vocabulary at a size: the issue's protocol (20k, 20k, 100k words)."""
    return 20_000 if docs <= 100_000 else 100_000


# Runs the command and, on Linux, sums the proportional set size (Pss: a page shared by n
# processes counts 1/n in each) of its process tree every half second: the memory the run takes
# from the machine, its forked children included. A forked child's ru_maxrss starts at its
# parent's resident size, so the largest process's peak counts the shared corpus twice.
_WRAPPER = """
import json, os, resource, subprocess, sys, time
def tree(root):
    kids = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                with open(f'/proc/{name}/stat') as f:
                    kids.setdefault(int(f.read().rsplit(')', 1)[1].split()[1]), []).append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += kids.get(pid, [])
    return found
def pss(pids):
    total = 0
    for pid in pids:
        try:
            with open(f'/proc/{pid}/smaps_rollup') as f:
                total += next(int(l.split()[1]) for l in f if l.startswith('Pss:'))
        except (OSError, StopIteration, ValueError):
            pass
    return total / 1024
linux = os.path.exists('/proc/self/smaps_rollup')
started, peak, at = time.perf_counter(), 0.0, 0.0
r = subprocess.Popen(sys.argv[1:])
while r.poll() is None:
    if linux:
        now = pss(tree(r.pid))
        if now > peak:
            peak, at = now, time.perf_counter() - started
    time.sleep(0.5)
print(json.dumps({'rc': r.returncode, 'peak_mb': resource.getrusage(
    resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 'pss_mb': peak if linux else None, 'pss_at': at}))
"""


def measured(argv: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float, dict]:
    """Run ``argv`` in a fresh wrapper process; (its result, wall seconds, its memory):
    ``peak_rss_mb``, the largest process's peak resident MiB (``ru_maxrss`` of the wrapper's
    children), and on Linux ``peak_pss_mb``, the peak of the whole process tree's Pss sampled
    every 0.5 s, with ``peak_pss_at_s``, when (seconds from the start)."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], cwd=cwd, capture_output=True,
                         text=True)  # fmt: skip
    wall = time.perf_counter() - started
    tail = json.loads(run.stdout.strip().splitlines()[-1])
    memory = {"peak_rss_mb": round(tail["peak_mb"])}
    if tail.get("pss_mb") is not None:
        memory.update(peak_pss_mb=round(tail["pss_mb"]), peak_pss_at_s=round(tail["pss_at"], 1))
    return subprocess.CompletedProcess(argv, tail["rc"], run.stdout, run.stderr), wall, memory


def default_command(docs: int, out: Path, overrides: list[str]) -> dict:
    """The default command at ``docs`` documents, end to end."""
    run_dir = out / f"run-{docs}"
    argv = [sys.executable, str(ROOT / "run_sweep.py"), f"data.synthetic.num_docs={docs}",
            f"data.synthetic.vocab_words={vocab_words(docs)}", f"hydra.run.dir={run_dir}",
            f"search.storage_dir={out / 'studies'}", f"data.cache_dir={out / f'cache-{docs}'}",
            f"search.study_name=scale-{docs}", *overrides]  # fmt: skip
    result, wall, memory = measured(argv, out)
    if result.returncode != 0:
        raise RuntimeError(
            f"the default command at {docs} documents failed:\n{result.stderr[-3000:]}"
        )
    timing = json.loads((run_dir / "timing.json").read_text())
    trials = pd.read_csv(run_dir / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    return {"documents": docs, "wall_s": round(wall, 1), **memory,
            **{k: round(timing.get(k, 0.0), 1) for k in PHASES},
            "trials": int(timing["trials"]),
            "median_tokens_per_s": round(float(done["tokens_per_second"].median())),
            "largest_table_rows": int(done["num_embeddings"].max()) if len(done) else 0}  # fmt: skip


def prepare_and_train(docs: int, out: Path, overrides: list[str]) -> dict:
    """Data preparation plus one trial at ``docs`` documents (the recipe fixed), end to end."""
    argv = [sys.executable, str(ROOT / "run_sweep.py"), f"data.synthetic.num_docs={docs}",
            f"data.synthetic.vocab_words={vocab_words(docs)}", "search.n_trials=1",
            "report.repeats=0", "report.export=none", "report.quantize=none", "train.lr=0.01",
            "model.hidden_dim=64", "data.tokenizer.word_ngrams=1", "data.cache_dir=null",
            f"hydra.run.dir={out / f'prep-{docs}'}", f"search.storage_dir={out / 'studies'}",
            f"search.study_name=prep-{docs}", *overrides]  # fmt: skip
    result, wall, memory = measured(argv, out)
    if result.returncode != 0:
        raise RuntimeError(f"preparation at {docs} documents failed:\n{result.stderr[-3000:]}")
    timing = json.loads((out / f"prep-{docs}" / "timing.json").read_text())
    return {"documents": docs, "wall_s": round(wall, 1), **memory,
            "data_s": round(timing["data_s"], 1), "training_s": round(timing["training_s"], 1)}  # fmt: skip


def fasttext_rows(docs: int, out: Path, python: Path, threads: list[int]) -> list[dict]:
    """fastText on our tokens and splits at ``docs`` documents, once per thread count."""
    from hydra import compose, initialize_config_dir

    from sweep.data import vocab
    from sweep.data.corpus import SPLITS, load_corpus
    from sweep.trial import recipe

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = recipe.fixed(compose("sweep", [f"data.synthetic.num_docs={docs}",
                                             f"data.synthetic.vocab_words={vocab_words(docs)}",
                                             "data.tokenizer.word_ngrams=1"]))  # fmt: skip
    corpus = load_corpus(cfg.data, cfg.seed)
    tokenizer = vocab.Tokenizer.from_config(cfg.data.tokenizer)
    work = out / f"fasttext-{docs}"
    work.mkdir(parents=True, exist_ok=True)
    files, tokens = {}, 0
    for split in SPLITS:
        lines = []
        for text, label in zip(corpus.texts[split], corpus.labels[split], strict=True):
            words = tokenizer(text)[: int(cfg.data.max_length)]
            tokens += len(words) if split == "train" else 0
            lines.append(f"__label__{int(label)} {' '.join(words)}\n")
        random.Random(0).shuffle(lines)  # fastText reads in file order
        files[split] = work / f"{split}.txt"
        files[split].write_text("".join(lines))
    del corpus
    rows = []
    for count in threads:
        job = work / f"job-{count}.json"
        job.write_text(json.dumps({"train": str(files["train"]), "validation": str(files["validation"]),
                                   "test": str(files["test"]), "dim": 32, "threads": count,
                                   "grid": [[0.1, 5]], "word_ngrams": 1}))  # fmt: skip
        result, wall, memory = measured([str(python), str(PEER), str(job)], out)
        if result.returncode != 0:
            raise RuntimeError(f"fastText failed:\n{result.stderr[-3000:]}")
        line = json.loads(result.stdout.strip().splitlines()[0])
        seconds = float(line["train_seconds"])  # reading the file and its dictionary included
        rows.append({"documents": docs, "threads": count, "wall_s": round(wall, 1),
                     "train_s": round(seconds, 1), **memory,
                     "tokens_per_s": round(5 * tokens / seconds),
                     "test_accuracy": round(float(line.get("test_accuracy", math.nan)), 2)})  # fmt: skip
    return rows


def step_ms(rows: int, batch: int = 64, width: int = 100, steps: int = 30) -> float:
    """Median milliseconds of one training step of a bag model with a ``rows``-row table."""
    import torch
    from torch.nn import functional as F

    from sweep.models.classifiers import BagClassifier
    from sweep.models.optim import Optimizers

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = BagClassifier(rows, 32, 4, hidden_dim=64, sparse=True)
    optimizers = Optimizers(model, 0.01)
    batches = [torch.randint(2, rows, (batch, width), dtype=torch.int32) for _ in range(4)]
    labels = torch.randint(0, 4, (batch,))
    times = []
    for i in range(steps + 3):
        started = time.perf_counter()
        loss = F.cross_entropy(model(batches[i % 4]), labels)
        optimizers.zero_grad()
        loss.backward()
        optimizers.step()
        if i >= 3:  # the first steps allocate the optimizer's state
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def exponents(table: pd.DataFrame) -> pd.DataFrame:
    """Each phase's growth exponent between consecutive sizes: log10(t2/t1) / log10(n2/n1)."""
    rows = []
    ordered = table.sort_values("documents").to_dict("records")
    for small, large in zip(ordered, ordered[1:], strict=False):
        span = math.log10(large["documents"] / small["documents"])
        row = {"from": small["documents"], "to": large["documents"]}
        for column in ("wall_s", "peak_rss_mb", *PHASES):
            a, b = small.get(column, 0), large.get(column, 0)
            row[column] = round(math.log10(b / a) / span, 2) if a > 0.05 and b > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    own, overrides = split_overrides(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--prep-docs", type=int, nargs="*", default=[])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench/corpus_scale"))
    parser.add_argument("--fasttext-venv", type=Path, default=Path("bench/fasttext-venv"))
    parser.add_argument("--no-fasttext", action="store_true")
    parser.add_argument("--no-steps", action="store_true")
    args = parser.parse_args(own)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_steps:
        steps = pd.DataFrame([{"rows": r, "step_ms": round(step_ms(r), 2)}
                              for r in (20_000, 100_000, 1_500_000, 11_460_000)])  # fmt: skip
        steps["vs_20k"] = (steps["step_ms"] / steps["step_ms"].iloc[0]).round(2)
        save_and_print(steps, out / "steps.csv")
    runs = []
    for docs in args.docs:
        runs.append(default_command(docs, out, overrides))
        print(runs[-1], flush=True)
    if runs:
        table = pd.DataFrame(runs)
        save_and_print(table, out / "default_command.csv")
        if len(runs) > 1:
            save_and_print(exponents(table), out / "exponents.csv")
    if args.prep_docs:
        prep = pd.DataFrame([prepare_and_train(d, out, overrides) for d in args.prep_docs])
        save_and_print(prep, out / "prepare_and_train.csv")
    if not args.no_fasttext and args.docs:
        from sweep.benchmarks.speed import ensure_fasttext

        python = ensure_fasttext(args.fasttext_venv.resolve())
        peer = pd.DataFrame([row for docs in args.docs
                             for row in fasttext_rows(docs, out, python, args.threads)])  # fmt: skip
        save_and_print(peer, out / "fasttext.csv")


if __name__ == "__main__":
    main()
