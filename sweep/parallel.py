"""Several workers on one study: ``search.workers=N`` starts N processes sharing the storage.

Each worker is the same command (``run_sweep.py`` with the run's overrides) as a subprocess, so a
worker is exactly what a user would start by hand on another machine, and one that dies (killed,
out of memory) leaves the others going. On a machine with GPUs each worker is pinned to one
(``CUDA_VISIBLE_DEVICES`` round-robin over the visible devices); ``search.workers=auto`` starts
``search.trials_per_gpu`` workers per GPU (one worker on a machine without GPUs). The parent
prepares the data once (so workers load the cache) and the study (so workers only join it),
waits, fails the trials of workers that died, and writes one combined report from the storage.

A stop of the parent (SIGTERM, SIGINT: ``sweep.common.stop``) is passed on to every worker, each
of which fails its running trials and writes its reports; the parent then writes the combined
report and exits 143 or 130. Workers run in their own session (a terminal's Ctrl-C reaches the
parent alone) and get SIGTERM if the parent dies without passing anything on (``kill -9``:
``tie_to_parent``). No process of a run outlives it. The exit code: ``verdict``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from sweep import measure, runner
from sweep.cli import USER_ERROR
from sweep.common.forked import die_with_parent
from sweep.common.overrides import override_key
from sweep.common.secrets import mask
from sweep.common.stop import RUN_STARTED, Stopped, TimeBudget, deferred, stop_of
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
# A worker's parent, so that the worker ends with it (tie_to_parent).
PARENT_PID = "SWEEP_PARENT_PID"
# How long stopped workers get to fail their trials and write their reports before SIGKILL.
STOP_WAIT_S = 20.0
INCOMPLETE = 3  # workers failed and the study is short of search.n_trials: rerun to resume


def tie_to_parent() -> None:
    """In a worker of ``search.workers``: get SIGTERM (a clean stop) when the parent dies, even
    by SIGKILL, which no handler of the parent can pass on (Linux's PR_SET_PDEATHSIG; elsewhere
    only the parent's own stop reaches its workers). Nothing outside such a worker."""
    parent = os.environ.get(PARENT_PID)
    if not parent or not die_with_parent(signal.SIGTERM):  # elsewhere: the parent's stop only
        return
    if os.getppid() != int(parent):  # the parent died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


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
    each worker's torch thread count (``threads=null``: the cores given, shared among them);
    each trains one thing at a time (``processes=1``).
    """
    pinned = (*_PER_WORKER, "search.storage", "threads", "processes", "report.export",
              "report.quantize")  # fmt: skip
    base = [o for o in overrides if override_key(o) not in pinned]
    # The workers are the side by side: each trains one thing at a time (processes=auto in
    # every worker would start workers x cores trainings, and each would count the same free
    # memory as its own).
    base.append("processes=1")
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
        # search.max_memory_mb=auto: the workers on one device share its memory
        sharing = len(range(index % len(gpus), count, len(gpus))) if gpus else count
        env[measure.DEVICE_WORKERS_VARIABLE] = str(sharing)
        commands.append((argv, env))
    return commands


def launch(cfg: DictConfig, out_dir: Path, overrides: Sequence[str]) -> int:
    """Run the study with several worker processes; write the combined report; return the
    run's exit code (``verdict``)."""
    started = time.time()
    register_resolvers()
    check_config(cfg)  # every bad key before any worker starts
    budget = TimeBudget.of(cfg.search, started)  # the workers' too (RUN_STARTED)
    out_dir = Path(out_dir)
    gpus = visible_gpus()
    count = worker_count(cfg.search, gpus)
    # Encode the corpus once, into the cache the workers then load (nothing of it is kept here):
    # with the recipe's first choices. The workers settle the recipe itself: one probes on its
    # device, the others wait for its pick (sweep.search.study.settle_recipe).
    first = recipe.fixed(cfg)
    frontend_of(cfg.model).encode(corpus.load_corpus(first.data, first.seed), first.data)
    opened = study.prepare_study(cfg.search)  # the workers only join it: no race to make it
    log.info(
        "starting %d workers on study %r%s", count, cfg.search.study_name,
        f" over GPUs {gpus}" if gpus else "",
    )  # fmt: skip
    commands = worker_commands(overrides, count, out_dir, gpus, cfg.search.get("storage"),
                               cfg.get("threads"), cfg.report.get("quantize", "front"))  # fmt: skip
    procs: list[subprocess.Popen] = []
    stop = None
    try:
        for argv, env in commands:
            env = {**env, RUN_STARTED: repr(budget.started), PARENT_PID: str(os.getpid())}
            with deferred():  # a worker started is a worker the stop reaches
                # Its own session: a terminal's Ctrl-C reaches the parent alone, which passes
                # it on once (tie_to_parent covers a parent that is killed outright).
                procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                              start_new_session=True))  # fmt: skip
        codes = supervise(procs, out_dir)
    except (Stopped, KeyboardInterrupt) as error:
        stop = stop_of(error)
        log.warning("%s: passing it on to the %d workers", stop.reason, len(procs))
        codes = stop_workers(procs, stop, out_dir)
    timed_out = budget.ended()  # when the workers ended, not after the reports
    study.fail_stale_trials(opened, cfg.search.stale_after_s)  # trials of workers that died
    n_trials = store_parent_context(cfg, opened, overrides, budget, stop)
    finished = study.count_finished(opened)
    if opened.get_trials(deepcopy=False):
        report_all(cfg, opened, out_dir, measure_and_export=stop is None)
    else:
        log.warning("no trial in study %r: no combined report", cfg.search.study_name)
    log.info("%d workers done in %.0fs; the study holds %d finished trials of %d",
             count, time.time() - budget.started, finished, n_trials)  # fmt: skip
    return verdict(codes, finished >= n_trials or timed_out, stop, out_dir)


def store_parent_context(
    cfg: DictConfig, opened, overrides: Sequence[str], budget: TimeBudget, stop
) -> int:
    """The page is the parent's: its own command line (a worker's holds the pinned keys: no
    export, its index, the storage's variable) and this run's ending, or none (a worker's note
    of a budget that others then made up for is dropped). Returns the study's trial target."""
    context = dict(opened.user_attrs.get("report_context") or {})
    n_trials = int(context.get("n_trials", cfg.search.n_trials))
    note = runner.ending_note(opened, n_trials, budget, stop)
    if note:
        log.warning("%s", note)
    context = {k: v for k, v in context.items() if k != "ending"}
    context["overrides"] = [mask(o) for o in overrides]
    if note:
        context["ending"] = note
    if context.get("study_name"):
        runner.store_context(opened, cfg, context)
    return n_trials


def report_all(cfg: DictConfig, opened, out_dir: Path, measure_and_export: bool = True) -> None:
    """The combined report of the whole study, from the storage; unless the run was stopped,
    the front's precisions measured and the recommendation exported, once, here."""
    storage_text = storage.describe_storage(cfg.search)
    table = report.rebuild_study(opened, out_dir, cfg.report.tolerance, storage_text)
    kept = runner.kept_states(cfg)
    if measure_and_export and kept is not None and len(table):
        # the workers' recipe, read from the storage (its data from the cache)
        cfg, _, data, _ = runner.with_recipe(cfg, measure.resolve_device(cfg.device))
        trial = TrialRunner(cfg, data)
        runner.measure_precisions(opened, cfg, trial, kept)
        table = report.rebuild_study(opened, out_dir, cfg.report.tolerance, storage_text)
        runner.export_models(opened, cfg, trial, table, out_dir, kept)


def worker_log(out_dir: Path, index: int) -> Path:
    """Worker ``index``'s log file (Hydra's, named after the script)."""
    return Path(out_dir) / f"worker-{index}" / f"{RUN_SWEEP.stem}.log"


def how_it_ended(code: int) -> str:
    """A worker's exit code in words: a negative code is the signal that killed it."""
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def supervise(procs: list[subprocess.Popen], out_dir: Path) -> list[int]:
    """Wait for every worker; return their exit codes. One that ends with an error is logged
    as it ends, with its log file: the others go on (its trial is failed as soon as another
    worker sees its process gone)."""
    codes: dict[int, int] = {}
    while len(codes) < len(procs):
        for index, proc in enumerate(procs):
            code = proc.poll() if index not in codes else None
            if code is None:
                continue
            codes[index] = code
            if code != 0:
                log.warning("worker %d (pid %d) %s; its log: %s", index, proc.pid,
                            how_it_ended(code), worker_log(out_dir, index))  # fmt: skip
        time.sleep(0.2)
    return [codes[i] for i in range(len(procs))]


def stop_workers(procs: list[subprocess.Popen], stop: Stopped, out_dir: Path,
                 wait_s: float = STOP_WAIT_S) -> list[int]:  # fmt: skip
    """Pass the parent's stop to every worker still running (its signal), so each fails its
    running trials and writes its reports; return their exit codes. A worker still running
    ``wait_s`` seconds later is killed (its trial is failed here afterwards)."""
    signum = stop.signum or signal.SIGTERM
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
    deadline = time.time() + wait_s
    codes = []
    for index, proc in enumerate(procs):
        try:
            codes.append(proc.wait(timeout=max(deadline - time.time(), 0.1)))
        except subprocess.TimeoutExpired:
            log.warning("worker %d (pid %d) did not stop within %.0fs: killed; its log: %s",
                        index, proc.pid, wait_s, worker_log(out_dir, index))  # fmt: skip
            proc.kill()
            codes.append(proc.wait())
    return codes


def verdict(codes: list[int], done: bool, stop: Stopped | None, out_dir: Path) -> int:
    """The run's exit code: 128 + the signal that stopped it (143: SIGTERM, 130: SIGINT); 0
    when the study holds ``search.n_trials`` finished trials or the time budget ended it
    (``done``), even if a worker died on the way; 2 when every worker stopped on bad input
    (their logs say which); else ``INCOMPLETE``: trials are missing, and the message names the
    workers that failed and their logs."""
    if stop is not None:
        return stop.exit_code
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    if done:
        return 0
    if failed and all(code == USER_ERROR for _, code in failed) and len(failed) == len(codes):
        log.error("every worker stopped on bad input; see %s", worker_log(out_dir, 0))
        return USER_ERROR
    named = "; ".join(f"worker {i} {how_it_ended(c)} (its log: {worker_log(out_dir, i)})"
                      for i, c in failed) or "no worker failed"  # fmt: skip
    log.error("the study is short of search.n_trials: %s. Run the same command again to "
              "resume it", named)  # fmt: skip
    return INCOMPLETE
