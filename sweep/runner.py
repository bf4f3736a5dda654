"""The whole study: check the config, prepare the data once, run the trials, write the reports.

``run(cfg, out_dir)`` is what ``run_sweep.py`` calls and what tests call with a composed config.
The story, one module per step: ``sweep.data.prepared`` (the data, once), ``sweep.search.space`` (the axes),
``sweep.search.study`` (the storage and its study), ``sweep.search.loop`` (the ask/tell loop) calling
``sweep.trial.runner`` (one trial: describe, then train), and ``sweep.report.build`` after trials (within
``report.time_share`` of the wall time: ``Reports``) and at the end.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import hydra
import optuna
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from sweep import measure, schema
from sweep.common.atomic import write_atomic
from sweep.common.forked import processes_for, usable_cores
from sweep.common.secrets import mask, mask_data, remember_config
from sweep.common.stop import Stopped, TimeBudget, stop_of
from sweep.config import check_config
from sweep.data.prepared import PreparedData
from sweep.models.frontends import frontend_of
from sweep.models.pack.grouping import pack_key
from sweep.naming import kind_setup, register_resolvers
from sweep.report import build as report
from sweep.search import loop as trials
from sweep.search import storage, study
from sweep.search.records import PROBE_FIT
from sweep.search.settings import budgets, grid_size, pack_size, parse_bytes
from sweep.search.space import SearchSpace
from sweep.ship import export
from sweep.trial import TrialRunner, recipe
from sweep.trial.recipe_fits import RecipeFits
from sweep.trial.side_by_side import TrialsSideBySide, train_side_by_side

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """Where the reports are and what the study recommends (None before any complete trial)."""

    out_dir: Path
    table: pd.DataFrame
    recommended: dict[str, Any] | None


def run(cfg: DictConfig, out_dir: Path, overrides: Sequence[str] = ()) -> SweepResult:
    """Run (or resume) the study described by ``cfg``; reports go to ``out_dir``."""
    register_resolvers()  # cfg's ${setup_digest:} resolves from here on
    remember_config(cfg)  # its secrets (storage password, data URL tokens) masked everywhere
    check_config(cfg)
    device = measure.resolve_device(cfg.device)
    torch.set_num_threads(thread_count(cfg.get("threads")))
    out_dir, started = Path(out_dir), time.perf_counter()
    budget = TimeBudget.of(cfg.search)  # from this run's start (a worker's: its parent's)
    kept = kept_states(cfg)
    fits = RecipeFits(kept, cfg.seed)  # the probe's fits of its pick: the first trials' answers
    cfg, picked, data, data_seconds = with_recipe(cfg, device, fits)
    space = SearchSpace(cfg.search.space).with_vocabulary(data.full_vocab)
    trial = TrialRunner(cfg, data, space)
    trial.on_trained = kept.save if kept is not None else None
    trial.timing.data = data_seconds
    trial.timing.recipe = time.perf_counter() - started - data_seconds
    if cfg.get("plan"):
        return plan(cfg, trial, out_dir)

    the_study, n_trials = open_study(cfg, data, space, budget)
    start_at_probe_points(the_study, cfg, picked, data)
    context = page_context(cfg, data, space, overrides, device)
    context["recipe"] = picked
    context["n_trials"] = n_trials  # the target (a grid's capped): a parent's exit code reads it
    store_context(the_study, cfg, context)
    reports = Reports(the_study, out_dir, cfg.report.tolerance, context, trial.timing, kept,
                      share=float(cfg.report.get("time_share", 1.0)), run_started=started)  # fmt: skip
    progress = Progress(n_trials, single=len(cfg.search.objectives) == 1)
    log.info("prepared data in %.1fs; running trials", time.perf_counter() - started)
    timing, stop = trial.timing, None
    try:
        try:
            search(
                the_study, cfg, trial, budget, n_trials=n_trials, space=space, describe=trial.describe,
                train=fits.train(trial.train), after_trial=lambda t, n: progress.trial_done(t, n, reports.after_trial()),
                pack=pack_size(cfg.search, pack_key(cfg, device=device) is not None),
                train_pack=fits.train_pack(trial.train_pack), validation_docs=len(data.labels["validation"]),
                memory_room=memory_room(cfg, trial), side_by_side=trials_side_by_side(cfg, trial, fits),
            )  # fmt: skip
            with timing.phase("precisions"):
                measure_precisions(the_study, cfg, trial, kept)
        except (Stopped, KeyboardInterrupt) as error:
            stop = stop_of(error)
            raise
        finally:
            # Also on an interrupt or a failed sweep: the reports cover the storage, and say why
            # the run ended short of search.n_trials (a stop, the time budget).
            record_ending(the_study, cfg, context, n_trials, budget, stop)
            table = reports.write(timeline=True)
        with timing.phase("export"):
            export_models(the_study, cfg, trial, table, out_dir, kept)
    finally:  # the time line covers the whole run, the export too, and a stopped run
        timing.write(time.perf_counter() - started, out_dir)
    rec = table[table["recommended"]] if len(table) else table
    return SweepResult(out_dir, table, rec.iloc[0].to_dict() if len(rec) else None)


def search(the_study, cfg: DictConfig, trial: TrialRunner, budget: TimeBudget, **loop) -> None:
    """The trials (``trials.run_trials`` with ``loop``), then the front's seed repeats, within
    ``budget``: past its deadline neither starts; past its grace too, what still trains is
    stopped (``Stopped`` with no signal: the trial loop fails its trials and ends, a seed repeat
    is dropped) and the run goes on to its reports. Each is a phase of the run's time line."""
    with budget.enforced():
        try:
            with trial.timing.phase("trials"):
                trials.run_trials(the_study, cfg.search, budget=budget, **loop)
            with trial.timing.phase("repeats"):
                repeat_front(the_study, cfg, trial, budget)
        except Stopped as grace_over:  # the trial loop handles its own: seed repeats
            if grace_over.signum is not None:
                raise
            log.warning("seed repeats %s", grace_over.reason)


def memory_room(cfg: DictConfig, trial: TrialRunner) -> trials.MemoryRoom | None:
    """``search.max_memory_mb=auto``: the memory a trial may take on this run's device, read
    once as the trials begin (``measure.available_mb``, with a margin for what the estimate
    leaves out), shared by the workers on the device (``SWEEP_DEVICE_WORKERS``, set by
    ``sweep.parallel``), plus the baseline this process already holds (the corpus on the
    device: ``memory_mb`` counts it too). None for a number (a budget) or null (no bound)."""
    if cfg.search.get("max_memory_mb") != "auto":
        return None
    available, source = measure.available_mb(trial.data.device)
    workers = max(int(os.environ.get(measure.DEVICE_WORKERS_VARIABLE, "1") or 1), 1)
    held = sum(trial.baseline.values()) / measure.MB
    room = trials.MemoryRoom(MEMORY_HEADROOM * available / workers + held, available, source,
                             workers)  # fmt: skip
    log.info("memory: %s", room.describe())
    return room


# Of the memory a device has, the share a trial's estimate may fill: the estimate counts the
# tensors a trial holds, not the allocator's slack or Python's own objects.
MEMORY_HEADROOM = 0.85


def with_recipe(
    cfg: DictConfig, device, fits: RecipeFits | None = None
) -> tuple[DictConfig, dict | None, PreparedData, float]:
    """(``cfg`` with every ``auto`` key set, what the study's recipe holds, the data it trains
    on, the seconds that data took to load): the recipe stored with the study, else the probe's
    pick, stored for resumes and other workers (``sweep.trial.recipe``). Plan mode trains
    nothing, and an ``auto`` key with one choice needs no probe: those take their first choice.
    The data of the first choices loads before anything is stored, so a bad file fails here and
    leaves no study behind. ``fits`` receives the probe's fits of its pick, where it ran here."""
    started = time.perf_counter()
    first = recipe.fixed(cfg)
    probed = [] if cfg.get("plan") else recipe.to_probe(cfg)
    frontend = frontend_of(cfg.model)  # text -> ids as the study's front end does it
    # The probe's n-gram choices are derived from the word encoding's streams
    data = PreparedData.load(first.data, first.seed, device, frontend.encode,
                             keep_streams="word_ngrams" in probed)  # fmt: skip
    frontend.check(cfg, data)  # before any study is stored: its bad settings leave none behind
    seconds = time.perf_counter() - started
    if not probed:
        return first, None, data, seconds
    prepared = {int(first.data.tokenizer.word_ngrams): data}
    stored = study.settle_recipe(
        cfg.search, lambda beat: recipe.probe(cfg, device, beat, prepared, fits)
    )  # fmt: skip
    where = f"study {cfg.search.study_name!r} of {storage.describe_storage(cfg.search)}"
    stored = recipe.check_stored(cfg, stored, where)  # read back from a storage: data, not code
    log.info(recipe.describe(stored))
    chosen = recipe.fixed(cfg, stored["choice"])
    data = prepared.get(int(chosen.data.tokenizer.word_ngrams))
    if data is None:  # the pick was read from the storage: its data is not loaded yet
        started = time.perf_counter()
        data = PreparedData.load(chosen.data, chosen.seed, device, frontend.encode,
                                 words=prepared.get(1))  # fmt: skip
        seconds += time.perf_counter() - started
    prepared.clear()  # the other choices' encodings go; the pick's streams are not needed more
    data.drop_streams()
    return chosen, stored, data, seconds


def open_study(cfg: DictConfig, data: PreparedData, space: SearchSpace, budget=None):
    """(the study, created or resumed, its trial target): the signature holds everything that
    makes trials comparable; a grid sampler caps the target at its number of points."""
    signature = study.signature(
        {
            "data": data.key,
            # as the study's name reads it: a word study made before kinds resumes
            "model": kind_setup(OmegaConf.to_container(cfg.model, resolve=True))[0],
            "train": OmegaConf.to_container(cfg.train, resolve=True),
            "space": OmegaConf.to_container(cfg.search.space, resolve=True),
            "objectives": list(cfg.search.objectives),
            "seed": cfg.seed,
        }
    )
    concurrent = processes_for(cfg.get("processes", "auto"), data.device) > 1  # trials side by side
    opened = study.open_study(cfg.search, cfg.seed, signature, space, budget, concurrent)
    n_trials = cfg.search.n_trials
    points = grid_size(cfg.search, space)
    if points is not None and points < n_trials:
        log.info("the grid has %d points: search.n_trials=%d capped to it", points, n_trials)
        n_trials = points
    log.info(resume_line(cfg.search.study_name, storage.describe_storage(cfg.search),
                         study.count_finished(opened), n_trials))  # fmt: skip
    return opened, n_trials


def resume_line(name: str, where: str, finished: int, n_trials: int) -> str:
    """What opening the study means for this run: a new study, a resumed one (what it keeps
    and what it trains), or one that already holds the asked trials (nothing to train)."""
    head = f"study {name!r} in {where}: {finished} finished trials, target {n_trials}"
    if finished == 0:
        return f"{head}: a new study"
    if finished >= n_trials:
        return (f"{head}: resumed; nothing to train (raise search.n_trials to add trials); the "
                "seed repeats, precisions and export that are missing are done, the rest kept")  # fmt: skip
    return (f"{head}: resumed; the {finished} finished trials are kept (not trained again), "
            f"{n_trials - finished} more to train")  # fmt: skip


def start_at_probe_points(the_study, cfg: DictConfig, picked: dict | None, data) -> None:
    """A fresh study's first trials: the configurations the recipe probe trained its pick at
    (``recipe.probe_points``: the middle and the top of the cutoff axis). A 12-trial search
    spreads its trials over the whole plane and may leave the top of the cutoff axis, where the
    most accurate trials live, with none; the probe has just shown what the pick reaches there.
    The sampler fills in any other axis of the space. A grid keeps its own points; a resumed
    study, or one another worker has started, has its trials. How the points reach the first
    trials without two workers taking one twice: ``sweep.search.study.start_at``."""
    if not (picked and picked.get("probes")) or cfg.search.sampler.get("name") == "grid":
        return
    points = recipe.probe_points(cfg, data)
    if study.start_at(the_study, points, enqueue=int(cfg.search.get("worker_index", 0)) == 0):
        log.info("first trials: the recipe probe's configurations %s",
                 ", ".join(f"embedding_dim={p['embedding_dim']} vocab_size={p['vocab_size']}"
                           for p in points))  # fmt: skip


def store_context(the_study, cfg: DictConfig, context: dict) -> None:
    """Everything the page shows besides the trials lives in the storage too, so
    ``python -m sweep.report`` can rebuild the reports from the storage alone (every worker
    stores it: ``set_shared_attr``)."""
    study.set_shared_attr(
        the_study, "report_context", mask_data({**context, "tolerance": cfg.report.tolerance})
    )


def record_ending(
    the_study,
    cfg: DictConfig,
    context: dict,
    n_trials: int,
    budget: TimeBudget,
    stop: Stopped | None,
) -> None:
    """Log and store (for the page) why the run ended short of ``n_trials``, if it did."""
    try:
        note = ending_note(the_study, n_trials, budget, stop)
        if note:
            log.warning("%s", note)
            context["ending"] = note
            store_context(the_study, cfg, context)
    except Exception as error:  # a storage gone with the stop: the reports still go
        log.warning("could not store why the run ended (%s)", error)


def ending_note(the_study, n_trials: int, budget: TimeBudget, stop: Stopped | None = None):
    """Why this run ended short of ``n_trials`` (a stop, the time budget), for the log and the
    page; None when it did not. The seconds are counted from ``budget.started``, the run's."""
    finished, ran = study.count_finished(the_study), time.time() - budget.started
    if stop is not None:
        return (
            f"{stop.reason.replace('stopped: ', 'Stopped by ', 1)} after {ran:.0f}s: "
            f"{finished} of {n_trials} trials finished; the trials it was training are failed "
            "with that reason. Run the same command again to resume."
        )
    if budget.ended() and finished < n_trials:
        return (
            f"The time budget (search.timeout_s={budget.timeout_s:g}) ended the run after "
            f"{ran:.0f}s: {finished} of {n_trials} trials finished."
        )
    return None


def page_context(cfg, data: PreparedData, space: SearchSpace, overrides, device) -> dict:
    """What the page shows besides the trials (stored with the study, secrets masked)."""
    shown_cfg = cfg.copy()
    if shown_cfg.search.storage:  # resolved: the page says where the study is
        shown_cfg.search.storage = str(shown_cfg.search.storage)
    return {
        "coverage_curve": frontend_of(cfg.model).coverage_curve(data),
        "study_name": cfg.search.study_name,
        "storage": storage.describe_storage(cfg.search),
        "overrides": [mask(o) for o in overrides],
        "space": space.keys(),
        "objectives": schema.Objectives.from_search(cfg.search).pairs(),
        "shipping": shipping_of(cfg.search),
        "config": mask(OmegaConf.to_yaml(shown_cfg)),
        "environment": environment(device),
        "data": mask_data(data.summary()),
    }


def shipping_of(search_cfg) -> dict[str, Any]:
    """The byte budget and precision the report picks each trial's shipped file by."""
    limit = search_cfg.get("max_model_bytes")
    return {
        "max_model_bytes": None if limit is None else parse_bytes(limit),
        "precision": search_cfg.get("precision", "best"),
    }


class Reports:
    """Rewrites trials.csv, pareto.csv and report.html from the storage: after a trial while
    rewriting has taken at most ``share`` of the wall time since the sweep's trials began
    (``report.time_share``), and at the end of the sweep (``write``)."""

    def __init__(
        self,
        the_study,
        out_dir: Path,
        tolerance: float,
        context: dict,
        timing,
        kept=None,
        share: float = 1.0,
        run_started: float | None = None,
    ):
        self.study, self.out_dir, self.tolerance = the_study, out_dir, tolerance
        self.context, self.timing, self.kept = context, timing, kept
        self.share, self.started = share, time.perf_counter()
        self.run_started = self.started if run_started is None else run_started
        self.objectives = schema.Objectives.of(context.get("objectives"))

    def after_trial(self) -> pd.DataFrame:
        """The trials with their ``pareto`` flags (for the progress line); the reports rewritten
        when within the share. Why a share: a page costs some 0.05 s to render (more with
        hundreds of trials), a sixth of a small trial on a CPU (TREC bag: 0.3 s) and more than
        a packed one on a GPU; such a sweep spent a fifth of its time rewriting its reports.
        The storage holds every trial at once either way (``python -m sweep.report`` rebuilds
        the reports from it); kept weights of dominated trials are dropped at the next write."""
        t0 = time.perf_counter()
        if self.timing.reports <= self.share * (t0 - self.started):  # what reports took so far
            return self.write()
        table = schema.complete(trials.trials_frame(self.study))
        table["pareto"] = report.on_front(table, self.objectives)
        self.timing.reports += time.perf_counter() - t0
        return table

    def write(self, timeline: bool = False) -> pd.DataFrame:
        """Write the reports; with ``timeline``, the page shows the run's time line (its last
        write: the phases' figures are whole only once they have ended)."""
        t0 = time.perf_counter()
        table = trials.trials_frame(self.study)
        if not table.empty:
            self.context["importance"] = trials.importances(self.study)
            # The time line up to this page: this run's, never stored (a study's workers each
            # have their own), so a page rebuilt from the storage has none.
            page_context = dict(self.context)
            if timeline:
                seconds = time.perf_counter() - self.run_started
                page_context["timeline"] = self.timing.timeline(seconds)
            table = report.write_reports(
                table, self.out_dir, tolerance=self.tolerance, context=page_context
            )
            if self.kept is not None:  # a dominated trial never returns to the front
                dominated = table[(table["state"] == "COMPLETE") & ~table["pareto"]]["trial"]
                trials_by_number = {t.number: t for t in self.study.get_trials(deepcopy=False)}
                self.kept.drop([trials_by_number[int(n)].params for n in dominated])
        self.timing.reports += time.perf_counter() - t0
        return table


class Progress:
    """One log line per finished trial: its figures, the best so far, the front, the ETA."""

    def __init__(self, n_trials: int, single: bool):
        self.n_trials, self.single = n_trials, single
        self.durations: list[float] = []
        self.last_end = time.perf_counter()

    def trial_done(self, trial: optuna.trial.FrozenTrial, finished: int, table) -> None:
        now, attrs = time.perf_counter(), trial.user_attrs
        answered = PROBE_FIT in attrs  # trained by the recipe probe: no time here, nor in the ETA
        if not answered:
            self.durations.append(now - self.last_end)
        self.last_end = now
        done = table[table["state"] == "COMPLETE"]
        best = done["val_accuracy"].max() if len(done) else float("nan")
        remaining = max(self.n_trials - finished, 0)
        mean = sum(self.durations) / len(self.durations) if self.durations else 0.0
        eta = timedelta(seconds=round(mean * remaining)) if self.durations else "unknown yet"
        # The Pareto front is what a multi-objective search builds; one objective has a best.
        front = "" if self.single else f", front {int(table['pareto'].sum())}"
        # A packed trial: its own training time (the pack's, up to its end); any other: its
        # own time from ask to tell. Not the moments since the last line: trials of a pack
        # often end together, and trials side by side overlap.
        packed = "pack" in attrs and "train_seconds" in attrs and "reused_from" not in attrs
        took = ("(the recipe probe's fit, not trained again)" if answered
                else f"in {attrs['train_seconds']:.1f}s (pack #{attrs['pack']})" if packed
                else f"in {trial.duration.total_seconds():.1f}s" if trial.duration
                else f"in {self.durations[-1]:.1f}s")  # fmt: skip
        log.info(
            "trial %d/%d (#%d) %s %s: embedding_dim=%s vocab_size=%s params=%s "
            "val_accuracy=%.2f | best %.2f%s | ETA %s",
            min(finished, self.n_trials), self.n_trials, trial.number, trial.state.name.lower(),
            took, trial.params.get("embedding_dim"),
            attrs.get("vocab_size", trial.params.get("vocab_size")),
            f"{attrs.get('params_total', 0):,}",
            attrs.get("val_accuracy", float("nan")), best, front, eta,
        )  # fmt: skip


def trials_side_by_side(cfg: DictConfig, trial: TrialRunner, fits: RecipeFits):
    """The trials' slots side by side (``processes``, CPU; the trial loop opens them where no
    pruner needs a trial's epochs and trials do not pack), or None: one at a time."""
    processes = processes_for(cfg.get("processes", "auto"), trial.data.device)
    if processes <= 1:
        return None
    return lambda: TrialsSideBySide(trial, fits, processes)


def repeat_front(the_study, cfg: DictConfig, trial: TrialRunner, budget=None) -> None:
    """Seed noise: retrain with ``report.repeats`` more seeds the front trials whose mean could
    change the recommendation (``deciding``); the reports show their mean and standard
    deviation. In rounds: once repeats have measured the noise and moved the means, the trials
    that could now change the recommendation (a new recommendation among them) are repeated
    too, ``report.top_k`` trials in all at most. None starts after ``budget``'s deadline."""
    repeats = int(cfg.report.get("repeats", 0))
    if repeats <= 0 or not the_study.get_trials(deepcopy=False):
        return
    if budget is not None and budget.ended():
        log.info("seed noise not measured: the time budget (search.timeout_s=%g) has ended (a "
                 "run of the same command with time left after the trials measures it)",
                 budget.timeout_s)  # fmt: skip
        return
    seeds = [cfg.seed + i for i in range(1, repeats + 1)]
    pack = pack_size(cfg.search, pack_key(cfg, device=trial.data.device) is not None)
    train_pack = trial.train_pack
    processes = processes_for(cfg.get("processes", "auto"), trial.data.device)
    if pack == 1 and processes > 1:  # the repeats side by side on the idle cores
        pack, train_pack = processes, train_side_by_side(trial, processes)
    tried: set[int] = set()
    while budget is None or not budget.ended():
        numbers = repeat_round(the_study, cfg, trial, seeds, tried)
        if not numbers:
            return
        tried.update(numbers)
        trials.repeat_trials(the_study, numbers, seeds, trial.train, cfg.search.stale_after_s,
                             pack=pack, train_pack=train_pack, budget=budget)  # fmt: skip


def repeat_round(the_study, cfg: DictConfig, trial: TrialRunner, seeds: list[int],
                 tried: set[int]) -> list[int]:  # fmt: skip
    """The trials the next round of seed repeats trains (logged): the deciding trials this run
    has not ``tried``, those with stored repeats (an earlier run's, finished here if it left
    them half done) and new ones while fewer than ``report.top_k`` trials have repeats."""
    objectives = schema.Objectives.from_search(cfg.search)
    table = annotated(the_study, cfg)
    decided = deciding(table, cfg, objectives, len(trial.data.labels["validation"]))
    by_seed = study.stored_repeats(the_study)
    stored = {n for n, seeds_stored in by_seed.items() if seeds_stored}
    fresh = [n for n in decided.chosen if n not in tried]
    room = max(int(cfg.report.top_k) - len(stored), 0)
    new = [n for n in fresh if n not in stored][:room]
    numbers = [n for n in fresh if n in stored or n in new]
    cut = decided.cut + [n for n in fresh if n not in numbers]
    if not numbers:
        return []
    todo = sum(seed not in by_seed.get(n, {}) for n in numbers for seed in seeds)
    total = len(numbers) * len(seeds)
    notes = f"; {total - todo} stored by an earlier run, kept" if todo < total else ""
    if decided.far and not tried:
        notes += f"; not {decided.far}: too far from the recommendation for seed noise to move it"
    if cut:
        notes += f"; not {cut}: past report.top_k={int(cfg.report.top_k)} trials with repeats"
    if tried:
        log.info("seed noise: with the noise measured and the means moved, %s could change the "
                 "recommendation too: %d fits more%s", numbers, todo, notes)  # fmt: skip
    else:
        which = "trials" if objectives.size else f"best trials by {objectives.quality}"
        log.info("seed noise: the %s %s with seeds %s: %d fits to train%s", which, numbers,
                 seeds, todo, notes)  # fmt: skip
    return numbers


def deciding(table, cfg: DictConfig, objectives, validation_docs: int) -> trials.Deciding:
    """``trials.deciding_trials`` with this study's tie margin and noise: the seed noise that
    earlier repeats measured, or else a first estimate (``trials.accuracy_noise``). Under a byte
    budget (``search.max_model_bytes``) the recommendation ranks by the shipped file's accuracy,
    measured after the repeats and never averaged over seeds: the ``report.top_k`` best front
    trials, as before the repeats could tell which decide."""
    top_k = int(cfg.report.top_k)
    if shipping_of(cfg.search)["max_model_bytes"] is not None:
        return trials.top_front(table, top_k, objectives)
    noise = report.seed_noise(table)
    if pd.isna(noise):  # nothing repeated yet
        best = table.loc[table["pareto"].astype(bool), "val_accuracy"].max()
        noise = 0.0 if pd.isna(best) else trials.accuracy_noise(float(best), validation_docs)
    tie_margin = report.margin(table, float(cfg.report.tolerance))
    return trials.deciding_trials(table, top_k, objectives, tie_margin, noise)


def annotated(the_study, cfg: DictConfig) -> pd.DataFrame:
    """The study's trials with the front and the shipped files, as the reports see them
    (annotated, not written)."""
    objectives = schema.Objectives.from_search(cfg.search)
    return report.annotate(trials.trials_frame(the_study), cfg.report.tolerance, objectives,
                           shipping_of(cfg.search))  # fmt: skip


def measure_precisions(the_study, cfg: DictConfig, trial: TrialRunner, kept=None) -> None:
    """``report.quantize=front``: each front trial not yet measured at fp16, int8 and int4 is,
    from its kept weights (or re-created: ``export.trained_model``); the figures are stored in the
    study, so reports rebuilt from the storage show them. (``all``: measured as each trained.)"""
    if cfg.report.get("quantize", "front") != "front":
        return
    table = annotated(the_study, cfg)
    if not len(table):
        return
    front = table[table["pareto"]]
    todo = front[front["val_accuracy_int8"].isna()]
    if len(front) > len(todo) and len(todo) == 0:
        log.info("precisions: the %d front trials were measured by an earlier run", len(front))
    trials_by_number = {t.number: t for t in the_study.get_trials(deepcopy=False)}
    for row in todo.to_dict("records"):
        number = int(row["trial"])
        params = dict(trials_by_number[number].params)
        setup = trial.setup(params)
        model = export.trained_model(trial, params, row, kept, setup).to(trial.data.device)
        trials.store_precisions(the_study, number, trial.precision_figures(setup, model))
    if len(todo):
        log.info("measured %d front trials at fp16, int8 and int4", len(todo))


def kept_states(cfg: DictConfig) -> export.KeptStates | None:
    """Where trained trials' best weights wait for export: beside the study storage."""
    nothing_kept = cfg.report.get("quantize", "front") == "none"  # front: measured from them
    if cfg.report.get("export", "recommended") == "none" and nothing_kept:
        return None
    folder = Path(cfg.search.storage_dir) / str(cfg.search.study_name) / "states"
    return export.KeptStates(folder, cfg.seed)


def export_models(the_study, cfg: DictConfig, trial: TrialRunner, table, out_dir: Path, kept=None):
    """``report.export``: the recommended trial's model in ``model/`` (``recommended``), every
    front trial's in ``models/trial-<n>/`` (``front``); nothing for ``none`` and for ``keep``
    (the workers of search.workers: they keep weights, their parent exports)."""
    which = cfg.report.get("export", "recommended")
    if which in ("none", "keep") or not len(table):
        return
    rows = table[table["recommended"] if which == "recommended" else table["pareto"]]
    trials_by_number = {t.number: t for t in the_study.get_trials(deepcopy=False)}
    for row in rows.to_dict("records"):
        number = int(row["trial"])
        folder = (
            out_dir / "model" if which == "recommended" else out_dir / "models" / f"trial-{number}"
        )
        export.export_trial(trial, dict(trials_by_number[number].params), row, folder, kept)
        log.info(
            "exported trial %d: %s (python -m sweep.predict --model %s)", number, folder, folder
        )


def plan(cfg: DictConfig, trial: TrialRunner, out_dir: Path) -> SweepResult:
    """``plan=true``: size, memory and budgets of a grid over every axis, with no training."""
    rows = []
    for params in trial.space.plan_points(cfg.plan_points):
        figures = {**params, **trial.describe(params, probe=False)}
        for limit_key in schema.PLAN_FLAGS:
            figures[limit_key] = False
        for limit_key, limit, figure in budgets(cfg.search):
            figures[f"over_{limit_key}"] = figures[figure] > limit
        rows.append(figures)
    columns = schema.with_axes(schema.names(plan=True), trial.space.names) + schema.PLAN_FLAGS
    table = pd.DataFrame(rows)[columns]
    write_atomic(Path(out_dir) / "plan.csv", table.to_csv(index=False))
    shown = [c for c in columns if c in schema.names(shown=True) or c not in schema.BY_NAME]
    log.info("plan (no training), %d points:\n%s", len(table), table[shown].to_string(index=False))
    log.info("plan: %s/plan.csv", out_dir)
    return SweepResult(Path(out_dir), table, None)


def thread_count(threads: int | None) -> int:
    """Torch CPU threads for this process: ``threads`` when set, else ``OMP_NUM_THREADS`` when
    the environment sets it, else every core given (``usable_cores``)."""
    if threads is not None:
        return int(threads)
    from_env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(from_env) if from_env.isdigit() and int(from_env) >= 1 else usable_cores()


def environment(device: torch.device) -> dict[str, str]:
    """Versions and device, shown in the report."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "hydra": hydra.__version__,
        "device": measure.device_name(device),
        "torch threads": str(torch.get_num_threads()),
    }
