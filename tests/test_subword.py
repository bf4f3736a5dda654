"""The subword front end (``model.frontend=subword``): BPE pieces learned once per study and cut
per trial; a smaller vocabulary is what learning at that size gives; its counts are the built
table's; an exported folder reads words it never saw; bad settings name their key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_refused, assert_ships_as_measured, compose_config, default_study

import sweep
from sweep import runner
from sweep.common.digest import file_digest
from sweep.data import subword, vocab
from sweep.data.corpus import load_corpus
from sweep.data.prepared import PreparedData
from sweep.models.frontends import SUBWORD, WORD, frontend_of
from sweep.models.frontends.subword import read_lines
from sweep.models.kinds import build_model
from sweep.ship import export
from sweep.ship.export import ExportError
from sweep.trial import TrialRunner

SUBWORDS = ["model.frontend=subword", "data.subword_vocab=400", "search.space.vocab_size.low=30"]


@pytest.fixture
def subword_cfg(tiny_overrides):
    return compose_config([*tiny_overrides, *SUBWORDS])


@pytest.fixture
def words_and_counts(subword_cfg):
    """The train words of the tiny corpus and their counts (what BPE is learned on)."""
    encoded = vocab.build(load_corpus(subword_cfg.data, 0), subword_cfg.data.tokenizer, 64)
    return encoded.words[2:], encoded.train_counts[2:].numpy()


def test_a_vocabulary_cut_at_k_is_the_one_learned_at_k(words_and_counts):
    """BPE's merges are ordered: learned at 300 pieces, its first K pieces and the merges that
    made them are what learning at K gives, and they segment every word (seen or not) alike."""
    words, counts = words_and_counts
    pieces, merges = subword.learn(words, counts, 300)
    alphabet = subword.alphabet_size(pieces)
    unseen = ["zebrafish", "abcabcabc", "quux", words[0] + words[-1]]
    for k in (alphabet, alphabet + 1, 60, 150, 300):
        small_pieces, small_merges = subword.learn(words, counts, k)
        rows = k + len(vocab.SPECIALS)
        assert small_pieces == pieces[:rows]
        assert small_merges == merges[: subword.merges_for(pieces, merges, rows)]
        cut = subword.Segmenter(pieces, merges, rows).segment([*words, *unseen])
        learned = subword.Segmenter(small_pieces, small_merges).segment([*words, *unseen])
        assert all(np.array_equal(a, b) for a, b in zip(cut, learned, strict=True))
        assert int(cut[0].max()) < rows
        # Undoing the merges past the cut, from the full segmentation, gives the same.
        every = [*words, *unseen]
        payload = {"segments": [torch.from_numpy(x) for x in
                                subword.Segmenter(pieces, merges).segment(every)],
                   "merges": merges, "alphabet": alphabet, "types": every}  # fmt: skip
        undone = subword.cut(pieces, payload, rows)
        assert all(np.array_equal(a, b) for a, b in zip(cut, undone, strict=True))
    # Fewer pieces, more of them per word: the cut is a real one.
    few = subword.Segmenter(pieces, merges, alphabet + 2).segment(words)[1].sum()
    many = subword.Segmenter(pieces, merges).segment(words)[1].sum()
    assert few > 2 * many


def test_the_corpus_is_read_once_and_each_cut_is_laid_out_from_its_words(subword_cfg):
    data = PreparedData.load(subword_cfg.data, 0, torch.device("cpu"), SUBWORD.encode)
    payload = data.encoded.subwords
    assert data.full_vocab == len(data.encoded.words) - 2 <= 400
    # At the full vocabulary the view is the encoding itself.
    full = SUBWORD.sizes({"vocab_size": 10**6, "embedding_dim": 4}, subword_cfg.model,
                         data.full_vocab)  # fmt: skip
    assert full.vocab_size == data.full_vocab
    assert torch.equal(SUBWORD.view(data, "train", full).ids, data.ids["train"])
    # A small cut: each document is its words' pieces under that vocabulary, in order.
    sizes = SUBWORD.sizes({"vocab_size": payload["alphabet"] + 10, "embedding_dim": 4},
                          subword_cfg.model, data.full_vocab)  # fmt: skip
    view = SUBWORD.view(data, "validation", sizes)
    segmenter = subword.Segmenter(data.encoded.words, payload["merges"], sizes.num_embeddings)
    tokenizer = vocab.Tokenizer.from_config(subword_cfg.data.tokenizer)
    text = load_corpus(subword_cfg.data, subword_cfg.seed).texts["validation"][3]
    flat, _ = segmenter.segment(tokenizer(text))
    expected = flat[: subword_cfg.data.max_length]
    assert int(view.lengths[3]) == len(expected)
    assert view.ids[3, : len(expected)].tolist() == expected.tolist()
    assert int(view.ids.max()) < sizes.num_embeddings and view.ids.shape[1] > data.max_length


def test_subword_counts_are_the_built_tables(subword_cfg):
    data = PreparedData.load(subword_cfg.data, 0, torch.device("cpu"), SUBWORD.encode)
    trial_runner = TrialRunner(subword_cfg, data)
    assert trial_runner.frontend is SUBWORD and frontend_of(subword_cfg.model) is SUBWORD
    params = {"embedding_dim": 8, "vocab_size": 120}
    trial_cfg, sizes = trial_runner.setup(params)
    assert (sizes.vocab_size, sizes.num_embeddings) == (120, 122)
    trial_cfg.model.hidden_dim = 4
    with torch.device("meta"):
        built = build_model(trial_cfg.model, sizes.num_embeddings, 8, data.num_classes)
    assert SUBWORD.num_params(sizes, trial_cfg.model) == built.num_params()["embedding"] == 122 * 8
    figures = trial_runner.describe(params, probe=False)
    assert figures["params_embedding"] == 122 * 8
    assert figures["train_coverage"] == 1.0 and figures["val_oov_rate"] == 0.0
    lines = SUBWORD.vocabulary(data, sizes)
    pieces, merges = read_lines(lines, 120)  # what the export writes reads back as this cut
    assert pieces == data.encoded.words[:122]
    text = SUBWORD.files_of(lines)["vocab.txt"]
    assert SUBWORD.file_bytes(data, sizes) == len(text.encode("utf-8"))
    assert not SUBWORD.packs(trial_cfg.model, False)
    # The memory estimate sees the trial's view: at a small K documents are longer in pieces,
    # and the view's ids sit on the device beside the study's.
    small = SUBWORD.sizes({"vocab_size": 30, "embedding_dim": 8}, trial_cfg.model, data.full_vocab)
    views = [SUBWORD.view(data, split, small).ids for split in ("train", "validation", "test")]
    assert SUBWORD.widest(data, small) == max(v.shape[1] for v in views) > data.max_length
    assert SUBWORD.device_bytes(data, small) == data.device_bytes + sum(
        v.numel() * v.element_size() for v in views)  # fmt: skip
    assert WORD.widest(data, small) == data.max_length


def test_a_subword_sweep_exports_a_model_that_reads_unseen_words(subword_cfg, tmp_path):
    cfg = subword_cfg
    result = runner.run(cfg, tmp_path / "out")
    assert result.table["state"].eq("COMPLETE").all()
    folder = tmp_path / "out" / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["frontend"] == config["model"]["frontend"] == "subword"
    assert "mixed_alpha" not in config["model"]  # another kind's option
    predictor = assert_ships_as_measured(cfg, result, folder)
    # A word the train split never held is spelled in pieces, not <unk>.
    alphabet = [line for line in (folder / "vocab.txt").read_text().split("\n")[2:] if
                len(line) == 1]  # fmt: skip
    unseen = "".join(reversed(alphabet))
    ids = predictor.encode([unseen, "bad\tinput 42!"])
    assert ids.shape[1] > 1 and vocab.UNK not in ids[0].tolist()
    # The folder's vocab.txt is read as data: a line that is no merge is refused by name.
    lines = (folder / "vocab.txt").read_text().split("\n")
    (folder / "vocab.txt").write_text("\n".join([*lines[:-2], "__import__ os", ""]))
    sums = "".join(f"{file_digest(folder / n)}  {n}\n" for n in export.FILES)
    (folder / "SHA256SUMS").write_text(sums)  # as if the export had written it
    with pytest.raises(ExportError, match=r"vocab\.txt \(model.frontend=subword\), line \d+"):
        sweep.load(folder)
    # Resumed: the same command trains only what the target adds.
    again = runner.run(compose_config([*cfg_overrides(cfg, tmp_path), "search.n_trials=4"]),
                       tmp_path / "again")  # fmt: skip
    assert len(again.table) == 4


def cfg_overrides(cfg, tmp_path) -> list[str]:
    """The tiny subword overrides of ``cfg`` (its folders in ``tmp_path``)."""
    from conftest import TINY

    return [*TINY, *SUBWORDS, f"search.storage_dir={tmp_path / 'studies'}",
            f"data.cache_dir={tmp_path / 'cache'}", "device=cpu"]  # fmt: skip


def test_bad_subword_settings_name_their_key(tiny_overrides, tmp_path):
    base = [*tiny_overrides, *SUBWORDS]
    assert_refused(base, {
        "search.space.vocab_size.low=3": r"search.space.vocab_size.low holds 3, below the "
                                         r"subword alphabet of \d+ characters .*; use \d+ or more",
        "data.tokenizer.word_ngrams=2": r"data.tokenizer.word_ngrams=2: model.frontend=subword",
        "data.tokenizer.char_ngrams=[3,5]": r"data.tokenizer.char_ngrams",
        "model.hash_buckets=8": r"model.hash_buckets: model.frontend=subword",
        "model.frontend=bpe": r"model.frontend='bpe' is no front-end kind .* word, subword",
        "data.subword_vocab=0": r"data.subword_vocab=0 must be a positive number",
        "report.prune_rows=10": r"report.prune_rows: model.frontend=subword",
    }, ValueError, tmp_path / "out")  # fmt: skip
    assert_refused([*base, "search/sampler=grid"], {
        "search.sampler.values.vocab_size=[5,1000]":
            r"search.sampler.values.vocab_size holds 5, below the subword",
    }, ValueError, tmp_path / "out")  # fmt: skip
    assert not (tmp_path / "studies").exists() or not any((tmp_path / "studies").iterdir())
    # A categorical cutoff axis: its smallest choice is checked.
    cfg = compose_config(base)
    data = PreparedData.load(cfg.data, 0, torch.device("cpu"), SUBWORD.encode)
    cfg.search.space.vocab_size = {"type": "categorical", "choices": [300, 5]}
    with pytest.raises(ValueError, match=r"vocab_size.choices holds 5, below the subword"):
        SUBWORD.check(cfg, data)


def test_a_subword_vocabulary_file_is_read_as_data():
    good = ["<pad>", "<unk>", "a", "b", "a b", "ab a"]
    assert read_lines(good, 4) == (["<pad>", "<unk>", "a", "b", "ab", "aba"],
                                   [["a", "b"], ["ab", "a"]])  # fmt: skip
    for lines, message in [
        (["<unk>", "<pad>", "a"], "must start with"),
        ([*good[:4], "a c"], "line 5: 'a c' is neither"),  # c is no piece above it
        ([*good[:4], "import os"], "line 5"),
        ([*good[:4], "a b", "c"], "line 6"),  # the alphabet comes before the merges
        ([*good[:4], "<unk> a"], "line 5"),  # a special is no piece
        (good, "holds 4 pieces, config.json's vocab_size says 5"),
    ]:
        with pytest.raises(ValueError, match=message):
            read_lines(lines, 5 if "says 5" in message else 4)


def test_the_word_tables_studies_keep_their_names():
    """Naming the kind adds nothing to a word-table study's setup digest; another kind's study
    is its own."""
    assert default_study([]) == default_study(["model.frontend=word"])
    assert default_study([]) == default_study(["data.subword_vocab=5"])
    assert default_study([]) != default_study(["model.frontend=subword"])
    assert frontend_of(compose_config().model) is WORD


def test_a_damaged_subword_cache_is_rebuilt_and_a_folder_names_its_kind(subword_cfg, tmp_path):
    """What the tool reads back is checked: a cache whose subword data do not fit together is
    rebuilt (never trusted), and a config.json's ``frontend`` must be a kind of the registry."""
    from sweep.ship import manifest

    corpus = load_corpus(subword_cfg.data, 0)
    encoded, key = subword.load_or_build(corpus, subword_cfg.data)
    path = next((tmp_path / "cache").glob(f"encoded-{key}.pt"))
    stored = torch.load(path, weights_only=True)
    flat, counts = stored["subwords"]["segments"]
    stored["subwords"]["segments"] = (flat + len(encoded.words), counts)  # ids past the table
    torch.save(stored, path)
    again, _ = subword.load_or_build(corpus, subword_cfg.data)
    assert torch.equal(again.subwords["segments"][0], encoded.subwords["segments"][0])
    for value, message in [("bpe", r"frontend='bpe' must be one of word, subword"),
                           (["subword"], r"frontend=\['subword'\] must be one of")]:  # fmt: skip
        with pytest.raises(ExportError, match=message):
            manifest.parse(json.dumps({"frontend": value, "model": {}}), "config.json")
