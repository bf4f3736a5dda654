"""Stage 2, vocabulary: tokenize once, rank words by train frequency, encode every split once.

Ids are ranked by train-split frequency: 0 = ``<pad>``, 1 = ``<unk>``, 2 = the most frequent train
word, and so on. Keeping the K most frequent words is then one vectorised op per trial
(``cut``), never a re-tokenization. The encoded corpus is cached under ``data.cache_dir`` keyed
by the corpus fingerprint (source contents, split settings) and every tokenizer setting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sweep.corpus import SPLITS, Corpus

log = logging.getLogger(__name__)

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
CACHE_VERSION = 1  # bump when the cached layout changes


@dataclass
class Encoded:
    """The corpus as tensors: padded id matrices, lengths and labels per split, and counts."""

    ids: dict[str, torch.Tensor]  # (docs, max_length) int32, PAD-filled
    lengths: dict[str, torch.Tensor]  # (docs,) int64, tokens kept per document
    labels: dict[str, torch.Tensor]  # (docs,) int64 class ids
    train_counts: torch.Tensor  # (vocab + 2,) int64 train-token count per id, specials 0
    words: list[str]  # id -> word, specials included
    label_names: list[str]

    @property
    def full_vocab_size(self) -> int:
        """Number of distinct train words (the largest meaningful cutoff K)."""
        return len(self.words) - len(SPECIALS)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


class Tokenizer:
    """Unicode normalisation, optional lowercasing and a regex word pattern."""

    def __init__(self, pattern: str, lowercase: bool = True, normalize: str | None = "NFKC"):
        try:
            self.regex = re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"data.tokenizer.pattern={pattern!r} is not a regex: {error}"
            ) from error
        self.lowercase = lowercase
        self.normalize = normalize

    def __call__(self, text: str) -> list[str]:
        if self.normalize:
            text = unicodedata.normalize(self.normalize, text)
        if self.lowercase:
            text = text.lower()
        return self.regex.findall(text)


# Multiplier of the id hash (Knuth's multiplicative constant): spreads neighbouring ranks apart.
_HASH_MULTIPLIER = 2654435761


def cut(ids: torch.Tensor, vocab_size: int, hash_buckets: int = 0) -> torch.Tensor:
    """Keep the ``vocab_size`` most frequent words; every id >= vocab_size + 2 becomes UNK.

    With ``hash_buckets`` B > 0, a train word past the cutoff goes to one of B shared rows
    (ids K + 2 ... K + 1 + B, by a fixed hash of its rank) instead of UNK; words never seen in
    train stay UNK. Either way the result is below ``vocab_size + 2 + hash_buckets``.
    """
    kept = vocab_size + len(SPECIALS)
    if hash_buckets > 0:
        bucket = kept + (ids.long() * _HASH_MULTIPLIER) % hash_buckets
        return torch.where(ids < kept, ids, bucket.to(ids.dtype))
    return torch.where(ids < kept, ids, torch.full_like(ids, UNK))


def coverage(train_counts: torch.Tensor, vocab_size: int) -> float:
    """Fraction of train tokens whose word is among the ``vocab_size`` most frequent."""
    total = int(train_counts.sum())
    return float(train_counts[: vocab_size + len(SPECIALS)].sum()) / max(total, 1)


def oov_rate(id_histogram: torch.Tensor, vocab_size: int) -> float:
    """Fraction of (non-pad) tokens that are UNK at cutoff ``vocab_size``, from an id histogram."""
    tokens = int(id_histogram[1:].sum())
    unknown = int(id_histogram[UNK]) + int(id_histogram[vocab_size + len(SPECIALS) :].sum())
    return unknown / max(tokens, 1)


def min_frequency(train_counts: torch.Tensor, vocab_size: int) -> int:
    """Train count of the rarest kept word: the minimum-frequency cutoff equivalent to K."""
    if vocab_size < 1:
        return 0
    return int(train_counts[min(vocab_size, len(train_counts) - 2) + 1])


def id_histogram(ids: torch.Tensor, num_ids: int) -> torch.Tensor:
    """Count of every id in a padded id matrix (PAD included at index 0)."""
    return torch.bincount(ids.flatten().long(), minlength=num_ids)


def build(corpus: Corpus, tokenizer_cfg, max_length: int) -> Encoded:
    """Tokenize every split once, count words on train, rank, and encode to padded tensors."""
    if max_length < 1:
        raise ValueError(f"data.max_length must be at least 1, got {max_length}")
    tokenizer = Tokenizer(
        tokenizer_cfg.pattern, tokenizer_cfg.lowercase, tokenizer_cfg.get("normalize")
    )
    tokens = {split: [tokenizer(t) for t in corpus.texts[split]] for split in SPLITS}
    counts = Counter(word for doc in tokens["train"] for word in doc)
    if not counts:
        raise ValueError(
            "data.tokenizer.pattern found no tokens in the train split; check the pattern "
            "and data.text_column"
        )
    # Rank by count, ties broken by the word itself so the ids are deterministic.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    words = [*SPECIALS, *(word for word, _ in ranked)]
    index = {word: i for i, word in enumerate(words)}
    train_counts = torch.tensor([0, 0, *(c for _, c in ranked)], dtype=torch.int64)

    ids, lengths = {}, {}
    for split in SPLITS:
        ids[split], lengths[split] = encode(tokens[split], index, max_length)
    labels = {split: torch.tensor(corpus.labels[split]) for split in SPLITS}
    log.info(
        "vocabulary: %d train words, %d train tokens; max_length %d",
        len(ranked),
        int(train_counts.sum()),
        ids["train"].shape[1],
    )
    return Encoded(ids, lengths, labels, train_counts, words, list(corpus.label_names))


def encode(docs: list[list[str]], index: dict[str, int], max_length: int):
    """Map tokens to ids (UNK when unseen), truncate to ``max_length`` and pad with PAD."""
    flat = np.fromiter(
        (index.get(w, UNK) for doc in docs for w in doc[:max_length]), dtype=np.int32
    )
    lengths = np.fromiter((min(len(doc), max_length) for doc in docs), dtype=np.int64)
    width = max(int(lengths.max(initial=0)), 1)
    matrix = np.zeros((len(docs), width), dtype=np.int32)
    # Scatter the flat ids into the padded matrix: row = document, column = position in it.
    rows = np.repeat(np.arange(len(docs)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(flat.size) - np.repeat(starts, lengths)
    matrix[rows, cols] = flat
    return torch.from_numpy(matrix), torch.from_numpy(lengths)


def cache_key(corpus: Corpus, tokenizer_cfg, max_length: int) -> str:
    """Digest of everything the encoded corpus depends on."""
    identity = {
        "version": CACHE_VERSION,
        "corpus": corpus.fingerprint,
        "tokenizer": {k: tokenizer_cfg[k] for k in sorted(tokenizer_cfg)},
        "max_length": max_length,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def load_or_build(corpus: Corpus, data_cfg) -> tuple[Encoded, str]:
    """Return the encoded corpus and its cache key, from ``data.cache_dir`` when it holds it."""
    key = cache_key(corpus, data_cfg.tokenizer, data_cfg.max_length)
    cache_dir = data_cfg.get("cache_dir")
    if not cache_dir:
        return build(corpus, data_cfg.tokenizer, data_cfg.max_length), key
    path = Path(cache_dir).expanduser() / f"encoded-{key}.pt"
    if path.is_file():
        try:
            encoded = Encoded(**torch.load(path, weights_only=True))
            log.info("encoded corpus: loaded from cache %s", path)
            return encoded, key
        except Exception as error:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s); rebuilding", path, error)
    encoded = build(corpus, data_cfg.tokenizer, data_cfg.max_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    torch.save(encoded.__dict__, tmp)
    os.replace(tmp, path)  # atomic: a half-written cache is never read
    log.info("encoded corpus: cached at %s", path)
    return encoded, key
