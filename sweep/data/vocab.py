"""Stage 2, vocabulary: tokenize once, rank words by train frequency, encode every split once.

Ids are ranked by train-split frequency: 0 = ``<pad>``, 1 = ``<unk>``, 2 = the most frequent train
word, and so on. Keeping the K most frequent words is then one vectorised op per trial
(``cut``), never a re-tokenization. The encoded corpus is cached under ``data.cache_dir`` keyed
by the corpus fingerprint (source contents, split settings) and every tokenizer setting.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sweep.common.atomic import replacing
from sweep.common.digest import json_digest
from sweep.data import ngrams
from sweep.data.corpus import SPLITS, Corpus

log = logging.getLogger(__name__)

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
CACHE_VERSION = 2  # bump when the cached layout or the encoding changes


@dataclass
class Encoded:
    """The corpus as tensors: padded id matrices, lengths and labels per split, and counts."""

    ids: dict[str, torch.Tensor]  # (docs, max_length) int32, PAD-filled
    lengths: dict[str, torch.Tensor]  # (docs,) int64, tokens kept per document
    labels: dict[str, torch.Tensor]  # (docs,) int64 class ids
    train_counts: torch.Tensor  # (vocab + 2,) int64 train-token count per id, specials 0
    words: list[str]  # id -> word, specials included
    label_names: list[str]
    # Per split, (every document's word ids laid end to end, untruncated; their counts): what
    # word n-grams are derived from (sweep.data.ngrams) without tokenizing again. Only a word
    # encoding that n-grams will be derived from keeps them (None otherwise, and in old caches).
    streams: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    # Train tokens no id stands for (n-grams under data.ngram_min_count / data.max_ngrams: they
    # read as <unk>): in the coverage's total, never covered.
    train_unknown: int = 0
    # A subword encoding's plain data (sweep.data.subword): the distinct words, each split's
    # word stream, the merges; what a trial's smaller vocabulary is cut from. None otherwise.
    subwords: dict | None = None

    @property
    def full_vocab_size(self) -> int:
        """Number of distinct train words (the largest meaningful cutoff K)."""
        return len(self.words) - len(SPECIALS)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


class Tokenizer:
    """Unicode normalisation, optional lowercasing, a regex word pattern and optional n-grams.

    ``word_ngrams`` n > 1 adds the word n-grams ending at each word, as fastText's ``wordNgrams``
    (joined by a space, which the default pattern never yields inside a token); ``char_ngrams``
    ``[min, max]`` adds the character n-grams of ``<word>`` as fastText's ``minn``/``maxn``
    (prefixed by ``#``, which the default pattern never yields inside a token, so they cannot
    collide with words). The features of a word follow it, so truncation to ``data.max_length``
    keeps the n-grams of the words it keeps.
    """

    def __init__(
        self,
        pattern: str,
        lowercase: bool = True,
        normalize: str | None = "NFKC",
        word_ngrams: int = 1,
        char_ngrams=None,
    ):
        try:
            self.regex = re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"data.tokenizer.pattern={pattern!r} is not a regex: {error}"
            ) from error
        if normalize:
            try:
                unicodedata.normalize(normalize, "a")
            except ValueError as error:
                raise ValueError(
                    f"data.tokenizer.normalize={normalize!r} is not a Unicode normal form: "
                    "use NFC, NFKC, NFD, NFKD or null"
                ) from error
        if int(word_ngrams) < 1:
            raise ValueError(f"data.tokenizer.word_ngrams must be at least 1, got {word_ngrams}")
        if char_ngrams is not None:
            char_ngrams = list(char_ngrams)
            if len(char_ngrams) != 2 or not 1 <= int(char_ngrams[0]) <= int(char_ngrams[1]):
                raise ValueError(
                    f"data.tokenizer.char_ngrams={char_ngrams} must be null or [min, max] with "
                    "1 <= min <= max, e.g. [3, 6] as fastText"
                )
        self.lowercase = lowercase
        self.normalize = normalize
        self.word_ngrams = int(word_ngrams)
        self.char_ngrams = None if char_ngrams is None else tuple(int(n) for n in char_ngrams)

    @classmethod
    def from_config(cls, cfg) -> Tokenizer:
        """Build from ``data.tokenizer`` (every key optional but ``pattern``)."""
        return cls(
            cfg.pattern,
            cfg.get("lowercase", True),
            cfg.get("normalize"),
            cfg.get("word_ngrams", 1),
            cfg.get("char_ngrams"),
        )

    def __call__(self, text: str) -> list[str]:
        if self.normalize:
            text = unicodedata.normalize(self.normalize, text)
        if self.lowercase:
            text = text.lower()
        words = self.regex.findall(text)
        if self.word_ngrams == 1 and self.char_ngrams is None:
            return words
        return self.with_ngrams(words)

    def with_ngrams(self, words: list[str]) -> list[str]:
        """Each word followed by its character n-grams and the word n-grams ending at it."""
        out: list[str] = []
        low, high = self.char_ngrams or (0, -1)
        for i, word in enumerate(words):
            out.append(word)
            if self.char_ngrams:
                marked = f"<{word}>"
                for n in range(low, min(high, len(marked)) + 1):
                    out.extend("#" + marked[j : j + n] for j in range(len(marked) - n + 1))
            for n in range(2, min(self.word_ngrams, i + 1) + 1):
                out.append(" ".join(words[i - n + 1 : i + 1]))
        return out


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


def coverage(train_counts: torch.Tensor, vocab_size: int, unknown: int = 0) -> float:
    """Fraction of train tokens whose word is among the ``vocab_size`` most frequent
    (``unknown``: train tokens no id stands for, counted in the total)."""
    total = int(train_counts.sum()) + unknown
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


def derives_ngrams(tokenizer_cfg) -> bool:
    """Word n-grams are made from the word ids (``sweep.data.ngrams``), not by the tokenizer:
    ``word_ngrams`` above 1 without character n-grams (those need each word's text)."""
    return int(tokenizer_cfg.get("word_ngrams", 1)) > 1 and tokenizer_cfg.get("char_ngrams") is None


def words_only(tokenizer_cfg):
    """The tokenizer settings with ``word_ngrams=1``: the word encoding n-grams come from."""
    settings = (OmegaConf.to_container(tokenizer_cfg, resolve=True)
                if isinstance(tokenizer_cfg, DictConfig) else dict(tokenizer_cfg))  # fmt: skip
    return OmegaConf.create({**settings, "word_ngrams": 1})


def build(corpus: Corpus, tokenizer_cfg, max_length: int, keep_streams: bool = False,
          ngram_bounds: tuple[int, int | None] = (1, None),
          derive_ngrams: bool = True) -> Encoded:  # fmt: skip
    """Tokenize every split once, count words on train, rank, and encode to padded tensors.

    One streaming pass per split: each document's tokens become provisional ids (first-seen
    order) at once, so no token list outlives its document; ranking by count is then a
    permutation of the ids. Memory stays near the size of the id arrays, not the token lists.
    ``keep_streams``: keep every document's word ids untruncated (``Encoded.streams``). Word
    n-grams are derived from the word encoding (``derives_ngrams``), bounded by
    ``ngram_bounds`` (``data.ngram_min_count``, ``data.max_ngrams``); ``derive_ngrams=False``
    has the tokenizer make them from each text instead (the same ids with no bound: a test
    holds them equal).
    """
    if max_length < 1:
        raise ValueError(f"data.max_length must be at least 1, got {max_length}")
    if derive_ngrams and derives_ngrams(tokenizer_cfg):
        words = build(corpus, words_only(tokenizer_cfg), max_length, keep_streams=True)
        return with_ngrams(words, int(tokenizer_cfg.word_ngrams), max_length, ngram_bounds)
    tokenizer = Tokenizer.from_config(tokenizer_cfg)
    index: dict[str, int] = {}  # word -> provisional id, train words only
    flat, lengths, full = {}, {}, {}
    counts = np.zeros(0, dtype=np.int64)
    for split in SPLITS:
        flat[split], lengths[split], split_counts, full[split] = tokenize_split(
            corpus.texts[split], tokenizer, index, grow=split == "train", max_length=max_length,
            keep_full=keep_streams,
        )  # fmt: skip
        if split == "train":
            counts = split_counts
    if not index:
        raise ValueError(
            "data.tokenizer.pattern found no tokens in the train split; check the pattern "
            "and data.text_column"
        )
    provisional = list(index)
    del index
    # Rank by count, ties broken by the word itself so the ids are deterministic.
    count_list = counts.tolist()
    order = sorted(range(len(provisional)), key=lambda i: (-count_list[i], provisional[i]))
    words = [*SPECIALS, *(provisional[i] for i in order)]
    rank = np.empty(len(order) + 1, dtype=np.int32)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(SPECIALS), len(words), dtype=np.int32)
    rank[-1] = UNK  # provisional id -1: a word never seen in train
    train_counts = torch.from_numpy(np.concatenate([[0, 0], counts[order]]).astype(np.int64))

    ids = {split: pad(rank[flat[split]], lengths[split]) for split in SPLITS}
    lengths = {split: torch.from_numpy(lengths[split]) for split in SPLITS}
    labels = {split: torch.tensor(corpus.labels[split]) for split in SPLITS}
    streams = None
    if keep_streams:
        streams = {split: (torch.from_numpy(rank[full[split][0]]), torch.from_numpy(full[split][1]))
                   for split in SPLITS}  # fmt: skip
    log.info(
        "vocabulary: %d train words, %d train tokens; max_length %d",
        len(order),
        int(train_counts.sum()),
        ids["train"].shape[1],
    )
    return Encoded(ids, lengths, labels, train_counts, words, list(corpus.label_names), streams)


def with_ngrams(words: Encoded, order: int, max_length: int,
                ngram_bounds: tuple[int, int | None] = (1, None)) -> Encoded:  # fmt: skip
    """The word encoding ``words`` (which keeps its streams) with word n-grams up to ``order``
    after each word, bounded by ``ngram_bounds`` (``sweep.data.ngrams``): no text is read."""
    if words.streams is None:
        raise ValueError("word n-grams are derived from a word encoding that keeps its streams")
    flat, lengths, counts, texts, unknown = ngrams.derive(
        words.streams, words.words, words.train_counts, order, max_length, *ngram_bounds,
        specials=len(SPECIALS), unk=UNK,
    )  # fmt: skip
    ids = {split: pad(flat[split], lengths[split]) for split in SPLITS}
    log.info("vocabulary: %d train words and n-grams, %d train tokens; max_length %d",
             len(texts) - len(SPECIALS), int(counts.sum()), ids["train"].shape[1])  # fmt: skip
    return Encoded(ids, {s: torch.from_numpy(lengths[s]) for s in SPLITS}, dict(words.labels),
                   counts, texts, list(words.label_names), train_unknown=unknown)  # fmt: skip


_CHUNK = 20_000  # documents per vectorised step: bounds the Python id lists' memory


def tokenize_split(texts, tokenizer, index: dict[str, int], *, grow: bool, max_length: int,
                   keep_full: bool = False):  # fmt: skip
    """Provisional ids of the kept tokens (flat), kept tokens per document, id counts, and
    with ``keep_full`` (every token's provisional id, tokens per document) untruncated.

    With ``grow`` new words get the next provisional id; otherwise they are -1 (unseen in
    train). Counts cover every token, also past ``max_length``, so that the ranking and
    the coverage figures describe the whole train split.
    """
    pieces, lengths = [], np.empty(len(texts), dtype=np.int64)
    whole, whole_lengths = [], np.empty(len(texts), dtype=np.int64)
    counts = np.zeros(len(index), dtype=np.int64)
    lookup = index.setdefault if grow else index.get
    for start in range(0, len(texts), _CHUNK):
        chunk_ids: list[int] = []
        full = np.empty(min(_CHUNK, len(texts) - start), dtype=np.int64)
        for j, text in enumerate(texts[start : start + _CHUNK]):
            tokens = tokenizer(text)
            full[j] = len(tokens)
            if grow:
                chunk_ids.extend([lookup(w, len(index)) for w in tokens])
            else:
                chunk_ids.extend([lookup(w, -1) for w in tokens])
        chunk = np.asarray(chunk_ids, dtype=np.int64)
        if grow:
            counts = np.bincount(chunk, minlength=len(index)) + np.pad(
                counts, (0, len(index) - len(counts))
            )
        # Keep the first max_length tokens of each document.
        pieces.append(chunk[positions(full) < max_length].astype(np.int32))
        lengths[start : start + len(full)] = np.minimum(full, max_length)
        if keep_full:
            whole.append(chunk.astype(np.int32))
            whole_lengths[start : start + len(full)] = full
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    kept = None
    if keep_full:
        kept = (np.concatenate(whole) if whole else np.zeros(0, dtype=np.int32), whole_lengths)
    return flat, lengths, counts, kept


def pad(flat: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    """Scatter flat ids into a PAD-filled (documents, longest) int32 matrix."""
    width = max(int(lengths.max(initial=0)), 1)
    matrix = np.zeros((len(lengths), width), dtype=np.int32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    matrix[rows, positions(lengths)] = flat
    return torch.from_numpy(matrix)


def positions(lengths: np.ndarray) -> np.ndarray:
    """Each token's position within its document, for documents of ``lengths`` laid end to end."""
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def cache_key(corpus: Corpus, tokenizer_cfg, max_length: int) -> str:
    """Digest of everything the encoded corpus depends on."""
    tokenizer = _plain(tokenizer_cfg)
    tokenizer.setdefault("word_ngrams", 1)  # a word encoding is one, however it is spelled
    identity = {
        "version": CACHE_VERSION,
        "corpus": corpus.fingerprint,
        "tokenizer": tokenizer,
        "max_length": max_length,
    }
    return json_digest(identity, 24)


def ngram_bounds(data_cfg) -> tuple[int, int | None]:
    """(``data.ngram_min_count``, ``data.max_ngrams``): what bounds the word n-gram rows."""
    limit = data_cfg.get("max_ngrams")
    return int(data_cfg.get("ngram_min_count", 1)), None if limit is None else int(limit)


def ngram_key(word_key: str, data_cfg) -> str:
    """The key of the n-gram encoding derived from the word encoding ``word_key``."""
    order = int(data_cfg.tokenizer.word_ngrams)
    return json_digest({"words": word_key, "order": order, "bounds": ngram_bounds(data_cfg)}, 24)


def load_or_build(corpus: Corpus, data_cfg, keep_streams: bool = False) -> tuple[Encoded, str]:
    """Return the encoded corpus and its cache key, from ``data.cache_dir`` when it holds it.
    Word n-grams (``derives_ngrams``) are derived from the word encoding, itself cached;
    ``keep_streams``: the word encoding keeps its streams, to derive n-grams later."""
    tokenizer, max_length = data_cfg.tokenizer, int(data_cfg.max_length)
    if derives_ngrams(tokenizer):
        word_cfg = OmegaConf.create(
            {**_plain(data_cfg), "tokenizer": _plain(words_only(tokenizer))}
        )
        words, word_key = load_or_build(corpus, word_cfg, keep_streams=True)
        return derived(words, word_key, data_cfg)
    # A word encoding's streams are built when asked for, or to be cached beside it (a later
    # run may derive n-grams from the cache); with no cache and no use they are never made.
    words = tokenizer.get("char_ngrams") is None
    streams = words and (keep_streams or bool(data_cfg.get("cache_dir")))
    key = cache_key(corpus, tokenizer, max_length)
    return cached(
        key, data_cfg, lambda: build(corpus, tokenizer, max_length, keep_streams=streams),
        keep_streams=keep_streams and words,
    ), key  # fmt: skip


def derived(words: Encoded, word_key: str, data_cfg) -> tuple[Encoded, str]:
    """The n-gram encoding ``data_cfg`` asks for, derived from the word encoding ``words``
    (with streams; ``word_key`` its key), from the cache when it holds it."""
    spaced = next((w for w in words.words if " " in w), None)
    if spaced is not None:  # "a b" the word and "a b" the bigram would be one token
        raise ValueError(
            f"data.tokenizer.pattern yields tokens holding a space ({spaced!r}); word n-grams "
            "(data.tokenizer.word_ngrams > 1) join words with a space: use a pattern whose "
            "tokens hold none"
        )
    key = ngram_key(word_key, data_cfg)
    order, max_length = int(data_cfg.tokenizer.word_ngrams), int(data_cfg.max_length)
    make = lambda: with_ngrams(words, order, max_length, ngram_bounds(data_cfg))  # noqa: E731
    return cached(key, data_cfg, make), key


def _plain(data_cfg) -> dict:
    if isinstance(data_cfg, DictConfig):
        return OmegaConf.to_container(data_cfg, resolve=True)
    return dict(data_cfg)


def cached(key: str, data_cfg, make, keep_streams: bool = False, check=None) -> Encoded:
    """The encoding of ``key``: from ``data.cache_dir`` when it holds it (with its streams when
    ``keep_streams``: they sit in a file of their own, read only when asked), else ``make()``,
    cached. A damaged cache is rebuilt, never trusted; one that cannot be written is skipped.
    ``check``: what else a cached encoding must pass (raises ``ValueError`` otherwise)."""
    cache_dir = data_cfg.get("cache_dir")
    if not cache_dir:
        encoded = make()
        return encoded if keep_streams else _without_streams(encoded)
    folder = Path(cache_dir).expanduser()
    path, streams_path = folder / f"encoded-{key}.pt", folder / f"streams-{key}.pt"
    if path.is_file() and (not keep_streams or streams_path.is_file()):
        try:
            encoded = Encoded(**_tensors_only(torch.load(path, weights_only=True)))
            if check is not None:
                check(encoded)
            if keep_streams:
                encoded.streams = torch.load(streams_path, weights_only=True)
            log.info("encoded corpus: loaded from cache %s", path)
            return encoded
        except Exception as error:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s); rebuilding", path, error)
    encoded = make()
    try:
        with replacing(path) as tmp:  # a half-written cache is never read
            torch.save(_without_streams(encoded).__dict__, tmp)
        if encoded.streams is not None:  # after it: streams without their encoding never stay
            with replacing(streams_path) as tmp:
                torch.save(encoded.streams, tmp)
    except (OSError, RuntimeError) as error:  # full disk, read-only folder: torch says RuntimeError
        # The cache only saves the next run its tokenizing: go on without it.
        log.warning(
            "data.cache_dir: could not write the encoded-corpus cache %s (%s); going on "
            "without it (the next run tokenizes again)",
            path,
            str(error).strip().splitlines()[0][:200]
            if str(error).strip()
            else type(error).__name__,
        )
        return encoded if keep_streams else _without_streams(encoded)
    log.info("encoded corpus: cached at %s", path)
    return encoded if keep_streams else _without_streams(encoded)


def _without_streams(encoded: Encoded) -> Encoded:
    if encoded.streams is None:
        return encoded
    return Encoded(**{**encoded.__dict__, "streams": None})


_ENCODED_KEYS = {"ids", "lengths", "labels", "train_counts", "words", "label_names", "streams",
                 "train_unknown", "subwords"}  # fmt: skip


def _tensors_only(stored) -> dict:
    """A cache file's mapping, read against ``Encoded``'s fields (an older file lacks the new
    ones; an unknown key is a damaged or foreign file)."""
    if not isinstance(stored, dict) or not set(stored) <= _ENCODED_KEYS:
        raise ValueError("not an encoded corpus of this tool")
    return stored
