"""Models: built from config with run-time sizes, parameter counts equal their closed form,
padding never changes a prediction, any embedding_dim works."""

from __future__ import annotations

import pandas as pd
import param_oracles
import pytest
import torch
from conftest import compose_config, fixed_config
from omegaconf import OmegaConf

from sweep import runner
from sweep.data import vocab
from sweep.models.classifiers import BagClassifier, TransformerClassifier
from sweep.models.embedding import EmbeddingFrontEnd
from sweep.models.kinds import build_model

MODELS = ["bag", "cnn", "rnn", "transformer"]


def built(name: str, num_embeddings=52, embedding_dim=12, num_classes=3, *extra: str):
    cfg = fixed_config([f"model={name}", *extra])
    return cfg, build_model(cfg.model, num_embeddings, embedding_dim, num_classes)


def closed_form(cfg, num_embeddings, embedding_dim, num_classes):
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("_target_", "name", "hash_buckets")}
    kwargs.update(num_embeddings=num_embeddings, embedding_dim=embedding_dim,
                  num_classes=num_classes)  # fmt: skip
    return param_oracles.BY_MODEL[cfg.model.name](**kwargs)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "extra",
    [[], ["model.factorized_dim=24"], ["model.hash_buckets=100"]],
    ids=["plain", "factorized", "hashed"],
)
@pytest.mark.parametrize("num_embeddings,embedding_dim", [(3, 1), (102, 8), (5002, 37)])
def test_params_equal_closed_form(name, extra, num_embeddings, embedding_dim):
    cfg, model = built(name, num_embeddings, embedding_dim, 5, *extra)
    counted = model.num_params()
    assert counted == closed_form(cfg, num_embeddings, embedding_dim, 5)
    table = num_embeddings * embedding_dim
    if "factorized" in " ".join(extra):
        assert counted["embedding"] == table + embedding_dim * 24
    else:
        assert counted["embedding"] == table
    assert counted["total"] > counted["embedding"]


@pytest.mark.parametrize(
    "extra",
    [["model.cell=lstm"], ["model.num_layers=2", "model.hidden_size=16"], ["model.pooling=mean"]],
)
def test_rnn_variants_params_equal_closed_form(extra):
    cfg, model = built("rnn", 40, 10, 4, *extra)
    assert model.num_params() == closed_form(cfg, 40, 10, 4)


def test_bag_params_by_hand():
    counted = BagClassifier(102, 8, num_classes=5, hidden_dim=16).num_params()
    assert counted == {"total": 102 * 8 + (8 * 16 + 16) + (16 * 5 + 5), "embedding": 816}
    assert BagClassifier(102, 8, num_classes=5).num_params()["total"] == 816 + 8 * 5 + 5


@pytest.mark.parametrize("name", MODELS)
def test_padding_never_changes_a_prediction(name):
    torch.manual_seed(0)
    _, model = built(name, 30, 8, 3)
    model.eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 0, 0, 0, 0], [13, 0, 0, 0, 0, 0]])
    wider = torch.cat([ids, torch.zeros((3, 7), dtype=ids.dtype)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(ids), model(wider), atol=1e-5)
        alone = model(ids[2:3, :1])  # the one-token document without any batch padding
    assert torch.allclose(model(ids)[2], alone[0], atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_padding_row_stays_zero_and_gets_no_gradient(name):
    torch.manual_seed(0)
    _, model = built(name, 30, 8, 3)
    ids = torch.tensor([[5, 6, 7, 0, 0], [11, 12, 13, 14, 0]])
    model(ids).sum().backward()
    grad = model.frontend.embed.weight.grad.to_dense()
    assert torch.count_nonzero(grad[vocab.PAD]) == 0 and torch.count_nonzero(grad) > 0
    assert torch.count_nonzero(model.frontend.embed.weight[vocab.PAD]) == 0


@pytest.mark.parametrize("embedding_dim", [1, 7, 37, 64])
def test_transformer_takes_any_width(embedding_dim):
    model = TransformerClassifier(20, embedding_dim, 2, num_heads=4, max_length=16)
    assert embedding_dim % model.heads == 0 and model.heads <= 4
    assert model(torch.tensor([[3, 4, 0], [0, 0, 0]])).shape == (2, 2)


def test_transformer_names_the_key_when_documents_are_too_long():
    model = TransformerClassifier(20, 8, 2, max_length=4)
    with pytest.raises(ValueError, match=r"model\.max_length=4"):
        model(torch.ones((1, 5), dtype=torch.long))


def test_meta_device_counts_without_allocating():
    cfg = fixed_config()
    with torch.device("meta"):
        meta = build_model(cfg.model, num_embeddings=1_000_002, embedding_dim=256, num_classes=4)
    assert meta.frontend.embed.weight.is_meta
    expected = param_oracles.bag(1_000_002, 256, 4, hidden_dim=cfg.model.hidden_dim)
    assert meta.num_params() == expected


def test_factorized_front_end_projects_to_fixed_width():
    front = EmbeddingFrontEnd(10, 4, factorized_dim=6)
    ids = torch.tensor([[2, 3, 0]])
    assert front(ids).shape == (1, 3, 6) and front.out_dim == 6
    assert torch.allclose(front.mean(ids), front(ids)[:, :2].mean(dim=1), atol=1e-6)


def test_hashed_cut_stays_inside_the_table():
    ids = torch.arange(0, 500, dtype=torch.int32).reshape(5, 100)
    view = vocab.cut(ids, vocab_size=50, hash_buckets=16)
    assert int(view.max()) < 50 + 2 + 16
    assert torch.equal(view[ids < 52], ids[ids < 52])  # kept words and specials unchanged
    buckets = view[ids >= 52]
    assert int(buckets.min()) >= 52 and len(torch.unique(buckets)) == 16  # all buckets used


@pytest.mark.parametrize("name", MODELS)
def test_tiny_sweep_per_model(name, tiny_overrides, tmp_path):
    extra = [f"model={name}", "search.n_trials=2", "model.hash_buckets=8"]
    result = runner.run(compose_config([*tiny_overrides, *extra]), tmp_path / "out")
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert (trials["state"] == "COMPLETE").all(), trials["fail_reason"].tolist()
    assert (trials["num_embeddings"] == trials["vocab_size"] + 2 + 8).all()
    assert (trials["model"] == name).all()
    assert result.recommended is not None
