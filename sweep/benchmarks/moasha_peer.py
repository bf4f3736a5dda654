"""Syne Tune's MOASHA as a benchmark peer, on our trial function; runs in its own environment.

    <venv>/bin/python -m sweep.benchmarks.moasha_peer JOB.json

The virtual environment (``ensure_synetune``, under the ignored ``bench/``) holds ``syne-tune``
and this project, so the peer trains exactly the trials a sweep trains (``TrialRunner.train``:
the same data, model, epochs and early stopping) and only the search differs. The job names the
config overrides, the number of trials, the sampler seed and the output CSV. MOASHA (one
bracket, grace period 1 epoch, reduction factor 3, non-dominated sorting; Syne Tune's defaults)
draws ``embedding_dim`` and ``vocab_size`` log-uniformly over the space's bounds, and after every
epoch decides on the trial's validation error and parameter count (known before training, as
it treats every metric: reported by the trial). A trial it stops is PRUNED; one that trains
to its end (its last epoch, or early stopping) is COMPLETE. One trial at a time, as our
sweep's default. Writes one row per trial with its completion time from the first trial's start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYNETUNE = "syne-tune==0.16.0"


class Stopped(Exception):
    """MOASHA stopped the trial after an epoch."""


def ensure_synetune(venv: Path) -> Path:
    """The peer's environment: syne-tune, the torch this process runs, and this project."""
    python = venv / "bin" / "python"
    if not python.exists():
        import torch

        print(f"creating {venv} with {SYNETUNE} and this project", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        torch_pin = f"torch=={torch.__version__.split('+')[0]}"
        subprocess.run([str(python), "-m", "pip", "install", "-q", SYNETUNE, torch_pin],
                       check=True)  # fmt: skip
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True)
    return python


def run_job(job: dict) -> None:
    import numpy as np
    import torch
    from syne_tune.backend.trial_status import Trial
    from syne_tune.config_space import lograndint
    from syne_tune.optimizer.scheduler import SchedulerDecision
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    from sweep.cli import compose_user
    from sweep.data.prepared import PreparedData
    from sweep.search.space import SearchSpace
    from sweep.trial import TrialRunner, recipe

    torch.set_num_threads(int(job.get("threads", 1)))
    cfg = recipe.fixed(compose_user(job["overrides"]))
    data = PreparedData.load(cfg.data, cfg.seed, torch.device("cpu"))
    space = SearchSpace(cfg.search.space).with_vocabulary(data.full_vocab)
    runner = TrialRunner(cfg, data, space)
    bounds = {axis.name: axis.bounds(data.full_vocab) for axis in space.axes}
    config_space = {name: lograndint(int(low), int(high)) for name, (low, high) in bounds.items()}
    np.random.seed(job["seed"])  # MOASHA draws its brackets from numpy's global stream
    scheduler = MOASHA(config_space, metrics=["error", "params_total"], do_minimize=True,
                       time_attr="epoch", max_t=int(cfg.train.epochs), grace_period=1,
                       reduction_factor=3, random_seed=job["seed"])  # fmt: skip
    rows, start = [], None
    for number in range(job["trials"]):
        config = scheduler.suggest().config
        params = {name: int(config[name]) for name in bounds}
        trial = Trial(trial_id=number, config=config, creation_time=None)
        scheduler.on_trial_add(trial)
        size = runner.describe(params)["params_total"]
        last: dict = {}

        def on_epoch(epoch: int, val_accuracy: float, trial=trial, size=size, last=last) -> None:
            last.update(epoch=epoch, error=100.0 - val_accuracy, params_total=size)
            decision = scheduler.on_trial_result(trial, dict(last))
            if decision == SchedulerDecision.STOP and epoch < cfg.train.epochs:
                raise Stopped(f"MOASHA stopped it after epoch {epoch}")

        started = time.time()
        start = started if start is None else start
        row = {"trial": number, **params, "params_total": size, "datetime_start": started}
        try:
            measured = runner.train(params, on_epoch)
            scheduler.on_trial_complete(trial, dict(last))
            row.update(state="COMPLETE", val_accuracy=measured["val_accuracy"],
                       epochs=measured["epochs"])  # fmt: skip
        except Stopped:
            row.update(state="PRUNED", val_accuracy=100.0 - last["error"], epochs=last["epoch"])
        row["seconds"] = time.time() - start
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(job["out"]).write_text(json.dumps(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", type=Path, help="JSON: overrides, trials, seed, out, threads")
    args = parser.parse_args(argv)
    run_job(json.loads(args.job.read_text()))


if __name__ == "__main__":
    main()
