"""The mixed-dimension front end (``model.frontend=mixed``): the word rows in frequency bands of
decreasing width projected to D; its counts are the built table's, its vectors those of its
bands, its export predicts as measured, its options searchable and bad ones named."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_refused, assert_ships_as_measured, compose_config, default_study

import sweep
from sweep import runner
from sweep.data.vocab import PAD
from sweep.models.frontends import MIXED, Sizes, frontend_of
from sweep.models.frontends.mixed import MixedEmbedding, band_layout
from sweep.models.kinds import build_model

MIXED_CFG = ["model.frontend=mixed"]


@pytest.mark.parametrize("rows", [2, 3, 22, 1000, 20002])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_bands_cover_the_rows_widest_first(rows, alpha):
    layout = band_layout(rows, 64, 4, alpha)
    assert sum(r for r, _ in layout) == rows and all(r > 0 for r, _ in layout)
    widths = [w for _, w in layout]
    assert widths[0] == 64 and widths == sorted(widths, reverse=True) and min(widths) >= 1
    assert len(layout) <= 4
    if alpha == 0.0:
        assert set(widths) == {64}  # the plain table, cut in bands
    if rows == 20002 and alpha > 0:
        assert widths[-1] < widths[0]  # rare words are narrower
    assert band_layout(rows, 64, 1, alpha) == [(rows, 64)]


@pytest.mark.parametrize("model", ["bag", "cnn", "rnn", "transformer"])
@pytest.mark.parametrize(("alpha", "bands"), [(0.5, 4), (0.2, 3), (1.0, 6)])
def test_mixed_table_counts_its_parameters_in_closed_form(model, alpha, bands):
    cfg = compose_config([f"model={model}", *MIXED_CFG, f"model.mixed_alpha={alpha}",
                          f"model.mixed_bands={bands}"])  # fmt: skip
    assert frontend_of(cfg.model) is MIXED
    sizes = MIXED.sizes({"vocab_size": 5000, "embedding_dim": 24}, cfg.model, full_vocab=6000)
    if cfg.model.get("hidden_dim") == "auto":
        cfg.model.hidden_dim = 4
    with torch.device("meta"):
        built = build_model(cfg.model, sizes.num_embeddings, sizes.embedding_dim, 3)
    assert isinstance(built.frontend, MixedEmbedding)
    assert MIXED.num_params(sizes, cfg.model) == built.num_params()["embedding"]
    plain = sizes.num_embeddings * 24
    assert MIXED.num_params(sizes, cfg.model) < plain / 2  # what the kind is for
    assert MIXED.grad_bytes(sizes, sparse=False, params=1000, tokens=10) == 4000


def test_a_mixed_vector_is_its_bands_row_projected_and_pad_is_zero():
    torch.manual_seed(0)
    table = MixedEmbedding(200, 16, alpha=0.5, bands=3)
    ids = torch.tensor([[0, 1, 2, 5, 30, 199], [7, 150, 0, 0, 0, 0]])
    out = table(ids)
    assert out.shape == (2, 6, 16) and torch.equal(out[0, 0], torch.zeros(16))
    for token in (1, 5, 30, 199):  # by hand: the band holding the id, its row, its projection
        band = max(i for i, start in enumerate(table.starts) if token >= start)
        row = token - table.starts[band] + (band > 0)
        vector = table.projections[band](table.tables[band].weight[row])
        position = ids[0].tolist().index(token)
        assert torch.allclose(out[0, position], vector, atol=1e-6)
    # The bag's mean is the mean of the non-pad vectors.
    expected = torch.stack([out[0, 1:].mean(0), out[1, :2].mean(0)])  # id 0 is <pad>
    assert torch.allclose(table.mean(ids), expected, atol=1e-6)
    # No gradient reaches <pad> or a band's zero row.
    table.mean(ids).sum().backward()
    assert not table.tables[0].weight.grad[PAD].any()
    assert all(not t.weight.grad[0].any() for t in table.tables[1:])


def test_a_mixed_sweep_exports_a_model_that_predicts_as_measured(tiny_overrides, tmp_path):
    """alpha searched as any key; the export rebuilds the bands from its config alone."""
    cfg = compose_config([*tiny_overrides, *MIXED_CFG, "search.n_trials=4",
                          "+search.space.alpha={type:float,low:0.1,high:0.9,key:model.mixed_alpha}"])  # fmt: skip
    result = runner.run(cfg, tmp_path / "out")
    done = result.table[result.table["state"] == "COMPLETE"]
    assert len(done) == 4 and done["alpha"].between(0.1, 0.9).all()
    rec = result.recommended
    folder = tmp_path / "out" / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["frontend"] == config["model"]["frontend"] == "mixed"
    assert config["model"]["mixed_alpha"] == pytest.approx(rec["alpha"])
    assert_ships_as_measured(cfg, result, folder)


def test_bad_mixed_settings_name_their_key(tiny_overrides, tmp_path):
    assert_refused([*tiny_overrides, *MIXED_CFG], {
        "model.mixed_alpha=1.5": r"model.mixed_alpha=1.5 must be a number from 0",
        "model.mixed_bands=0": r"model.mixed_bands=0 must be a whole number",
        "model.hash_buckets=8": r"model.hash_buckets=8: model.frontend=mixed takes none",
        "model.factorized_dim=8": r"model.factorized_dim: model.frontend=mixed projects its bands",
        "model.sparse=true": r"model.sparse=True: model.frontend=mixed takes none",
        "report.prune_rows=10": r"report.prune_rows=10: model.frontend=mixed",
        "model.mixed_bands=100000": r"model.mixed_bands=100000 must be a whole number of bands, "
                                    r"from 1 to 64",
        "+search.space.alpha={type:float,low:0.1,high:1.5,key:model.mixed_alpha}":
            r"search.space.alpha \(sets model.mixed_alpha\): model.mixed_alpha=1.5 must be",
    }, ValueError, tmp_path / "out")  # fmt: skip


def test_a_word_study_resumes_whatever_another_kinds_settings_say(tiny_overrides, tmp_path):
    """Another kind's option (the mixed bands) is no part of a word study's setup: the same
    study resumes, its trials kept; and a word folder's config.json names no kind."""
    first = runner.run(compose_config(tiny_overrides), tmp_path / "first")
    again = runner.run(compose_config([*tiny_overrides, "model.mixed_alpha=0.3",
                                       "search.n_trials=4"]), tmp_path / "again")  # fmt: skip
    assert len(first.table) == 3 and len(again.table) == 4
    config = json.loads((tmp_path / "again" / "model" / "config.json").read_text())
    assert "frontend" not in config and not {"frontend", "mixed_alpha"} & set(config["model"])
    assert sweep.load(tmp_path / "again" / "model").predict(["a text"])


def test_the_kinds_settings_count_for_their_own_studies_only():
    assert default_study([]) == default_study(["model.mixed_alpha=0.3"])
    mixed = default_study(MIXED_CFG)
    assert mixed != default_study([]) and mixed != default_study([*MIXED_CFG,
                                                                  "model.mixed_alpha=0.3"])  # fmt: skip
    assert mixed == default_study([*MIXED_CFG, "data.subword_vocab=5"])
    assert Sizes(1, 0, 3, 4) == MIXED.sizes({"vocab_size": 1, "embedding_dim": 4}, {}, 10)
