"""A trial before it trains: every column known from its table's sizes (``describe``).

The front-end kind (``sweep.models.frontends``) gives the sizes (``Sizes``), its columns
(cutoff figures), its parameters and the table's gradient in closed form and its vocabulary's
bytes; the total parameter count comes from a model built on the meta device (nothing
allocated), the weights' file bytes from encoding that model (``sweep.ship.quantize``), the
memory estimate from tracing it (``sweep.measure``); the probe (``sweep.trial.probe``) measures
the step where the device can.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sweep import measure, schema
from sweep.models.frontends import Sizes
from sweep.models.kinds import build_model
from sweep.ship import quantize


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
        frontend, train_cfg = self.frontend, trial_cfg.train
        with torch.device("meta"):  # counts parameters without allocating them
            meta_model = build_model(trial_cfg.model, sizes.num_embeddings, sizes.embedding_dim,
                                     self.data.num_classes)  # fmt: skip
        total = meta_model.num_params()["total"]
        embedding = frontend.num_params(sizes, trial_cfg.model)  # closed form
        sparse = frontend.sparse(trial_cfg.model, sizes)
        widest = frontend.widest(self.data, sizes)  # a document of the trial's view
        tokens = train_cfg.batch_size * widest  # a training batch at its longest
        table_grad = frontend.grad_bytes(sizes, sparse=sparse, params=embedding, tokens=tokens)
        record = {
            **frontend.describe(self.data, sizes),
            "params_total": total,
            "params_embedding": embedding,
            "embedding_share": embedding / total,
            **measure.size_columns(total, embedding),
            **self.file_bytes(meta_model, sizes),
            **measure.estimate_peak_mb(
                meta_model,
                params_total=total,
                params_embedding=embedding,
                embedding_dim=sizes.embedding_dim,
                sparse=sparse,
                batch_size=train_cfg.batch_size,
                eval_batch_size=train_cfg.eval_batch_size,
                max_length=widest,
                data_bytes=frontend.device_bytes(self.data, sizes),  # the study's ids, its view
                capability=self.capability,
                table_grad=table_grad,
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
        words = self.frontend.file_bytes(self.data, sizes)
        return {
            schema.file_bytes_column(p): quantize.file_bytes(model, p) + words
            for p in schema.PRECISIONS
        }
