"""A trial before it trains: its table's sizes and every column known from them (``describe``).

Parameter counts come from a model built on the meta device (nothing allocated), file bytes from
encoding that model (``sweep.ship.quantize.file_bytes``), the memory estimate from tracing it
(``sweep.measure``); the probe (``sweep.trial.probe``) measures the step where the device can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from sweep import measure, schema
from sweep.data import vocab
from sweep.models.embedding import use_sparse
from sweep.models.kinds import build_model
from sweep.ship import quantize


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


def memory_need(figures: dict[str, Any]) -> float:
    """What ``search.max_memory_mb`` and the out-of-memory rule compare (MiB): the trial's own
    peak (the probe where it ran, else the estimate) plus the process baseline (estimated)."""
    probe = float(figures.get("probe_peak_mb", math.nan))
    own = figures["est_peak_mb"] if math.isnan(probe) else probe  # inf: it did not fit
    return float(own) + float(figures["est_baseline_mb"])


class Describe:
    """The columns known before training (``TrialRunner``'s part)."""

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
            "recipe_lr": float(train_cfg.lr),
            "recipe_hidden_dim": trial_cfg.model.get("hidden_dim"),
            "recipe_word_ngrams": int(trial_cfg.data.tokenizer.word_ngrams),
            "device": measure.device_name(self.data.device),
            "seed": self.cfg.seed,
            "model": trial_cfg.model.name,
        }
        if probe:
            record["probe_peak_mb"] = self.probe((trial_cfg, sizes))
        record["memory_mb"] = memory_need(record)
        schema.check_record(record, "sizes")
        return record

    def file_bytes(self, model: torch.nn.Module, sizes: Sizes) -> dict[str, int]:
        """``file_bytes_<precision>``: the exported weights and vocabulary files, exactly."""
        words = self.data.vocab_file_bytes(sizes.vocab_size, sizes.hash_buckets)
        return {
            schema.file_bytes_column(p): quantize.file_bytes(model, p) + words
            for p in schema.PRECISIONS
        }
