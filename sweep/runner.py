"""The whole study: check the config, prepare the data once, run the trials, write the reports.

``run(cfg, out_dir)`` is what ``run_sweep.py`` calls and what tests call with a composed config.
Per trial it builds the cutoff view of the pre-encoded corpus (one vectorised op), instantiates
``cfg.model`` with the trial's sizes, trains it, measures it, and rewrites the reports.
"""

from __future__ import annotations

import json
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
import numpy as np
import optuna
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from sweep import measure, report, search, storage, trials, vocab
from sweep.config import check_config
from sweep.corpus import SPLITS, load_corpus
from sweep.frontend import use_sparse
from sweep.secrets import mask
from sweep.train import SplitTensors, fit

log = logging.getLogger(__name__)


# model.* keys that are not constructor arguments: the study-name label, and the hash buckets,
# which act on the data view (sweep.vocab.cut) and only enlarge num_embeddings.
NOT_MODEL_ARGS = ("name", "hash_buckets")


def trial_sizes(params: dict[str, Any], model_cfg: DictConfig, full_vocab: int) -> dict[str, int]:
    """The trial's cutoff K (clamped to the train vocabulary), hash buckets B, num_embeddings."""
    vocab_size = min(int(params["vocab_size"]), full_vocab)
    hash_buckets = int(model_cfg.get("hash_buckets") or 0)
    if hash_buckets < 0:
        raise ValueError(f"model.hash_buckets={hash_buckets} must be >= 0")
    return {
        "vocab_size": vocab_size,
        "hash_buckets": hash_buckets,
        "num_embeddings": vocab_size + len(vocab.SPECIALS) + hash_buckets,
        "embedding_dim": int(params["embedding_dim"]),
    }


@dataclass
class SweepResult:
    """Where the reports are and what the study recommends (None before any complete trial)."""

    out_dir: Path
    table: pd.DataFrame
    recommended: dict[str, Any] | None


def write_timing(timing: dict[str, float], total: float, out_dir: Path) -> None:
    """Log where the wall time went and write it to ``timing.json`` (the speed benchmark's
    source): training (model init and fit, evaluation included) against everything else."""
    training = timing["training"] + timing["model"]
    other = total - training - timing["data"] - timing["cutoff"] - timing["reports"]
    figures = {
        "total_s": total,
        "trials": timing["trials"],
        "training_s": training,
        "data_s": timing["data"],
        "cutoff_s": timing["cutoff"],
        "reports_s": timing["reports"],
        "search_and_storage_s": other,
        "outside_training_pct": 100.0 * (total - training) / max(total, 1e-9),
    }
    log.info(
        "time: %.1fs in all; training %.1fs (%d fits), data %.1fs, cutoff views %.2fs, "
        "reports %.1fs, search and storage %.1fs: %.1f%% outside training",
        total,
        training,
        timing["trials"],
        timing["data"],
        timing["cutoff"],
        timing["reports"],
        other,
        figures["outside_training_pct"],
    )
    report.write_atomic(out_dir / "timing.json", json.dumps(figures, indent=1))


def build_model(model_cfg: DictConfig, num_embeddings: int, embedding_dim: int, num_classes: int):
    """Instantiate ``cfg.model`` with the sizes known only at run time."""
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    for key in NOT_MODEL_ARGS:  # labels and data-view settings, not constructor arguments
        kwargs.pop(key, None)
    kwargs.update(
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        num_classes=num_classes,
        sparse=use_sparse(kwargs.get("sparse", "auto"), num_embeddings),
    )
    return hydra.utils.instantiate(kwargs)


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def model_option(name: str) -> DictConfig:
    """The ``model=<name>`` config group option as composed (front-end defaults merged in)."""
    path = CONFIGS / "model" / f"{name}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
        raise ValueError(f"search.space: model {name!r} is not an option of model/ ({options})")
    option = OmegaConf.load(path)
    option.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.load(CONFIGS / "model" / "common" / "frontend.yaml"), option)


def with_params(cfg: DictConfig, params: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with the trial's extra search keys (``search.space.X.key``) set.

    ``key: model`` searches the model itself: its value names a ``model=`` option, whose
    defaults replace ``cfg.model`` for the trial.
    """
    trial_cfg = cfg.copy()
    for name, spec in cfg.search.space.items():
        if name in search.MAIN_AXES or name not in params:
            continue
        if spec.key == "model":
            trial_cfg.model = model_option(params[name])
        else:
            OmegaConf.update(trial_cfg, spec.key, params[name], merge=False)
    return trial_cfg


def cores_given() -> int:
    """CPU cores this process may run on (its affinity: taskset, cgroup cpusets), not the host's."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def thread_count(threads: int | None) -> int:
    """Torch CPU threads for this process: ``threads`` when set, else ``OMP_NUM_THREADS`` when
    the environment sets it, else every core given (``cores_given``)."""
    if threads is not None:
        return int(threads)
    from_env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(from_env) if from_env.isdigit() and int(from_env) >= 1 else cores_given()


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


def clamp_vocab_space(space: DictConfig, full_vocab_size: int) -> None:
    """Log where the vocab_size range goes past the train vocabulary (suggest clamps it)."""
    spec = space.vocab_size
    if spec.high is not None and spec.high > full_vocab_size:
        log.warning(
            "search.space.vocab_size.high=%d is above the %d words of the train split; "
            "clamped to %d",
            spec.high,
            full_vocab_size,
            full_vocab_size,
        )
    if spec.low > full_vocab_size:
        log.warning(
            "search.space.vocab_size.low=%d is above the train vocabulary (%d); every trial "
            "keeps the full vocabulary",
            spec.low,
            full_vocab_size,
        )


PLAN_COLUMNS = [
    "embedding_dim", "vocab_size", "num_embeddings", "params_total", "params_embedding",
    "embedding_share", "model_mb", "embedding_mb_fp32", "embedding_mb_fp16", "embedding_mb_int8",
    "rest_mb_fp32", "rest_mb_fp16", "rest_mb_int8", "est_peak_mb", "est_embedding_mb",
    "train_coverage", "val_oov_rate", "over_max_params", "over_max_memory_mb",
]  # fmt: skip


def plan_points(spec, count: int, full_vocab_size: int | None = None) -> list[int]:
    """``count`` values spanning a search axis, both ends included (log-spaced when ``log``)."""
    high = spec.high
    if full_vocab_size is not None:
        high = full_vocab_size if high is None else min(high, full_vocab_size)
    low = min(spec.low, high)
    spread = np.geomspace if spec.get("log") else np.linspace
    return sorted({int(round(v)) for v in spread(low, high, max(count, 2))})


def plan(cfg: DictConfig, describe, full_vocab: int, out_dir: Path) -> SweepResult:
    """``plan=true``: size, memory and budget of a grid over the space, with no training."""
    space = cfg.search.space
    rows = []
    for embedding_dim in plan_points(space.embedding_dim, cfg.plan_points):
        for vocab_size in plan_points(space.vocab_size, cfg.plan_points, full_vocab):
            figures = describe({"embedding_dim": embedding_dim, "vocab_size": vocab_size})
            max_params, max_memory = cfg.search.get("max_params"), cfg.search.get("max_memory_mb")
            figures.update(
                embedding_dim=embedding_dim,
                over_max_params=max_params is not None and figures["params_total"] > max_params,
                over_max_memory_mb=max_memory is not None and figures["est_peak_mb"] > max_memory,
            )
            rows.append(figures)
    table = pd.DataFrame(rows)[PLAN_COLUMNS]
    report.write_atomic(Path(out_dir) / "plan.csv", table.to_csv(index=False))
    shown = table[["embedding_dim", "vocab_size", "params_total", "model_mb", "est_peak_mb",
                   "over_max_params", "over_max_memory_mb"]]  # fmt: skip
    log.info("plan (no training), %d points:\n%s", len(table), shown.to_string(index=False))
    log.info("plan: %s/plan.csv", out_dir)
    return SweepResult(Path(out_dir), table, None)


def run(cfg: DictConfig, out_dir: Path, overrides: Sequence[str] = ()) -> SweepResult:
    """Run (or resume) the study described by ``cfg``; reports go to ``out_dir``."""
    check_config(cfg)
    device = measure.resolve_device(cfg.device)
    torch.set_num_threads(thread_count(cfg.get("threads")))
    out_dir = Path(out_dir)
    started = time.perf_counter()

    corpus = load_corpus(cfg.data, cfg.seed)
    encoded, data_key = vocab.load_or_build(corpus, cfg.data)
    data_stats = corpus.stats
    del corpus  # the raw texts are encoded now; a large corpus need not stay in memory
    full_vocab = encoded.full_vocab_size
    clamp_vocab_space(cfg.search.space, full_vocab)
    num_classes = encoded.num_classes
    # The corpus goes to the device once; each trial only makes its cutoff view of it.
    ids = {s: encoded.ids[s].to(device) for s in SPLITS}
    labels = {s: encoded.labels[s].to(device) for s in SPLITS}
    data_bytes = sum(t.numel() * t.element_size() for t in ids.values())
    val_histogram = vocab.id_histogram(encoded.ids["validation"], len(encoded.words))
    # Where the sweep's wall time goes (logged and written to timing.json at the end).
    timing = {"data": time.perf_counter() - started, "cutoff": 0.0, "model": 0.0}
    timing.update(training=0.0, reports=0.0, trials=0)

    def describe(params: dict[str, Any]) -> dict[str, Any]:
        """Figures known before training: sizes, parameter counts, coverage, estimates."""
        trial_cfg = with_params(cfg, params)
        sizes = trial_sizes(params, trial_cfg.model, full_vocab)
        vocab_size, embedding_dim = sizes["vocab_size"], sizes["embedding_dim"]
        with torch.device("meta"):  # counts parameters without allocating them
            meta_model = build_model(
                trial_cfg.model, sizes["num_embeddings"], embedding_dim, num_classes
            )
        counts = meta_model.num_params()
        return {
            "vocab_size": vocab_size,
            "num_embeddings": sizes["num_embeddings"],
            "hash_buckets": sizes["hash_buckets"],
            "min_freq": vocab.min_frequency(encoded.train_counts, vocab_size),
            "train_coverage": vocab.coverage(encoded.train_counts, vocab_size),
            "val_oov_rate": vocab.oov_rate(val_histogram, vocab_size),
            "params_total": counts["total"],
            "params_embedding": counts["embedding"],
            "embedding_share": counts["embedding"] / counts["total"],
            **measure.size_columns(counts["total"], counts["embedding"]),
            **measure.estimate_peak_mb(
                meta_model,
                params_total=counts["total"],
                params_embedding=counts["embedding"],
                embedding_dim=embedding_dim,
                sparse=use_sparse(trial_cfg.model.get("sparse", "auto"), sizes["num_embeddings"]),
                batch_size=trial_cfg.train.batch_size,
                eval_batch_size=trial_cfg.train.eval_batch_size,
                max_length=ids["train"].shape[1],
                data_bytes=2 * data_bytes,  # the corpus plus this trial's cutoff view
            ),
            "device": measure.device_name(device),
            "seed": cfg.seed,
            "model": trial_cfg.model.name,
        }

    if cfg.get("plan"):
        return plan(cfg, describe, full_vocab, out_dir)

    study_signature = search.signature(
        {
            "data": data_key,
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "train": OmegaConf.to_container(cfg.train, resolve=True),
            "space": OmegaConf.to_container(cfg.search.space, resolve=True),
            "objectives": list(cfg.search.objectives),
            "seed": cfg.seed,
        }
    )
    study = search.open_study(cfg.search, cfg.seed, study_signature, full_vocab)
    storage_text = storage.describe_storage(cfg.search)
    n_trials = cfg.search.n_trials
    grid_size = search.grid_size(cfg.search, full_vocab)
    if grid_size is not None and grid_size < n_trials:
        log.info("the grid has %d points: search.n_trials=%d capped to it", grid_size, n_trials)
        n_trials = grid_size
    log.info(
        "study %r in %s: %d finished trials, target %d",
        cfg.search.study_name,
        storage_text,
        trials.count_finished(study),
        n_trials,
    )

    shown_cfg = cfg.copy()
    if shown_cfg.search.storage:
        shown_cfg.search.storage = mask(str(shown_cfg.search.storage))
    coverage_ks = sorted({int(k) for k in np.geomspace(1, full_vocab, 40)})
    context = {
        "coverage_curve": {
            "vocab_size": coverage_ks,
            "train_coverage": [vocab.coverage(encoded.train_counts, k) for k in coverage_ks],
            "val_oov_rate": [vocab.oov_rate(val_histogram, k) for k in coverage_ks],
        },
        "study_name": cfg.search.study_name,
        "storage": storage_text,
        "overrides": [mask(o) for o in overrides],
        "space": {name: spec.get("key", name) for name, spec in cfg.search.space.items()},
        "config": OmegaConf.to_yaml(shown_cfg),
        "environment": environment(device),
        "data": {
            **data_stats,
            "vocabulary": full_vocab,
            "train_tokens": int(encoded.train_counts.sum()),
        },
    }

    # Everything the page shows besides the trials lives in the storage too, so
    # ``python -m sweep.report`` can rebuild the reports from the storage alone.
    study.set_user_attr("report_context", {**context, "tolerance": cfg.report.tolerance})

    def evaluate(params: dict[str, Any], on_epoch, seed: int | None = None) -> dict[str, Any]:
        """Train one configuration (with ``seed``, default ``cfg.seed``); return its figures."""
        seed = cfg.seed if seed is None else seed
        trial_cfg = with_params(cfg, params)
        sizes = trial_sizes(params, trial_cfg.model, full_vocab)
        train_cfg = trial_cfg.train
        with measure.gpu_peak(device) as peak:
            t0 = time.perf_counter()
            views = {
                s: SplitTensors(
                    vocab.cut(ids[s], sizes["vocab_size"], sizes["hash_buckets"]),
                    labels[s],
                    encoded.lengths[s],
                )
                for s in SPLITS
            }
            cutoff_seconds = time.perf_counter() - t0
            torch.manual_seed(seed)  # every trial starts from the same random stream
            model = build_model(
                trial_cfg.model, sizes["num_embeddings"], sizes["embedding_dim"], num_classes
            ).to(device)
            timing["model"] += time.perf_counter() - t0 - cutoff_seconds
            timing["cutoff"] += cutoff_seconds
            t0 = time.perf_counter()
            try:
                result = fit(
                    model,
                    views["train"],
                    views["validation"],
                    views["test"],
                    epochs=train_cfg.epochs,
                    batch_size=train_cfg.batch_size,
                    lr=train_cfg.lr,
                    patience=train_cfg.patience,
                    seed=seed,
                    eval_batch_size=train_cfg.eval_batch_size,
                    bucket=train_cfg.bucket,
                    on_epoch=on_epoch,
                )
            finally:
                del model, views
                measure.release(device)  # also after a failure: the next trial starts clean
                timing["training"] += time.perf_counter() - t0
                timing["trials"] += 1
        return {
            "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy,
            "val_loss": result.val_loss,
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds,
            "cutoff_seconds": cutoff_seconds,
            "tokens_per_second": result.train_tokens / max(result.step_seconds, 1e-9),
            "examples_per_second": result.train_examples / max(result.step_seconds, 1e-9),
            "eval_tokens_per_second": result.eval_tokens / max(result.eval_seconds, 1e-9),
            "eval_examples_per_second": result.eval_examples / max(result.eval_seconds, 1e-9),
            "gpu_peak_mb": peak["allocated_mb"],
            "gpu_reserved_mb": peak["reserved_mb"],
            "val_history": result.history,
        }

    durations: list[float] = []
    last_end = [time.perf_counter()]

    def write() -> pd.DataFrame:
        t0 = time.perf_counter()
        table = trials.trials_frame(study)
        if not table.empty:
            context["importance"] = trials.importances(study)
            table = report.write_reports(
                table, out_dir, tolerance=cfg.report.tolerance, context=context
            )
        timing["reports"] += time.perf_counter() - t0
        return table

    def after_trial(trial: optuna.trial.FrozenTrial, finished: int) -> None:
        now = time.perf_counter()
        durations.append(now - last_end[0])
        last_end[0] = now
        table = write()
        done = table[table["state"] == "COMPLETE"]
        best = done["val_accuracy"].max() if len(done) else float("nan")
        remaining = max(n_trials - finished, 0)
        eta = timedelta(seconds=round(sum(durations) / len(durations) * remaining))
        acc = trial.user_attrs.get("val_accuracy", float("nan"))
        # The Pareto front is what a multi-objective search builds; one objective has a best.
        front = "" if single else f", front {int(table['pareto'].sum())}"
        log.info(
            "trial %d/%d (#%d) %s in %.1fs: embedding_dim=%s vocab_size=%s params=%s "
            "val_accuracy=%.2f | best %.2f%s | ETA %s",
            min(finished, n_trials),
            n_trials,
            trial.number,
            trial.state.name.lower(),
            durations[-1],
            trial.params.get("embedding_dim"),
            trial.user_attrs.get("vocab_size", trial.params.get("vocab_size")),
            f"{trial.user_attrs.get('params_total', 0):,}",
            acc,
            best,
            front,
            eta,
        )

    single = len(cfg.search.objectives) == 1
    log.info("prepared data in %.1fs; running trials", time.perf_counter() - started)
    try:
        trials.run_trials(
            study,
            cfg.search,
            n_trials=n_trials,
            full_vocab_size=full_vocab,
            describe=describe,
            evaluate=evaluate,
            after_trial=after_trial,
        )
        repeats = int(cfg.report.get("repeats", 0))
        # The front as the last trial's reports saw it (annotated, not written again).
        table = report.annotate(trials.trials_frame(study), cfg.report.tolerance)
        if repeats > 0 and len(table):
            # Seed noise: retrain the best front trials with more seeds; reports show mean +- std.
            numbers = trials.front_trials(table, int(cfg.report.top_k))
            seeds = [cfg.seed + i for i in range(1, repeats + 1)]
            log.info(
                "seed noise: retraining %s %s with seeds %s (%d fits)",
                "the most accurate trials of each size" if single else "the front trials",
                numbers,
                seeds,
                len(numbers) * len(seeds),
            )
            trials.repeat_trials(study, numbers, seeds, evaluate, cfg.search.stale_after_s)
    finally:
        table = write()  # also on an interrupt or a failed sweep: the reports cover the storage
        write_timing(timing, time.perf_counter() - started, out_dir)
    rec = table[table["recommended"]] if len(table) else table
    recommended = rec.iloc[0].to_dict() if len(rec) else None
    return SweepResult(out_dir, table, recommended)
