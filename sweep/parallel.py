"""Several workers on one study: ``search.workers=N`` starts N processes sharing the storage.

Each worker is the same command (``run_sweep.py`` with the run's overrides) as a subprocess, so a
worker is exactly what a user would start by hand on another machine, and one that dies (killed,
out of memory) leaves the others going. On a machine with GPUs each worker is pinned to one
(``CUDA_VISIBLE_DEVICES`` round-robin over the visible devices); ``search.workers=auto`` starts
``search.trials_per_gpu`` workers per GPU (one worker on a machine without GPUs). The parent
prepares the data once (so workers load the cache), waits, fails the trials of workers that died,
and writes one combined report from the storage.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from sweep import measure, runner
from sweep.common.overrides import override_key
from sweep.config import check_config
from sweep.data import corpus
from sweep.models.frontends import frontend_of
from sweep.naming import register_resolvers
from sweep.report import build as report
from sweep.search import settings as search
from sweep.search import storage, study
from sweep.trial import TrialRunner, recipe

log = logging.getLogger(__name__)

RUN_SWEEP = Path(__file__).resolve().parents[1] / "run_sweep.py"
# Overrides the parent sets for each worker itself.
_PER_WORKER = ("search.workers", "search.worker_index", "hydra.run.dir", "hydra.sweep.dir")
# The storage URL reaches a worker through its environment, never its argv or saved config (it
# may hold a password): the worker's override names the variable instead.
STORAGE_VARIABLE = "SWEEP_STORAGE_URL"


def visible_gpus() -> list[str]:
    """GPU ids workers may be pinned to: CUDA_VISIBLE_DEVICES, else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def worker_count(search_cfg, gpus: Sequence[str]) -> int:
    """``search.workers`` as a number (``auto``: trials_per_gpu per GPU, 1 without GPUs)."""
    workers = search_cfg.get("workers", 1)
    if workers == "auto":
        return max(len(gpus) * int(search_cfg.get("trials_per_gpu", 1)), 1)
    if not isinstance(workers, int) or workers < 1:
        raise search.SearchError(f"search.workers={workers!r} must be an integer >= 1 or auto")
    return workers


def worker_commands(
    overrides: Sequence[str],
    count: int,
    out_dir: Path,
    gpus: Sequence[str],
    storage: str | None = None,
    threads: int | None = None,
    quantize: str = "front",
):
    """(argv, environment) of each worker; worker i gets GPU gpus[i % len(gpus)] if any.

    ``storage`` is the resolved ``search.storage``: it goes into the environment
    (``SWEEP_STORAGE_URL``), and the workers' override reads it from there. ``threads`` is
    each worker's torch thread count (``threads=null``: the cores given, shared among them).
    """
    pinned = (*_PER_WORKER, "search.storage", "threads", "report.export", "report.quantize")
    base = [o for o in overrides if override_key(o) not in pinned]
    base.append("report.export=keep")  # workers keep their weights; the parent exports
    # The parent measures the front's precisions once (front); all: each trial as it trains.
    base.append(f"report.quantize={'all' if quantize == 'all' else 'none'}")
    if storage:
        base.append(f"search.storage=${{oc.env:{STORAGE_VARIABLE}}}")
    if threads is None:
        threads = max(runner.thread_count(None) // count, 1)
    base.append(f"threads={threads}")
    commands = []
    for index in range(count):
        argv = [sys.executable, str(RUN_SWEEP), *base, "search.workers=1",
                f"search.worker_index={index}", f"hydra.run.dir={out_dir / f'worker-{index}'}"]  # fmt: skip
        env = dict(os.environ)
        if storage:
            env[STORAGE_VARIABLE] = storage
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        commands.append((argv, env))
    return commands


def launch(cfg: DictConfig, out_dir: Path, overrides: Sequence[str]):
    """Run the study with several worker processes; return the combined report's table."""
    register_resolvers()
    out_dir = Path(out_dir)
    gpus = visible_gpus()
    count = worker_count(cfg.search, gpus)
    check_config(cfg)
    # Encode the corpus once, into the cache the workers then load (nothing of it is kept here):
    # with the recipe's first choices. The workers settle the recipe itself: one probes on its
    # device, the others wait for its pick (sweep.search.study.settle_recipe).
    first = recipe.fixed(cfg)
    frontend_of(cfg.model).encode(corpus.load_corpus(first.data, first.seed), first.data)
    log.info(
        "starting %d workers on study %r%s", count, cfg.search.study_name,
        f" over GPUs {gpus}" if gpus else "",
    )  # fmt: skip
    started = time.perf_counter()
    procs = []
    storage_url = cfg.search.get("storage")
    threads = cfg.get("threads")
    quantize = cfg.report.get("quantize", "front")
    for argv, env in worker_commands(overrides, count, out_dir, gpus, storage_url, threads,
                                     quantize):  # fmt: skip
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL))
    codes = [proc.wait() for proc in procs]
    for index, code in enumerate(codes):
        if code != 0:
            log.warning(
                "worker %d exited with code %d (see %s/worker-%d)", index, code, out_dir, index
            )
    storage_text = storage.describe_storage(cfg.search)
    opened = study.load_study(storage.make_storage(cfg.search), cfg.search.study_name, storage_text)
    study.fail_stale_trials(opened, cfg.search.stale_after_s)  # trials of workers that died
    table = report.rebuild_study(opened, out_dir, cfg.report.tolerance, storage_text)
    kept = runner.kept_states(cfg)
    if kept is not None and len(table):  # measure the front's precisions, export: once, here
        # the workers' recipe, read from the storage (its data from the cache)
        cfg, _, data, _ = runner.with_recipe(cfg, measure.resolve_device(cfg.device))
        trial = TrialRunner(cfg, data)
        runner.measure_precisions(opened, cfg, trial, kept)
        table = report.rebuild_study(opened, out_dir, cfg.report.tolerance, storage_text)
        runner.export_models(opened, cfg, trial, table, out_dir, kept)
    log.info(
        "%d workers done in %.0fs; the study holds %d finished trials",
        count, time.perf_counter() - started, study.count_finished(opened),
    )  # fmt: skip
    return table, codes
