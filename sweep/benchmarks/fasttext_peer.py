"""fastText's supervised trainer as a benchmark peer; runs in its own virtual environment.

    <venv>/bin/python sweep/benchmarks/fasttext_peer.py JOB.json

Imports nothing from this project (the venv holds only ``fasttext-wheel`` and ``numpy<2``). The
job names the train, validation and test files (fastText's ``__label__`` format, lines already
shuffled), the dimension, threads, and the grid of (lr, epoch) to try. Prints one JSON line per
configuration: training wall time (reading the file and building fastText's dictionary
included, as in every fastText run) and validation and test accuracy in percent.

A job with ``quantize`` trains one model at its settings and prints its FastText.zip files'
bytes and accuracies over a grid of ``quantize`` settings (``quantize`` below).

A job with ``autotune`` instead runs fastText's own search (``-autotune-validation``, with
``-autotune-modelsize`` when the job gives ``model_size``: the model is quantized to fit) for
``duration`` seconds, saves the model, and prints one line: the wall time of the whole call, the
saved file's bytes, the accuracies and the arguments the search chose.
"""

import json
import os
import sys
import time

import fasttext


def accuracy(model, path):
    _, precision, _ = model.test(path)  # one label per line: precision@1 is accuracy
    return 100.0 * precision


def autotune(job):
    start = time.perf_counter()
    options = {"autotuneModelSize": job["model_size"]} if job.get("model_size") else {}
    model = fasttext.train_supervised(
        input=job["train"],
        autotuneValidationFile=job["validation"],
        autotuneDuration=int(job["duration"]),
        thread=job["threads"],
        verbose=0,
        **options,
    )
    wall = time.perf_counter() - start
    path = job["model_path"]
    model.save_model(path)
    args = model.f.getArgs()
    chosen = {name: getattr(args, name) for name in ("dim", "epoch", "lr", "wordNgrams", "minn",
                                                      "maxn", "bucket", "dsub", "qnorm", "cutoff")
              if hasattr(args, name)}  # fmt: skip
    print(json.dumps({
        "wall_seconds": wall,
        "file_bytes": os.path.getsize(path),
        "val_accuracy": accuracy(model, job["validation"]),
        "test_accuracy": accuracy(model, job["test"]),
        "args": {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in chosen.items()},
    }), flush=True)  # fmt: skip


def quantize(job):
    """FastText.zip (Joulin et al. 2016): one supervised model at the job's settings, saved,
    then ``model.quantize`` at each (cutoff, dsub, qnorm, retrain) of the job's grid, each from
    that saved model; one line for the model itself, then one per quantized ``.ftz`` file."""
    start = time.perf_counter()
    model = fasttext.train_supervised(
        input=job["train"], dim=job["dim"], lr=job["lr"], epoch=job["epoch"], minCount=1,
        wordNgrams=job["word_ngrams"], thread=job["threads"], seed=job.get("seed", 0), verbose=0,
    )  # fmt: skip
    wall = time.perf_counter() - start
    base = os.path.join(job["work"], "model.bin")
    model.save_model(base)
    row = {"quantized": False, "seconds": wall, "file_bytes": os.path.getsize(base)}
    row.update(val_accuracy=accuracy(model, job["validation"]),
               test_accuracy=accuracy(model, job["test"]))  # fmt: skip
    print(json.dumps(row), flush=True)
    for cutoff, dsub, qnorm, retrain in job["grid"]:
        model = fasttext.load_model(base)
        start = time.perf_counter()
        model.quantize(input=job["train"], cutoff=cutoff, dsub=dsub, qnorm=qnorm,
                       retrain=retrain, thread=job["threads"], verbose=0)  # fmt: skip
        seconds = time.perf_counter() - start
        path = os.path.join(job["work"], f"model-{cutoff}-{dsub}-{int(qnorm)}-{int(retrain)}.ftz")
        model.save_model(path)
        print(json.dumps({
            "quantized": True, "cutoff": cutoff, "dsub": dsub, "qnorm": qnorm,
            "retrain": retrain, "seconds": seconds, "file_bytes": os.path.getsize(path),
            "val_accuracy": accuracy(model, job["validation"]),
            "test_accuracy": accuracy(model, job["test"]),
        }), flush=True)  # fmt: skip
        os.remove(path)  # its size is measured; a grid of them need not stay on the disk


def main():
    with open(sys.argv[1]) as handle:
        job = json.load(handle)
    if job.get("autotune"):
        autotune(job)
        return
    if job.get("quantize"):
        quantize(job)
        return
    for lr, epoch in job["grid"]:
        times = []
        try:
            for _ in range(job.get("timing_runs", 1)):
                start = time.perf_counter()
                model = fasttext.train_supervised(
                    input=job["train"],
                    dim=job["dim"],
                    lr=lr,
                    epoch=epoch,
                    minCount=1,
                    wordNgrams=job.get("word_ngrams", 1),
                    thread=job["threads"],
                    seed=job.get("seed", 0),
                    verbose=0,
                )
                times.append(time.perf_counter() - start)
        except RuntimeError as error:  # "Encountered NaN.": this lr diverges; skip it
            print(json.dumps({"lr": lr, "epoch": epoch, "failed": str(error)}), flush=True)
            continue
        row = {
            "lr": lr,
            "epoch": epoch,
            "train_seconds": sorted(times)[len(times) // 2],
            "val_accuracy": accuracy(model, job["validation"]),
            "test_accuracy": accuracy(model, job["test"]),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
