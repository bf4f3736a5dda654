"""Front-end kinds (``sweep.models.frontends``): each kind's closed forms are what the built
table and the trial measure, and the stages ask the kind rather than knowing it."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

from sweep import measure
from sweep.data.prepared import PreparedData
from sweep.models.frontends import FRONT_ENDS, MIXED, SUBWORD, WORD, FrontEnd, Sizes, frontend_of
from sweep.models.kinds import build_model
from sweep.trial import TrialRunner


def test_the_registry_names_each_kind_once():
    assert FRONT_ENDS == {"word": WORD, "subword": SUBWORD, "mixed": MIXED}
    for name, kind in FRONT_ENDS.items():
        assert isinstance(kind, FrontEnd) and kind.name == name
    assert frontend_of(compose_config().model) is WORD


@pytest.mark.parametrize("model", ["bag", "cnn", "rnn", "transformer"])
@pytest.mark.parametrize("factorized_dim", [None, 6])
@pytest.mark.parametrize("hash_buckets", [0, 7])
def test_word_table_counts_its_parameters_in_closed_form(model, factorized_dim, hash_buckets):
    cfg = compose_config([f"model={model}", f"model.factorized_dim={factorized_dim or 'null'}",
                          f"model.hash_buckets={hash_buckets}"])  # fmt: skip
    sizes = WORD.sizes({"vocab_size": 50, "embedding_dim": 8}, cfg.model, full_vocab=40)
    assert (sizes.vocab_size, sizes.num_embeddings) == (40, 40 + 2 + hash_buckets)  # clamped
    if cfg.model.get("hidden_dim") == "auto":  # the recipe's pick: any width builds
        cfg.model.hidden_dim = 4
    with torch.device("meta"):
        built = build_model(cfg.model, sizes.num_embeddings, sizes.embedding_dim, 3)
    assert WORD.num_params(sizes, cfg.model) == built.num_params()["embedding"]
    table = WORD.table(sizes.num_embeddings, 8, factorized_dim)
    assert WORD.num_params(sizes, cfg.model) == table.num_params()


@pytest.mark.parametrize("sparse", [False, True])
def test_word_table_gradient_is_the_memory_estimates_term(sparse):
    sizes = Sizes(vocab_size=98, hash_buckets=0, num_embeddings=100, embedding_dim=16)
    params = WORD.num_params(sizes, {})
    tokens = 32 * 20
    expected = tokens * 16 * 4 + tokens * 8 if sparse else params * 4
    assert WORD.grad_bytes(sizes, sparse=sparse, params=params, tokens=tokens) == expected
    cfg = compose_config(["model=bag", "model.hidden_dim=0"])
    with torch.device("meta"):
        model = build_model(cfg.model, 100, 16, 4)
    common = dict(params_total=params + 16 * 4 + 4, params_embedding=params, embedding_dim=16,
                  sparse=sparse, batch_size=32, eval_batch_size=64, max_length=20,
                  data_bytes=0)  # fmt: skip
    assert measure.estimate_peak_mb(model, **common) == measure.estimate_peak_mb(
        model, **common, table_grad=expected
    )


def test_a_trial_asks_its_kind_for_sizes_views_and_columns(tiny_cfg):
    data = PreparedData.load(tiny_cfg.data, tiny_cfg.seed, torch.device("cpu"))
    trial_runner = TrialRunner(tiny_cfg, data)
    assert trial_runner.frontend is WORD
    params = {"embedding_dim": 8, "vocab_size": 30}
    trial_cfg, sizes = trial_runner.setup(params)
    assert sizes == WORD.sizes(params, trial_cfg.model, data.full_vocab)
    view = WORD.view(data, "validation", sizes)
    assert int(view.ids.max()) < sizes.num_embeddings
    assert torch.equal(view.ids, data.view("validation", 30).ids)
    figures = trial_runner.describe(params, probe=False)
    assert {k: figures[k] for k in WORD.describe(data, sizes)} == WORD.describe(data, sizes)
    assert figures["params_embedding"] == WORD.num_params(sizes, trial_cfg.model)
    words = WORD.vocabulary(data, sizes)
    text = WORD.files_of(words)["vocab.txt"]  # what the export writes
    assert len(words) == 32 and WORD.file_bytes(data, sizes) == len(text.encode("utf-8"))


def test_word_table_ships_its_vocabulary_and_checks_its_keys_as_data(tmp_path):
    """What the kind says about an exported folder: its files (the folder's format unchanged),
    its keys of config.json and their checks, and the encoder a loaded folder uses."""
    from sweep.ship import export, manifest

    assert export.FILES == ("model.safetensors", "vocab.txt", "config.json")
    assert set(WORD.config_rules) <= set(manifest.top({}))  # a folder naming no kind
    assert set(SUBWORD.config_rules) <= set(manifest.top({"frontend": "subword"}))
    assert manifest.frontend_in({}) is WORD
    with pytest.raises(ValueError, match="holds a newline"):
        WORD.files_of(["<pad>", "<unk>", "two\nlines"])
    (tmp_path / "vocab.txt").write_bytes(b"<pad>\n<unk>\n\xff\n")
    with pytest.raises(ValueError, match=r"vocab\.txt is not UTF-8 text"):
        WORD.read_vocabulary(tmp_path)
    sizes = Sizes(vocab_size=2, hash_buckets=0, num_embeddings=4, embedding_dim=3)
    data_cfg = compose_config(["data.tokenizer.word_ngrams=1"]).data  # the recipe's pick
    config = WORD.export_config(sizes, data_cfg, vocab_size=2)
    WORD.check_config(config, "config.json")
    with pytest.raises(ValueError, match=r"num_embeddings=5 must be vocab_size \+ 2"):
        WORD.check_config({**config, "num_embeddings": 5}, "config.json")
    with pytest.raises(ValueError, match=r"\(tokenizer\): 'hooks' is not a key"):
        WORD.check_config({**config, "tokenizer": {**config["tokenizer"], "hooks": 1}}, "c")
    encode = WORD.encoder(config, ["<pad>", "<unk>", "good", "film", "bad"])
    # "bad" is past the cutoff K = 2: <unk>; an empty text is one <pad>.
    assert encode(["Good film bad film", ""]).tolist() == [[2, 3, 1, 3], [0, 0, 0, 0]]


def test_word_table_prunes_rows_in_place():
    torch.manual_seed(0)
    table = WORD.table(6, 3)  # 4 words
    with torch.no_grad():
        table.embed.weight[2:] = torch.tensor([[1.0] * 3, [3.0] * 3, [0.5] * 3, [2.0] * 3])
    model = torch.nn.Module()
    model.frontend = table
    sizes = Sizes(vocab_size=4, hash_buckets=0, num_embeddings=6, embedding_dim=3)
    index, remap = WORD.prune(model, sizes, rows=2, by="norm")
    assert index.tolist() == [0, 1, 3, 5] and table.embed.weight.shape == (4, 3)
    assert remap.tolist() == [0, 1, 1, 2, 1, 3]  # pruned words read as <unk>
    with pytest.raises(ValueError, match="hash_buckets=0"):
        WORD.prune(model, Sizes(4, 2, 8, 3), rows=2, by="norm")
