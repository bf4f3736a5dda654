"""Trials trained together: which share a pack, and one pack's training (``sweep.models.pack``).

Each member is built exactly as alone (``Lone._build``) and settled as soon as it ends, with the
figures a lone run would give; a pack that fails as a whole trains its trials alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from sweep import measure
from sweep.models.fit import EarlyStopping
from sweep.models.frontends import Sizes
from sweep.models.optim import Optimizers
from sweep.models.pack.fit import fit_pack
from sweep.models.pack.grouping import pack_key, split_by_width
from sweep.models.pack.member import Member, trial_generator
from sweep.search.settings import pack_padding

log = logging.getLogger(__name__)


class Pack:
    """Training configurations in packs (``TrialRunner``'s part)."""

    def train_pack(
        self,
        params_list: list[dict[str, Any]],
        on_epochs: list[Callable[[int, float], None] | None],
        labels: list[int],
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        seed: int | None = None,
        on_result: Callable[[int, dict[str, Any] | BaseException], None] | None = None,
    ) -> list[dict[str, Any] | BaseException]:
        """Train several configurations; those that may share a pack (``pack_key``)
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
        ``pack_key``, split by width (``split_by_width``, at most
        ``search.pack_padding`` times their own tables); the others alone."""
        padding = pack_padding(self.cfg.search)
        groups: dict[Any, list[tuple[int, int, int]]] = {}
        for i, (trial_cfg, sizes) in enumerate(setups):
            sparse = self.frontend.sparse(trial_cfg.model, sizes)
            key = pack_key(trial_cfg, sparse, self.data.device)
            entry = (i, sizes.num_embeddings, sizes.embedding_dim)
            groups.setdefault(key if key is not None else ("alone", i), []).append(entry)
        return [
            pack
            for key, group in groups.items()
            for pack in (
                [[i] for i, _, _ in group]
                if isinstance(key, tuple)
                else split_by_width(group, padding)
            )
        ]

    def _train_packed(self, params_list, setups, on_epochs, wrap_model, seed: int, settle) -> None:
        """One pack (``sweep.models.pack.fit``): the members (their ``setup``) built exactly as
        alone, trained together. ``settle(j, result)`` gets member j's result as soon as it ends: its
        record (``gpu_peak_mb``: the pack's peak so far), or its exception."""
        device = self.data.device
        train_cfg = setups[0][0].train
        members, cutoffs = [], []
        with measure.gpu_peak(device, self.memory) as peak:
            for (trial_cfg, sizes), on_epoch in zip(setups, on_epochs, strict=True):
                views, model, cutoff_seconds = self._build(trial_cfg, sizes, seed, wrap_model)
                stopping = EarlyStopping(train_cfg.patience)
                optimizers = Optimizers(model, trial_cfg.train.lr)  # its own, maybe searched
                member = Member(model, optimizers, views, on_epoch, stopping)
                member.rng = trial_generator(device, seed)
                members.append(member)
                cutoffs.append(cutoff_seconds)
            index = {id(m): j for j, m in enumerate(members)}
            settling = [0.0]  # seconds in settle: the study and the reports, not training

            def done(member: Member) -> None:
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
                fit_pack(members, train_cfg, seed, on_done=done)
            finally:
                measure.release(device)
                self.timing.training += time.perf_counter() - t0 - settling[0]
                self.timing.trials += len(members)
