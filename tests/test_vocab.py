"""Vocabulary and cutoff: ranking, <unk>/<pad> handling, coverage, and the encoded-corpus cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from sweep.data import vocab
from sweep.data.corpus import Corpus
from sweep.models.classifiers import BagClassifier
from sweep.models.optim import Optimizers

TOKENIZER = OmegaConf.create({"pattern": r"\w+", "lowercase": True, "normalize": "NFKC"})


def make_corpus(train: list[str], validation: list[str], test: list[str], fingerprint="fp"):
    texts = {"train": train, "validation": validation, "test": test}
    labels = {s: np.arange(len(t), dtype=np.int64) % 2 for s, t in texts.items()}
    return Corpus(texts, labels, ["a", "b"], fingerprint)


@pytest.fixture
def encoded():
    corpus = make_corpus(
        ["the cat the dog", "The CAT sat", "the bird"],
        ["the zebra cat", "dog dog unseen"],
        ["cat", "bird the"],
    )
    return vocab.build(corpus, TOKENIZER, max_length=8)


def test_ids_are_ranked_by_train_frequency_with_specials_first(encoded):
    assert encoded.words[:2] == ["<pad>", "<unk>"]
    # the: 4, cat: 2, then count-1 words in alphabetical order (ties broken by the word).
    assert encoded.words[2:] == ["the", "cat", "bird", "dog", "sat"]
    assert encoded.train_counts.tolist() == [0, 0, 4, 2, 1, 1, 1]
    assert encoded.full_vocab_size == 5


def test_unseen_words_are_unk_and_rows_are_padded(encoded):
    val = encoded.ids["validation"]
    assert val[0, :3].tolist() == [2, vocab.UNK, 3]  # "zebra" never occurs in train
    assert val[1, :3].tolist() == [5, 5, vocab.UNK]
    assert encoded.lengths["validation"].tolist() == [3, 3]
    test = encoded.ids["test"]
    assert test[0].tolist()[1:] == [vocab.PAD] * (test.shape[1] - 1)


def test_cut_never_reaches_num_embeddings_and_keeps_padding(encoded):
    ids = encoded.ids["train"]
    for k in range(0, encoded.full_vocab_size + 3):
        view = vocab.cut(ids, k)
        assert int(view.max()) < k + 2
        assert torch.equal(view == vocab.PAD, ids == vocab.PAD)
        kept = (ids < k + 2) & (ids != vocab.PAD)
        assert torch.equal(view[kept], ids[kept])
        assert bool((view[(ids >= k + 2)] == vocab.UNK).all())


def test_coverage_oov_and_min_frequency(encoded):
    counts = encoded.train_counts
    assert vocab.coverage(counts, 1) == pytest.approx(4 / 9)
    assert vocab.coverage(counts, 2) == pytest.approx(6 / 9)
    assert vocab.coverage(counts, 5) == 1.0
    hist = vocab.id_histogram(encoded.ids["validation"], len(encoded.words))
    # validation tokens: the zebra cat dog dog unseen -> 2 unseen; at K=2 dog is cut too.
    assert vocab.oov_rate(hist, 5) == pytest.approx(2 / 6)
    assert vocab.oov_rate(hist, 2) == pytest.approx(4 / 6)
    assert vocab.min_frequency(counts, 1) == 4
    assert vocab.min_frequency(counts, 2) == 2
    assert vocab.min_frequency(counts, 99) == 1


def test_long_documents_are_truncated_to_max_length():
    corpus = make_corpus(["a b c d e f", "a"], ["a b c"], ["a"])
    encoded = vocab.build(corpus, TOKENIZER, max_length=4)
    assert encoded.ids["train"].shape == (2, 4)
    assert encoded.lengths["train"].tolist() == [4, 1]


def test_padding_row_stays_zero_and_gets_no_gradient(encoded):
    torch.manual_seed(0)
    model = BagClassifier(num_embeddings=7, embedding_dim=4, num_classes=2, hidden_dim=3)
    assert torch.count_nonzero(model.frontend.embed.weight[vocab.PAD]) == 0
    optimizers = Optimizers(model, lr=0.1)
    ids, labels = encoded.ids["train"], torch.tensor([0, 1, 0])
    for _ in range(3):
        optimizers.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(ids), labels)
        loss.backward()
        grad = model.frontend.embed.weight.grad.to_dense()
        assert torch.count_nonzero(grad[vocab.PAD]) == 0
        assert torch.count_nonzero(grad) > 0
        optimizers.step()
    assert torch.count_nonzero(model.frontend.embed.weight[vocab.PAD]) == 0


def cache_cfg(tmp_path, **tokenizer):
    return OmegaConf.create(
        {
            "cache_dir": str(tmp_path / "cache"),
            "max_length": 16,
            "tokenizer": {**TOKENIZER, **tokenizer},
        }
    )


def test_cache_skips_tokenizing_and_never_goes_stale(tmp_path, monkeypatch):
    corpus = make_corpus(["a b", "b c"], ["a"], ["c"], fingerprint="one")
    first, key = vocab.load_or_build(corpus, cache_cfg(tmp_path))
    assert (tmp_path / "cache" / f"encoded-{key}.pt").is_file()

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again although the cache holds this corpus")

    monkeypatch.setattr(vocab, "build", no_tokenizing)
    again, same_key = vocab.load_or_build(corpus, cache_cfg(tmp_path))
    assert same_key == key
    assert torch.equal(again.ids["train"], first.ids["train"])
    assert again.words == first.words
    monkeypatch.undo()

    # Changed source content or any tokenizer setting: a different key, a fresh build.
    changed = make_corpus(["a b", "b c"], ["a"], ["c"], fingerprint="two")
    assert vocab.load_or_build(changed, cache_cfg(tmp_path))[1] != key
    assert vocab.load_or_build(corpus, cache_cfg(tmp_path, lowercase=False))[1] != key
    assert vocab.load_or_build(corpus, cache_cfg(tmp_path, pattern=r"\S+"))[1] != key
    keys = {key}
    for setting in (
        {"normalize": "NFC"},
        {"normalize": None},
        {"word_ngrams": 2},
        {"char_ngrams": [3, 5]},
        {"char_ngrams": [2, 5]},
    ):
        keys.add(vocab.load_or_build(corpus, cache_cfg(tmp_path, **setting))[1])
    assert len(keys) == 6
    longer = OmegaConf.merge(cache_cfg(tmp_path), {"max_length": 17})
    assert vocab.load_or_build(corpus, longer)[1] != key


def test_damaged_cache_is_rebuilt(tmp_path):
    corpus = make_corpus(["a b", "b c"], ["a"], ["c"])
    _, key = vocab.load_or_build(corpus, cache_cfg(tmp_path))
    (tmp_path / "cache" / f"encoded-{key}.pt").write_bytes(b"not a torch file")
    encoded, _ = vocab.load_or_build(corpus, cache_cfg(tmp_path))
    assert encoded.words[2:] == ["b", "a", "c"]


def test_unicode_normalisation_and_case():
    nfkc = vocab.Tokenizer(r"\w+", lowercase=True, normalize="NFKC")
    # Full-width letters, a ligature and a composed vs decomposed accent all meet.
    assert nfkc("ＡＢＣ ﬁne Cafe\u0301 CAFÉ") == ["abc", "fine", "café", "café"]
    raw = vocab.Tokenizer(r"\w+", lowercase=False, normalize=None)
    assert raw("ＡＢＣ Café") == ["ＡＢＣ", "Café"]
    with pytest.raises(ValueError, match="data.tokenizer.normalize='NFX'"):
        vocab.Tokenizer(r"\w+", normalize="NFX")


def test_word_bigrams_follow_each_word_like_fasttext():
    tokenizer = vocab.Tokenizer(r"\w+", word_ngrams=2)
    assert tokenizer("The cat sat") == ["the", "cat", "the cat", "sat", "cat sat"]
    trigrams = vocab.Tokenizer(r"\w+", word_ngrams=3)
    assert trigrams("a b c")[-3:] == ["c", "b c", "a b c"]


def test_character_ngrams_of_the_marked_word():
    tokenizer = vocab.Tokenizer(r"\w+", char_ngrams=[3, 4])
    assert tokenizer("cat") == ["cat", "#<ca", "#cat", "#at>", "#<cat", "#cat>"]
    with pytest.raises(ValueError, match=r"data.tokenizer.char_ngrams"):
        vocab.Tokenizer(r"\w+", char_ngrams=[4, 3])


def test_ngrams_enter_the_vocabulary_and_are_cut_like_words():
    corpus = make_corpus(["good movie", "bad movie", "good movie"], ["good movie"], ["bad"])
    cfg = OmegaConf.create({**TOKENIZER, "word_ngrams": 2})
    encoded = vocab.build(corpus, cfg, max_length=8)
    assert encoded.words[2:5] == ["movie", "good", "good movie"]
    assert encoded.ids["validation"][0, :3].tolist() == [3, 2, 4]
    # Truncation keeps whole feature runs from the front: word, then the bigram ending at it.
    short = vocab.build(corpus, cfg, max_length=2)
    assert short.ids["validation"][0].tolist() == [3, 2]


def random_corpus(seed: int, docs: int = 300) -> Corpus:
    """Texts of a small Zipf-like vocabulary, some long (past max_length), some empty."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(60)]
    weights = 1.0 / np.arange(1, 61)
    weights /= weights.sum()

    def text() -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(0, 40)), p=weights))

    split = {"train": docs, "validation": docs // 5, "test": docs // 5}
    return make_corpus(*([text() for _ in range(n)] for n in split.values()))


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("max_length", [7, 200])
def test_ngrams_from_the_word_ids_equal_the_tokenizers(order, max_length):
    """Unbounded, the n-grams derived from the word ids are the tokenizer's, id for id: the
    words, their ranking and counts, every split's ids and lengths, truncation included."""
    corpus = random_corpus(order * 10 + max_length)
    cfg = OmegaConf.create({**TOKENIZER, "word_ngrams": order})
    derived = vocab.build(corpus, cfg, max_length)
    tokenized = vocab.build(corpus, cfg, max_length, derive_ngrams=False)
    assert derived.words == tokenized.words
    assert torch.equal(derived.train_counts, tokenized.train_counts)
    for split in ("train", "validation", "test"):
        assert torch.equal(derived.lengths[split], tokenized.lengths[split]), split
        assert torch.equal(derived.ids[split], tokenized.ids[split]), split
    assert derived.train_unknown == 0


def test_the_ngram_table_is_bounded_by_count_and_by_rows():
    """data.ngram_min_count leaves out the rarer n-grams (they read as <unk>, uncovered);
    data.max_ngrams keeps that many, the most frequent; words all stay."""
    corpus = random_corpus(1)
    cfg = OmegaConf.create({**TOKENIZER, "word_ngrams": 2})
    full = vocab.build(corpus, cfg, 200)
    bounded = vocab.build(corpus, cfg, 200, ngram_bounds=(3, None))
    grams = {w: int(c) for w, c in zip(full.words, full.train_counts.tolist(), strict=True)
             if " " in w}  # fmt: skip
    kept = [w for w in bounded.words if " " in w]
    assert sorted(kept) == sorted(w for w, c in grams.items() if c >= 3) and len(kept) < len(grams)
    assert [w for w in bounded.words if " " not in w] == [w for w in full.words if " " not in w]
    dropped = sum(c for c in grams.values() if c < 3)
    assert bounded.train_unknown == dropped
    assert int((bounded.ids["train"] == vocab.UNK).sum()) == dropped  # each a <unk> token
    total = int(full.train_counts.sum())
    assert vocab.coverage(bounded.train_counts, len(bounded.words), bounded.train_unknown) == (
        pytest.approx((total - dropped) / total))  # fmt: skip
    capped = vocab.build(corpus, cfg, 200, ngram_bounds=(1, 25))
    kept = [w for w in capped.words if " " in w]
    assert len(kept) == 25
    assert min(grams[w] for w in kept) >= max(c for w, c in grams.items() if w not in kept)


def test_ngrams_are_derived_from_the_cached_word_encoding_without_tokenizing(tmp_path,
                                                                            monkeypatch):  # fmt: skip
    corpus = random_corpus(2)
    words, word_key = vocab.load_or_build(corpus, cache_cfg(tmp_path), keep_streams=True)
    assert words.streams is not None and (tmp_path / "cache" / f"streams-{word_key}.pt").is_file()
    plain, _ = vocab.load_or_build(corpus, cache_cfg(tmp_path))
    assert plain.streams is None  # streams are read only when asked for

    def no_tokenizing(self, text):
        raise AssertionError("tokenized again although the word encoding is cached")

    monkeypatch.setattr(vocab.Tokenizer, "__call__", no_tokenizing)
    bigrams, key = vocab.load_or_build(corpus, cache_cfg(tmp_path, word_ngrams=2))
    assert any(" " in w for w in bigrams.words) and key != word_key
    bounded_cfg = OmegaConf.merge(cache_cfg(tmp_path, word_ngrams=2), {"ngram_min_count": 2})
    assert vocab.load_or_build(corpus, bounded_cfg)[1] != key


def test_word_ngrams_refuse_a_pattern_whose_tokens_hold_a_space():
    corpus = make_corpus(["a b c", "a b"], ["a"], ["b"])
    cfg = OmegaConf.create({"pattern": r"\w+ \w+|\w+", "lowercase": True, "normalize": None,
                            "word_ngrams": 2})  # fmt: skip
    with pytest.raises(ValueError, match=r"data\.tokenizer\.pattern yields tokens holding a space"):
        vocab.load_or_build(corpus, OmegaConf.create({"max_length": 8, "tokenizer": cfg}))
