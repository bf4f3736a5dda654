"""The default synthetic data makes the sweep's question real (trains real models: slow)."""

from __future__ import annotations

import pytest
import torch
from conftest import fixed_config

from sweep.data import vocab
from sweep.data.corpus import load_corpus
from sweep.data.prepared import SplitTensors
from sweep.models.fit import fit
from sweep.models.kinds import build_model


@pytest.mark.slow
def test_small_cutoff_and_small_dim_each_cost_accuracy():
    cfg = fixed_config(["data.cache_dir=null"])  # the recipe at the old defaults
    encoded = vocab.build(load_corpus(cfg.data, seed=0), cfg.data.tokenizer, cfg.data.max_length)

    def accuracy(vocab_size: int, embedding_dim: int) -> float:
        views = {
            s: SplitTensors(vocab.cut(encoded.ids[s], vocab_size), encoded.labels[s],
                            encoded.lengths[s])
            for s in ("train", "validation", "test")
        }  # fmt: skip
        torch.manual_seed(0)
        model = build_model(cfg.model, vocab_size + 2, embedding_dim, encoded.num_classes)
        t = cfg.train
        result = fit(model, views["train"], views["validation"], views["test"], epochs=t.epochs,
                     batch_size=t.batch_size, lr=t.lr, patience=t.patience, seed=0)  # fmt: skip
        return result.test_accuracy

    good = accuracy(1000, 128)
    assert good > 75
    assert accuracy(100, 128) < good - 20  # cues live in mid and rare words
    assert accuracy(1000, 2) < good - 8  # two attributes must be combined: width matters
