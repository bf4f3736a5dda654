"""fastText's supervised trainer as a benchmark peer; runs in its own virtual environment.

    <venv>/bin/python sweep/benchmarks/fasttext_peer.py JOB.json

Imports nothing from this project (the venv holds only ``fasttext-wheel`` and ``numpy<2``). The
job names the train, validation and test files (fastText's ``__label__`` format, lines already
shuffled), the dimension, threads, and the grid of (lr, epoch) to try. Prints one JSON line per
configuration: training wall time (reading the file and building fastText's dictionary
included, as in every fastText run) and validation and test accuracy in percent.
"""

import json
import sys
import time

import fasttext


def accuracy(model, path):
    _, precision, _ = model.test(path)  # one label per line: precision@1 is accuracy
    return 100.0 * precision


def main():
    with open(sys.argv[1]) as handle:
        job = json.load(handle)
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
