"""Models: built from config with run-time sizes, parameter counts equal their closed form."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

from sweep.models import BagClassifier
from sweep.runner import build_model


@pytest.mark.parametrize("hidden_dim", [0, 16])
@pytest.mark.parametrize("num_embeddings,embedding_dim", [(3, 1), (102, 8), (5002, 64)])
def test_bag_params_equal_closed_form(num_embeddings, embedding_dim, hidden_dim):
    model = BagClassifier(num_embeddings, embedding_dim, num_classes=5, hidden_dim=hidden_dim)
    counted = model.num_params()
    assert counted == BagClassifier.expected_params(
        num_embeddings, embedding_dim, num_classes=5, hidden_dim=hidden_dim
    )
    assert counted["embedding"] == num_embeddings * embedding_dim
    head = (
        embedding_dim * hidden_dim + hidden_dim + hidden_dim * 5 + 5
        if hidden_dim
        else embedding_dim * 5 + 5
    )
    assert counted["total"] == num_embeddings * embedding_dim + head


def test_model_config_instantiates_with_runtime_sizes():
    cfg = compose_config(["model.hidden_dim=7"])
    model = build_model(cfg.model, num_embeddings=52, embedding_dim=12, num_classes=3)
    assert isinstance(model, BagClassifier)
    assert model.embed.weight.shape == (52, 12)
    assert model.embed.padding_idx == 0
    logits = model(torch.tensor([[2, 3, 0], [51, 0, 0]]))
    assert logits.shape == (2, 3)


def test_meta_device_counts_without_allocating():
    cfg = compose_config()
    with torch.device("meta"):
        meta = build_model(cfg.model, num_embeddings=1_000_002, embedding_dim=256, num_classes=4)
    assert meta.embed.weight.is_meta
    expected = BagClassifier.expected_params(1_000_002, 256, 4, hidden_dim=cfg.model.hidden_dim)
    assert meta.num_params() == expected


def test_empty_document_does_not_produce_nan():
    model = BagClassifier(10, 4, num_classes=2)
    logits = model(torch.zeros((2, 3), dtype=torch.long))
    assert torch.isfinite(logits).all()
