"""Word n-grams from the word ids: counted on train, bounded, interleaved after each word.

``data.tokenizer.word_ngrams=N`` adds, after each word, the word n-grams (2..N) that end at it,
as fastText's ``wordNgrams`` does (``vocab.Tokenizer.with_ngrams`` says the same for one text).
Tokenizing the texts again with n-grams costs as much as the first pass, and the n-gram
vocabulary grows with the corpus (11.46M distinct train "words" on a 1M-document corpus with
bigrams, almost all of them seen once). Here the n-grams are made from the word encoding's
streams instead (``Encoded.streams``: every document's word ids, untruncated): each n-gram is an
integer key of the ids of its words, counted on train with one sort; the table is bounded by
``data.ngram_min_count`` (an n-gram seen fewer times in train is ``<unk>``, as a word past the
cutoff is) and ``data.max_ngrams`` (only that many of the most frequent n-grams are kept).

Words and kept n-grams are then ranked together by train count (ties by their text, as the
tokenizer path ranks them), so the cutoff K keeps the K most frequent of either, and every split
is encoded as the tokenizer path encodes it: each word followed by its n-grams, truncated to
``data.max_length``. With ``ngram_min_count=1`` and no ``max_ngrams`` the result is the tokenizer
path's, id for id (``tests/test_vocab.py``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from sweep.data.corpus import SPLITS

log = logging.getLogger(__name__)


def positions_in_docs(lengths: np.ndarray) -> np.ndarray:
    """Each token's position within its document, for documents of ``lengths`` end to end."""
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)


def tokens_per_doc(words: np.ndarray, order: int) -> np.ndarray:
    """Tokens of documents of ``words`` words each with n-grams up to ``order``: word i brings
    itself and min(i, order - 1) n-grams."""
    words = words.astype(np.int64)
    m = order - 1
    short = words * (words - 1) // 2  # sum of i for i < words, all below m + 1
    long = m * (m + 1) // 2 + (words - 1 - m) * m
    return words + np.where(words <= m + 1, short, long)


def _gram_keys(prefix: np.ndarray, words: np.ndarray, position: np.ndarray, order: int,
               base: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(where an n-gram of ``order`` ends, its key): the (n-1)-gram ending one word before
    (``prefix``: its train index, -1 where none) times ``base`` plus the word's id."""
    where = np.flatnonzero(position >= order - 1)
    before = prefix[where - 1]
    found = before >= 0
    where = where[found]
    return where, before[found].astype(np.int64) * base + words[where]


class _Order:
    """The n-grams of one order in train: their sorted keys and counts."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray):
        self.keys, self.counts = keys, counts

    def index(self, keys: np.ndarray) -> np.ndarray:
        """Each key's index among train's n-grams of this order, -1 where train has none."""
        at = np.searchsorted(self.keys, keys)
        at_clipped = np.minimum(at, max(len(self.keys) - 1, 0))
        hit = (at < len(self.keys)) & (self.keys[at_clipped] == keys) if len(self.keys) else (
            np.zeros(len(keys), dtype=bool))  # fmt: skip
        return np.where(hit, at_clipped, -1)


def derive(
    streams: dict[str, tuple[torch.Tensor, torch.Tensor]],
    words: list[str],
    train_counts: torch.Tensor,
    order: int,
    max_length: int,
    min_count: int = 1,
    max_ngrams: int | None = None,
    *,
    specials: int,
    unk: int,
):  # fmt: skip
    """Words and their n-grams up to ``order``, from a word encoding (``streams``, ``words``
    and ``train_counts`` of ``sweep.data.vocab.Encoded``; ``specials`` ids before the first
    word, ``unk`` the id of an unknown token): per split the kept tokens laid end to end and the
    tokens kept per document, the new train counts, the new id -> text list, and how many train
    tokens are n-grams left out by the bound. See the module docstring."""
    started = time.perf_counter()
    grams, orders = _count(streams, len(words), order)
    kept = _bounded(orders, min_count, max_ngrams)
    entries = _ranked(words, train_counts.numpy()[specials:], orders, kept, specials, max_ngrams)
    word_rank = np.arange(len(words), dtype=np.int32)  # the specials keep their ids
    gram_rank = [np.full(len(o.keys) + 1, unk, dtype=np.int32) for o in orders]  # [-1]: none
    for rank, (_, _, n, i) in enumerate(entries, start=specials):
        if n == 0:
            word_rank[i + specials] = rank
        else:
            gram_rank[n - 2][i] = rank
    counts = torch.tensor([0] * specials + [e[0] for e in entries], dtype=torch.int64)
    # Train tokens of n-grams under the bound: <unk> in the encoding, uncovered at every cutoff.
    unknown = sum(int(o.counts.sum()) for o in orders) - int(counts.sum()) + int(
        train_counts[specials:].sum())  # fmt: skip
    tokens, lengths = {}, {}
    for split in SPLITS:
        columns = [word_rank, *gram_rank]
        tokens[split], lengths[split] = _interleaved(streams[split], grams[split], columns,
                                                     order, max_length)  # fmt: skip
    log.info(
        "word n-grams up to %d from the word ids: %d of %d distinct train n-grams kept "
        "(data.ngram_min_count=%d, data.max_ngrams=%s) in %.1fs; %d train words and n-grams",
        order, len(entries) - (len(words) - specials), sum(len(o.keys) for o in orders),
        min_count, max_ngrams, time.perf_counter() - started, len(entries),
    )  # fmt: skip
    return tokens, lengths, counts, [*words[:specials], *(e[1] for e in entries)], unknown


def _count(streams, base: int, order: int) -> tuple[dict[str, list[np.ndarray]], list[_Order]]:
    """(per split, per order 2..N: the train index of the n-gram ending at each word, -1 where
    train has none; per order: train's n-grams and counts). ``base``: every word id is below
    it, so a key is (its prefix's train index) * base + word."""
    grams: dict[str, list[np.ndarray]] = {}
    orders: list[_Order] = []
    for split in ("train", *[s for s in SPLITS if s != "train"]):  # train first: it indexes
        flat, lengths = (t.numpy() for t in streams[split])
        position = positions_in_docs(lengths)
        prefix = flat.astype(np.int64)  # the words themselves: the "1-grams"
        grams[split] = []
        for n in range(2, order + 1):
            where, keys = _gram_keys(prefix, flat, position, n, base)
            if split == "train":
                unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
                orders.append(_Order(unique, counts))
                index = inverse.astype(np.int64)
            else:
                index = orders[n - 2].index(keys)
            prefix = np.full(len(flat), -1, dtype=np.int64)
            prefix[where] = index
            grams[split].append(prefix)
    return grams, orders


def _bounded(orders: list[_Order], min_count: int, max_ngrams: int | None) -> list[np.ndarray]:
    """Per order, the indices of the n-grams seen at least ``min_count`` times in train; with
    ``max_ngrams``, only those counted at least as often as the last of the most frequent
    ``max_ngrams`` (its ties are trimmed by the ranking, in text order)."""
    kept = [np.flatnonzero(o.counts >= max(min_count, 1)) for o in orders]
    total = sum(len(k) for k in kept)
    if max_ngrams is not None and total > max_ngrams:
        counts = np.concatenate([o.counts[k] for o, k in zip(orders, kept, strict=True)])
        floor = np.partition(counts, total - max_ngrams)[total - max_ngrams]
        kept = [k[o.counts[k] >= floor] for o, k in zip(orders, kept, strict=True)]
    return kept


def _ranked(words, word_counts, orders, kept, specials: int, max_ngrams: int | None) -> list:
    """Words and kept n-grams as ``(count, text, order, index)`` (order 0: a word), ranked
    together: count descending, then text (as the tokenizer path ranks them); with
    ``max_ngrams``, no more n-grams than that."""
    entries = [(int(c), w, 0, i) for i, (c, w) in enumerate(
        zip(word_counts.tolist(), words[specials:], strict=True))]  # fmt: skip
    for n, (o, k, text) in enumerate(zip(orders, kept, _texts(words, orders, kept), strict=True),
                                     start=2):  # fmt: skip
        entries += [(int(c), t, n, int(i)) for c, t, i in zip(o.counts[k].tolist(), text,
                                                                 k.tolist(), strict=True)]  # fmt: skip
    entries.sort(key=lambda e: (-e[0], e[1]))
    if max_ngrams is None:
        return entries
    seen, trimmed = 0, []
    for entry in entries:  # the floor's ties: the first by text, as ranked
        seen += bool(entry[2])
        if not entry[2] or seen <= max_ngrams:
            trimmed.append(entry)
    return trimmed


def _interleaved(stream, grams: list[np.ndarray], ranks: list[np.ndarray], order: int,
                 max_length: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One split as the tokenizer lays it out: each word's id, then the ids of the n-grams
    ending at it (``ranks[0]`` maps word ids, ``ranks[n - 1]`` n-gram indices), each document
    truncated to ``max_length``; (the kept tokens end to end, tokens kept per document)."""
    flat, lengths = (t.numpy() for t in stream)
    columns = [ranks[0][flat]] + [rank[g] for rank, g in zip(ranks[1:], grams, strict=True)]
    per_word = 1 + np.minimum(positions_in_docs(lengths), order - 1)  # itself and its n-grams
    source = np.repeat(np.arange(len(flat)), per_word)
    slot = np.arange(len(source)) - np.repeat(np.cumsum(per_word) - per_word, per_word)
    tokens = np.stack(columns, axis=1)[source, slot]
    doc_tokens = tokens_per_doc(lengths, order)
    keep = positions_in_docs(doc_tokens) < max_length
    return tokens[keep].astype(np.int32), np.minimum(doc_tokens, max_length).astype(np.int64)


def _text(words: list[str], orders: list[_Order], n: int, index: int) -> str:
    """The text of train's ``index``-th n-gram of order ``n`` ("w1 w2 ..."), from its key."""
    prefix, word = divmod(int(orders[n - 2].keys[index]), len(words))
    head = words[prefix] if n == 2 else _text(words, orders, n - 1, prefix)
    return f"{head} {words[word]}"


def _texts(words: list[str], orders: list[_Order], kept: list[np.ndarray]) -> list[list[str]]:
    """The text of each kept n-gram, order by order."""
    out = []
    for n, (o, k) in enumerate(zip(orders, kept, strict=True), start=2):
        if n == 2:  # the common case, vectorised: a word and a word
            prefix, word = np.divmod(o.keys[k], len(words))
            out.append([f"{words[p]} {words[w]}" for p, w in zip(prefix.tolist(), word.tolist(),
                                                                 strict=True)])  # fmt: skip
        else:
            out.append([_text(words, orders, n, i) for i in k.tolist()])
    return out
