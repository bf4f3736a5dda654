"""One trial: sampled values -> the trial's config and sizes -> figures before and after training.

``TrialRunner.describe(params)`` gives the columns known before training (sizes, parameter counts,
coverage, the memory estimate; ``known="sizes"`` in ``sweep.schema``): plan mode and the budgets
use them, and they are stored even when the trial then fails. ``TrialRunner.train(params)`` makes
the cutoff view of the prepared data, builds the model, fits it and returns the measured columns
(``known="trained"``). It needs no study: tests and benchmarks build one from a config and a
``PreparedData``, and the trial loop (``sweep.search.loop``) calls it per Optuna trial.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from sweep import measure, schema
from sweep.common.atomic import write_atomic
from sweep.data import vocab
from sweep.data.corpus import SPLITS
from sweep.data.prepared import PreparedData
from sweep.models import packing
from sweep.models.embedding import use_sparse
from sweep.models.fit import EarlyStopping, evaluate, fit
from sweep.models.kinds import build_model
from sweep.models.optim import Optimizers
from sweep.search.settings import pack_padding
from sweep.search.space import SearchSpace
from sweep.ship import quantize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sizes:
    """A trial's table: cutoff K (clamped to the vocabulary), hash buckets B, rows, width."""

    vocab_size: int
    hash_buckets: int
    num_embeddings: int  # K + 2 specials + B
    embedding_dim: int

    @classmethod
    def of(cls, params: dict[str, Any], model_cfg: DictConfig, full_vocab: int) -> Sizes:
        vocab_size = min(int(params["vocab_size"]), full_vocab)
        hash_buckets = int(model_cfg.get("hash_buckets") or 0)
        if hash_buckets < 0:
            raise ValueError(f"model.hash_buckets={hash_buckets} must be >= 0")
        rows = vocab_size + len(vocab.SPECIALS) + hash_buckets
        return cls(vocab_size, hash_buckets, rows, int(params["embedding_dim"]))


@dataclass
class Timing:
    """Where a sweep's wall time goes, summed over its trials (written to ``timing.json``)."""

    data: float = 0.0
    cutoff: float = 0.0
    model: float = 0.0
    training: float = 0.0
    reports: float = 0.0
    trials: int = 0

    def write(self, total: float, out_dir: Path) -> None:
        """Log the split and write ``timing.json`` (the speed benchmark's source): training
        (model init and fit, evaluation included) against everything else."""
        training = self.training + self.model
        other = total - training - self.data - self.cutoff - self.reports
        figures = {
            "total_s": total,
            "trials": self.trials,
            "training_s": training,
            "data_s": self.data,
            "cutoff_s": self.cutoff,
            "reports_s": self.reports,
            "search_and_storage_s": other,
            "outside_training_pct": 100.0 * (total - training) / max(total, 1e-9),
        }
        log.info(
            "time: %.1fs in all; training %.1fs (%d fits), data %.1fs, cutoff views %.2fs, "
            "reports %.1fs, search and storage %.1fs: %.1f%% outside training",
            total, training, self.trials, self.data, self.cutoff, self.reports, other,
            figures["outside_training_pct"],
        )  # fmt: skip
        write_atomic(Path(out_dir) / "timing.json", json.dumps(figures, indent=1))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def memory_need(figures: dict[str, Any]) -> float:
    """What ``search.max_memory_mb`` and the out-of-memory rule compare (MiB): the trial's own
    peak (the probe where it ran, else the estimate) plus the process baseline (estimated)."""
    probe = float(figures.get("probe_peak_mb", math.nan))
    own = figures["est_peak_mb"] if math.isnan(probe) else probe  # inf: it did not fit
    return float(own) + float(figures["est_baseline_mb"])


class TrialRunner:
    """Turns a trial's sampled values into its figures, for one config and one prepared data."""

    def __init__(self, cfg: DictConfig, data: PreparedData, space: SearchSpace | None = None):
        self.cfg = cfg
        self.data = data
        self.space = space or SearchSpace(cfg.search.space, data.full_vocab)
        self.timing = Timing()
        # The device's memory counters (None on a CPU; tests set a fake) and the baseline the
        # trials run on, which warm_up makes the same for the first trial as for the others.
        self.memory = measure.memory_reader(data.device)
        self.baseline = measure.baseline_bytes(data.device, data.device_bytes)
        self.capability = (
            torch.cuda.get_device_capability(data.device) if data.device.type == "cuda" else None
        )
        measure.warm_up(data.device)
        # Called with (params, seed, model) after each successful training, the model holding
        # its best epoch's weights (the runner keeps them for export: sweep.ship.export.KeptStates).
        self.on_trained: Callable[[dict[str, Any], int, torch.nn.Module], None] | None = None

    def setup(self, params: dict[str, Any]) -> tuple[DictConfig, Sizes]:
        """The trial's config (extra axes set) and its table's sizes."""
        trial_cfg = self.space.trial_config(self.cfg, params)
        return trial_cfg, Sizes.of(params, trial_cfg.model, self.data.full_vocab)

    def describe(self, params: dict[str, Any], probe: bool = True) -> dict[str, Any]:
        """The columns known before training (``known="sizes"``); ``probe``: measure the step
        on the device where it has memory counters (not in plan mode)."""
        trial_cfg, sizes = self.setup(params)
        with torch.device("meta"):  # counts parameters without allocating them
            meta_model = build_model(trial_cfg.model, sizes.num_embeddings, sizes.embedding_dim,
                                     self.data.num_classes)  # fmt: skip
        counts = meta_model.num_params()
        train_cfg = trial_cfg.train
        record = {
            "embedding_dim": sizes.embedding_dim,
            "vocab_size": sizes.vocab_size,
            "num_embeddings": sizes.num_embeddings,
            "hash_buckets": sizes.hash_buckets,
            **self.data.cutoff_figures(sizes.vocab_size),
            "params_total": counts["total"],
            "params_embedding": counts["embedding"],
            "embedding_share": counts["embedding"] / counts["total"],
            **measure.size_columns(counts["total"], counts["embedding"]),
            **self.file_bytes(meta_model, sizes),
            **measure.estimate_peak_mb(
                meta_model,
                params_total=counts["total"],
                params_embedding=counts["embedding"],
                embedding_dim=sizes.embedding_dim,
                sparse=use_sparse(trial_cfg.model.get("sparse", "auto"), sizes.num_embeddings),
                batch_size=train_cfg.batch_size,
                eval_batch_size=train_cfg.eval_batch_size,
                max_length=self.data.max_length,
                data_bytes=self.data.device_bytes,  # this trial's cutoff view
                capability=self.capability,
            ),
            "est_baseline_mb": sum(self.baseline.values()) / measure.MB,
            "device": measure.device_name(self.data.device),
            "seed": self.cfg.seed,
            "model": trial_cfg.model.name,
        }
        if probe:
            record["probe_peak_mb"] = self.probe((trial_cfg, sizes))
        record["memory_mb"] = memory_need(record)
        schema.check_record(record, "sizes")
        return record

    def probe(self, setup) -> float:
        """Where the device has memory counters (CUDA; tests give a fake): the trial's own peak,
        measured on one step as the trial will run it, on its worst batch: its cutoff views,
        the model, one forward, backward and optimizer step on the ``batch_size`` longest
        training documents, the best-state copy, one evaluation batch of the longest validation
        documents. MiB above the baseline; NaN without counters (a CPU, plan mode); infinite
        when the step ran out of memory (the trial is then skipped, untrained)."""
        if self.memory is None:
            return math.nan
        try:
            return self._probe(setup)
        except (torch.OutOfMemoryError, MemoryError):  # the trial would not fit: say so
            measure.release(self.data.device)
            return math.inf

    def _probe(self, setup) -> float:
        trial_cfg, sizes = setup
        train_cfg, device = trial_cfg.train, self.data.device
        with measure.gpu_peak(device, self.memory) as peak:
            views, model, _ = self._build(trial_cfg, sizes, self.cfg.seed)  # as the trial will
            optimizers = Optimizers(model, train_cfg.lr)
            train = views["train"]
            idx = torch.argsort(train.lengths, descending=True)[: train_cfg.batch_size]
            width = max(int(train.lengths[idx].max()), 1)
            idx = idx.to(device)
            logits = model.train()(train.ids[idx, :width])
            torch.nn.functional.cross_entropy(logits, train.labels[idx]).backward()
            optimizers.step()
            best = copy.deepcopy(model.state_dict())
            val = views["validation"]
            idx = torch.argsort(val.lengths, descending=True)[: train_cfg.eval_batch_size]
            width = max(int(val.lengths[idx].max()), 1)
            with torch.no_grad():
                model.eval()(val.ids[idx.to(device), :width])
            del views, model, optimizers, train, val, logits, best
        measure.release(device)
        return peak["peak_mb"]

    def file_bytes(self, model: torch.nn.Module, sizes: Sizes) -> dict[str, int]:
        """``file_bytes_<precision>``: the exported weights and vocabulary files, exactly."""
        words = self.data.vocab_file_bytes(sizes.vocab_size, sizes.hash_buckets)
        return {
            schema.file_bytes_column(p): quantize.file_bytes(model, p) + words
            for p in schema.PRECISIONS
        }

    @property
    def quantize_each(self) -> bool:
        """Measure every trial at every precision as it trains (``report.quantize=all``, or a
        byte budget: the recommendation then needs each trial's accuracy where it fits)."""
        return (
            self.cfg.report.get("quantize", "front") == "all"
            or self.cfg.search.get("max_model_bytes") is not None
        )

    def eval_views(self, sizes: Sizes) -> dict[str, Any]:
        """The trial's cutoff views of the splits it is measured on: {"val": ..., "test": ...}."""
        return {
            column: self.data.view(split, sizes.vocab_size, sizes.hash_buckets)
            for split, column in (("validation", "val"), ("test", "test"))
        }

    def precision_figures(self, setup, model: torch.nn.Module) -> dict[str, float]:
        """Validation and test accuracy of ``model`` (trained, on the device) stored at each
        lower precision (``sweep.ship.quantize``): ``val_accuracy_int8`` and so on."""
        trial_cfg, sizes = setup
        views = self.eval_views(sizes)
        figures = {}
        for precision in schema.PRECISIONS[1:]:
            stored = quantize.at_precision(model, precision)
            for split, view in views.items():
                accuracy, _ = evaluate(stored, view, trial_cfg.train.eval_batch_size)
                figures[schema.accuracy_column(split, precision)] = accuracy
        return figures

    def _trained(self, params, setup, seed: int, model: torch.nn.Module) -> dict[str, float]:
        """What follows a finished training (``model`` holds its best epoch's weights), alone or
        packed: its accuracy at each lower precision (``precision_figures``; only the study's
        seed ships, so only it is measured) and ``on_trained``. Returns those figures."""
        precisions = {}
        if self.quantize_each and seed == self.cfg.seed:
            precisions = self.precision_figures(setup, model)
        if self.on_trained is not None:
            self.on_trained(params, seed, model)
        return precisions

    def train(
        self,
        params: dict[str, Any],
        on_epoch: Callable[[int, float], None] | None = None,
        seed: int | None = None,
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    ) -> dict[str, Any]:
        """Train the configuration once (with ``seed``, default ``cfg.seed``); the measured
        columns (``known="trained"``) and ``val_history``. ``on_epoch(epoch, val_accuracy)`` may
        raise to stop the trial (pruning). ``wrap_model`` sees the model before it trains and
        may return a replacement (the benchmarks: ``torch.compile``, a per-epoch test curve)."""
        seed = self.cfg.seed if seed is None else seed
        trial_cfg, sizes = self.setup(params)
        train_cfg = trial_cfg.train
        device = self.data.device
        with measure.gpu_peak(device, self.memory) as peak:
            views, model, cutoff_seconds = self._build(trial_cfg, sizes, seed, wrap_model)
            t0 = time.perf_counter()
            try:
                result = fit(
                    model, views["train"], views["validation"], views["test"],
                    epochs=train_cfg.epochs, batch_size=train_cfg.batch_size, lr=train_cfg.lr,
                    patience=train_cfg.patience, seed=seed,
                    eval_batch_size=train_cfg.eval_batch_size, bucket=train_cfg.bucket,
                    on_epoch=on_epoch,
                )  # fmt: skip
                # fit left the best epoch's weights in model
                precisions = self._trained(params, (trial_cfg, sizes), seed, model)
            finally:
                del model, views
                measure.release(device)  # also after a failure: the next trial starts clean
                self.timing.training += time.perf_counter() - t0
                self.timing.trials += 1
        return {**self._record(result, cutoff_seconds, peak), **precisions}

    def _build(self, trial_cfg, sizes: Sizes, seed: int, wrap_model=None):
        """(cutoff views, model on the device, seconds the views took): the model initialised
        from ``seed`` as every lone run of the trial is."""
        t0 = time.perf_counter()
        views = {s: self.data.view(s, sizes.vocab_size, sizes.hash_buckets) for s in SPLITS}
        cutoff_seconds = time.perf_counter() - t0
        torch.manual_seed(seed)  # every trial starts from the same random stream
        model = build_model(trial_cfg.model, sizes.num_embeddings, sizes.embedding_dim,
                            self.data.num_classes).to(self.data.device)  # fmt: skip
        if wrap_model is not None:
            model = wrap_model(model)
        self.timing.cutoff += cutoff_seconds
        self.timing.model += time.perf_counter() - t0 - cutoff_seconds
        return views, model, cutoff_seconds

    @staticmethod
    def _record(result, cutoff_seconds: float, peak: dict) -> dict[str, Any]:
        record = {**result.figures(), "cutoff_seconds": cutoff_seconds,
                  "gpu_peak_mb": peak["peak_mb"], "gpu_baseline_mb": peak["baseline_mb"],
                  "gpu_reserved_mb": peak["reserved_mb"]}  # fmt: skip
        schema.check_record(record, "trained")
        return record

    def train_pack(
        self,
        params_list: list[dict[str, Any]],
        on_epochs: list[Callable[[int, float], None] | None],
        labels: list[int],
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        seed: int | None = None,
        on_result: Callable[[int, dict[str, Any] | BaseException], None] | None = None,
    ) -> list[dict[str, Any] | BaseException]:
        """Train several configurations; those that may share a pack (``packing.pack_key``)
        train together, the others alone. One result per configuration, in order: its measured
        columns (with ``pack``, the smallest of its pack's ``labels``), or the exception that
        ended it; each also goes to ``on_result(index, result)`` as soon as it is known (a
        trial that stops early in a pack is recorded while the others train on). ``wrap_model``
        and ``seed`` (default ``cfg.seed``; seed repeats) as in ``train``, applied to each
        trial's own model."""
        seed = self.cfg.seed if seed is None else seed
        setups = [self.setup(params) for params in params_list]
        results: dict[int, dict[str, Any] | BaseException] = {}
        stopped: list[BaseException] = []  # what on_result raised: it ends the round

        def deliver(i: int, result: dict[str, Any] | BaseException) -> None:
            results[i] = result
            if on_result is not None:
                try:
                    on_result(i, result)
                except BaseException as error:
                    stopped.append(error)
                    raise

        def alone(i: int) -> None:
            try:
                result = self.train(params_list[i], on_epochs[i], seed, wrap_model)
            except Exception as error:  # this trial's failure, recorded by the loop
                result = error
            deliver(i, result)

        for members in self.packs(setups):
            if len(members) == 1:
                alone(members[0])
                continue
            label = {"pack": min(labels[i] for i in members)}

            def settle(j: int, result, members=members, label=label) -> None:
                deliver(members[j], {**result, **label} if isinstance(result, dict) else result)

            try:
                self._train_packed([params_list[i] for i in members],
                                   [setups[i] for i in members],
                                   [on_epochs[i] for i in members], wrap_model, seed, settle)  # fmt: skip
            except Exception as error:
                if stopped:
                    raise
                # The pack failed as a whole (out of memory: a pack needs more than its trials
                # alone; anything its shared step raised): its unsettled trials train alone.
                log.warning("a pack of trials %s failed (%s: %s); they train alone",
                            [labels[i] for i in members], type(error).__name__, error)  # fmt: skip
                for i in (i for i in members if i not in results):
                    alone(i)
        return [results[i] for i in range(len(params_list))]

    def packs(self, setups: list[tuple[DictConfig, Sizes]]) -> list[list[int]]:
        """The configurations (their ``setup``) as packs of indices: those with one
        ``packing.pack_key``, split by width (``packing.split_by_width``, at most
        ``search.pack_padding`` times their own tables); the others alone."""
        padding = pack_padding(self.cfg.search)
        groups: dict[Any, list[tuple[int, int, int]]] = {}
        for i, (trial_cfg, sizes) in enumerate(setups):
            sparse = use_sparse(trial_cfg.model.get("sparse", "auto"), sizes.num_embeddings)
            key = packing.pack_key(trial_cfg, sparse, self.data.device)
            entry = (i, sizes.num_embeddings, sizes.embedding_dim)
            groups.setdefault(key if key is not None else ("alone", i), []).append(entry)
        return [
            pack
            for key, group in groups.items()
            for pack in (
                [[i] for i, _, _ in group]
                if isinstance(key, tuple)
                else packing.split_by_width(group, padding)
            )
        ]

    def _train_packed(self, params_list, setups, on_epochs, wrap_model, seed: int, settle) -> None:
        """One pack (``sweep.models.packing``): the members (their ``setup``) built exactly as alone,
        trained together. ``settle(j, result)`` gets member j's result as soon as it ends: its
        record (``gpu_peak_mb``: the pack's peak so far), or its exception."""
        device = self.data.device
        train_cfg = setups[0][0].train
        members, cutoffs = [], []
        with measure.gpu_peak(device, self.memory) as peak:
            for (trial_cfg, sizes), on_epoch in zip(setups, on_epochs, strict=True):
                views, model, cutoff_seconds = self._build(trial_cfg, sizes, seed, wrap_model)
                stopping = EarlyStopping(train_cfg.patience)
                optimizers = Optimizers(model, trial_cfg.train.lr)  # its own, maybe searched
                member = packing.Member(model, optimizers, views, on_epoch, stopping)
                member.rng = packing.trial_generator(device, seed)
                members.append(member)
                cutoffs.append(cutoff_seconds)
            index = {id(m): j for j, m in enumerate(members)}
            settling = [0.0]  # seconds in settle: the study and the reports, not training

            def done(member: packing.Member) -> None:
                j, result = index[id(member)], member.outcome
                if not isinstance(result, BaseException):
                    precisions = self._trained(params_list[j], setups[j], seed, member.model)
                    peak.read()
                    result = {**self._record(result, cutoffs[j], peak), **precisions}
                t1 = time.perf_counter()
                try:
                    settle(j, result)
                finally:
                    settling[0] += time.perf_counter() - t1

            t0 = time.perf_counter()
            try:
                packing.fit_pack(members, train_cfg, seed, on_done=done)
            finally:
                measure.release(device)
                self.timing.training += time.perf_counter() - t0 - settling[0]
                self.timing.trials += len(members)
