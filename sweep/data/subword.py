"""Subword vocabularies (BPE, Hugging Face ``tokenizers``): learned once per study, cut per trial.

The study's words (``sweep.data.vocab.Tokenizer``, the same tokens the word table reads) are
read once; a BPE model is learned on the train split's words, up to ``data.subword_vocab``
pieces. Its merges are ordered, so the model of a smaller vocabulary is a prefix of it: the
pieces up to that size and the merges that made them (``merges_for``). Learning with a smaller
``vocab_size`` gives the same prefix (a test holds it); encoding a word with the prefix model is
what a tokenizer learned at that size does, so a trial never learns or reads text again: it
segments the study's distinct words with its prefix (``Segmenter``), then lays each document's
word stream out as pieces (``expand``), in time linear in the corpus.

Ids: 0 = ``<pad>``, 1 = ``<unk>`` (a character the train split never held), then the alphabet
(single characters, by code point), then each merge's new piece in the order it was learned.
What an encoding keeps besides its padded ids is plain data (``Encoded.subwords``, checked by
``check_payload`` when read back from the cache): the distinct words and their pieces at the
full vocabulary (a cut undoes the merges past it: ``cut``), every split's word stream
(the first ``max_length`` words of each document: a word is at least one piece), the merges as
pairs of strings, the alphabet's size, ``max_length``, and per split the words holding a character outside the
alphabet and all its words (the unknown-rate columns).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from sweep.common.digest import json_digest
from sweep.data import vocab
from sweep.data.corpus import SPLITS, Corpus
from sweep.data.vocab import SPECIALS, UNK, Encoded

# Our forked children (sweep.common.forked) may segment after the parent has: the library's
# thread pool must not be live across a fork (it warns, then runs single-threaded). The user's
# own setting wins.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)

_CHUNK_REPEATS = 1024  # a word repeated this many times per string fed to the trainer


def check_tokenizer(tokenizer_cfg) -> None:
    """A subword vocabulary reads words: no word n-grams, no character n-grams (a word-table
    option each); ``ValueError`` naming the key."""
    ngrams = tokenizer_cfg.get("word_ngrams", 1)
    if ngrams not in (1, None):
        raise ValueError(
            f"data.tokenizer.word_ngrams={ngrams}: model.frontend=subword splits words into "
            "pieces and takes no word n-grams (a word-table option); set "
            "data.tokenizer.word_ngrams=1"
        )
    if tokenizer_cfg.get("char_ngrams") is not None:
        raise ValueError(
            "data.tokenizer.char_ngrams: model.frontend=subword learns its own pieces; set "
            "data.tokenizer.char_ngrams=null"
        )


def load_or_build(corpus: Corpus, data_cfg) -> tuple[Encoded, str]:
    """The subword encoding and its key (its cache key, part of the study signature), from
    ``data.cache_dir`` when it holds it (read back as data: ``check_payload``)."""
    check_tokenizer(data_cfg.tokenizer)
    identity = {
        "subword": "bpe",
        "words": vocab.cache_key(corpus, data_cfg.tokenizer, int(data_cfg.max_length)),
        "pieces": data_cfg.get("subword_vocab"),
    }
    key = json_digest(identity, 24)
    return vocab.cached(key, data_cfg, lambda: build(corpus, data_cfg), check=_checked), key


def _checked(encoded: Encoded) -> None:
    check_payload(encoded.subwords, encoded.words)


def build(corpus: Corpus, data_cfg) -> Encoded:
    """Read every split's words once, learn BPE on train up to ``data.subword_vocab`` pieces,
    segment every distinct word once, and lay the documents out as pieces (module docstring)."""
    check_tokenizer(data_cfg.tokenizer)
    size, max_length = int(data_cfg.get("subword_vocab") or 0), int(data_cfg.max_length)
    if size < 1:
        raise ValueError(f"data.subword_vocab={data_cfg.get('subword_vocab')!r} must be a "
                         "positive number of pieces (the largest subword vocabulary)")  # fmt: skip
    if max_length < 1:
        raise ValueError(f"data.max_length must be at least 1, got {max_length}")
    tokenizer = vocab.Tokenizer.from_config(vocab.words_only(data_cfg.tokenizer))
    index: dict[str, int] = {}  # every split's words: val and test words are segmented too
    streams, train_counts = {}, np.zeros(0, dtype=np.int64)
    for split in SPLITS:
        flat, lengths, counts, _ = vocab.tokenize_split(
            corpus.texts[split], tokenizer, index, grow=True, max_length=max_length
        )
        streams[split] = (torch.from_numpy(flat), torch.from_numpy(lengths))
        if split == "train":
            train_counts = counts
    types = list(index)
    del index
    spaced = next((w for w in types if any(c.isspace() for c in w)), None)
    if spaced is not None:
        raise ValueError(f"data.tokenizer.pattern yields tokens holding white space ({spaced!r});"
                         " a subword vocabulary splits words: use a pattern whose tokens hold "
                         "none")  # fmt: skip
    if not train_counts.sum():
        raise ValueError("data.tokenizer.pattern found no tokens in the train split; check the "
                         "pattern and data.text_column")  # fmt: skip
    pieces, merges = learn(types[: len(train_counts)], train_counts, size)
    payload = {
        "types": types,
        "streams": streams,
        "merges": [list(pair) for pair in merges],
        "alphabet": alphabet_size(pieces),
        "max_length": max_length,
    }
    flat, counts = Segmenter(pieces, merges).segment(types)
    payload["segments"] = (torch.from_numpy(flat), torch.from_numpy(counts))
    unknown = _holds_unknown(flat, counts)
    payload["unknown"] = {s: int(unknown[streams[s][0].numpy()].sum()) for s in SPLITS}
    payload["tokens"] = {s: int(streams[s][1].sum()) for s in SPLITS}
    ids, lengths = {}, {}
    for split in SPLITS:
        ids[split], lengths[split] = expand(flat, counts, *streams[split], max_length)
    labels = {split: torch.tensor(corpus.labels[split]) for split in SPLITS}
    log.info("subword vocabulary: %d pieces (an alphabet of %d characters, %d merges) from %d "
             "train words; max_length %d pieces", len(pieces) - len(SPECIALS), payload["alphabet"],
             len(merges), len(train_counts), ids["train"].shape[1])  # fmt: skip
    histogram = vocab.id_histogram(ids["train"], len(pieces))
    histogram[: len(SPECIALS)] = 0  # as the word table's: specials count no train token
    return Encoded(ids, lengths, labels, histogram.long(), pieces, list(corpus.label_names),
                   subwords=payload)  # fmt: skip


def learn(words: Sequence[str], counts: np.ndarray, size: int) -> tuple[list[str], list[tuple]]:
    """(pieces in id order, merges in the order learned): BPE learned on ``words`` with their
    train ``counts``, up to ``size`` pieces besides ``<pad>`` and ``<unk>`` (fewer where the
    words run out of pairs)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    model = Tokenizer(models.BPE(unk_token=SPECIALS[UNK]))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=size + len(SPECIALS), special_tokens=list(SPECIALS),
                                  show_progress=False)  # fmt: skip
    model.train_from_iterator(_repeated(words, counts), trainer)
    learned = json.loads(model.to_str())["model"]  # made here, in this process
    table = learned["vocab"]
    pieces = sorted(table, key=table.get)
    if pieces[: len(SPECIALS)] != list(SPECIALS) or [table[p] for p in pieces] != list(
        range(len(pieces))
    ):
        raise RuntimeError("tokenizers' BPE trainer laid out its vocabulary unexpectedly")
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    return pieces, merges


def _repeated(words: Sequence[str], counts: np.ndarray) -> Iterator[str]:
    """Each train word as often as the train split holds it, a space apart, in strings of at
    most ``_CHUNK_REPEATS`` words (the trainer counts the words of what it is fed)."""
    for word, count in zip(words, counts.tolist(), strict=True):
        while count > 0:
            repeats = min(count, _CHUNK_REPEATS)
            yield (word + " ") * repeats
            count -= repeats


def alphabet_size(pieces: Sequence[str]) -> int:
    """Single characters after the specials: the smallest vocabulary (every word can be
    spelled in it, but for characters the train split never held)."""
    size = 0
    for piece in pieces[len(SPECIALS) :]:
        if len(piece) != 1:
            break
        size += 1
    return size


def merges_for(pieces: Sequence[str], merges: Sequence[Sequence[str]], rows: int) -> int:
    """How many of the ordered ``merges`` a vocabulary of ``rows`` ids (specials included) has:
    up to the merge that made its last piece (a merge that made a piece seen already belongs
    to the vocabulary it was learned in)."""
    last = min(rows, len(pieces)) - 1
    if last < len(SPECIALS) + alphabet_size(pieces):
        return 0
    # pieces are numbered as their merges first made them: the first merge making the last
    for position, (left, right) in enumerate(merges):
        if left + right == pieces[last]:
            return position + 1
    raise ValueError(f"no merge makes piece {last} ({pieces[last]!r})")


class Segmenter:
    """The words' pieces under a BPE model (``pieces``' first ``rows``, their merges): what a
    tokenizer learned at that size gives."""

    def __init__(self, pieces: Sequence[str], merges: Sequence[Sequence[str]],
                 rows: int | None = None):  # fmt: skip
        from tokenizers import Tokenizer, models, pre_tokenizers

        rows = len(pieces) if rows is None else min(rows, len(pieces))
        kept = merges[: merges_for(pieces, merges, rows)]
        table = {piece: i for i, piece in enumerate(pieces[:rows])}
        model = models.BPE(table, [tuple(m) for m in kept], unk_token=SPECIALS[UNK])
        self.tokenizer = Tokenizer(model)
        self.tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()

    def segment(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(every word's piece ids laid end to end, int32; pieces per word, int64)."""
        encoded = self.tokenizer.encode_batch(list(words), add_special_tokens=False)
        counts = np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter((i for e in encoded for i in e.ids), dtype=np.int32,
                           count=int(counts.sum()))  # fmt: skip
        return flat, counts


def cut(pieces: Sequence[str], payload: dict, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct word's pieces at a vocabulary of ``rows`` ids (``Segmenter``'s figures):
    each piece past it undone into the two its merge joined, until none is left, from the
    study's segmentation at its full vocabulary. That is the smaller model's segmentation: BPE
    applies the lowest-ranked merge first, and a merge past the cut never makes a piece that a
    merge before it joins, as long as no merge made a piece another had made (then each word
    is segmented again by the smaller model)."""
    flat, counts = (t.numpy() for t in payload["segments"])
    merges, first = payload["merges"], len(SPECIALS) + payload["alphabet"]
    if rows < first:
        raise ValueError(f"search.space.vocab_size: {rows - len(SPECIALS)} pieces is below the "
                         f"subword alphabet of {payload['alphabet']} characters; use "
                         f"{payload['alphabet']} or more")  # fmt: skip
    if len(merges) != len(pieces) - first:  # a piece made twice: undoing it is ambiguous
        return Segmenter(pieces, merges, rows).segment(payload["types"])
    if rows >= len(pieces):
        return flat, counts
    index = {piece: i for i, piece in enumerate(pieces)}
    parts = np.array([[index[a], index[b]] for a, b in merges[rows - first :]], dtype=np.int32)
    ids, counts = flat, counts.copy()
    word_of = np.repeat(np.arange(len(counts)), counts)
    while True:
        past = ids >= rows
        if not past.any():
            return ids, counts
        spread = np.where(past, 2, 1)
        at = np.cumsum(spread) - spread  # where each id's pieces start in the new array
        undone = np.repeat(ids, spread)
        halves = parts[ids[past] - rows]
        undone[at[past]], undone[at[past] + 1] = halves[:, 0], halves[:, 1]
        counts += np.bincount(word_of[past], minlength=len(counts))
        ids, word_of = undone, np.repeat(word_of, spread)


def _holds_unknown(flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per word, whether one of its pieces is ``<unk>``."""
    word_of = np.repeat(np.arange(len(counts)), counts)
    return np.bincount(word_of[flat == UNK], minlength=len(counts)) > 0


def expand(
    flat: np.ndarray, counts: np.ndarray, stream: torch.Tensor, lengths: torch.Tensor,
    max_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """A split's documents as pieces: each word of ``stream`` (word ids laid end to end,
    ``lengths`` words per document) replaced by its pieces (``flat``, ``counts`` per word: a
    ``Segmenter``'s), the first ``max_length`` pieces of each document kept. Returns the
    PAD-filled id matrix (int32) and the pieces kept per document."""
    words = stream.numpy().astype(np.int64)
    per_word = counts[words]
    starts = (np.cumsum(counts) - counts)[words]
    ids = flat[np.repeat(starts, per_word) + vocab.positions(per_word)]
    ends = np.cumsum(per_word)
    bounds = np.concatenate([[0], np.cumsum(lengths.numpy())])
    totals = np.concatenate([[0], ends])[bounds]
    pieces = totals[1:] - totals[:-1]
    kept = np.minimum(pieces, max_length)
    ids = ids[vocab.positions(pieces) < max_length]
    return vocab.pad(ids, kept), torch.from_numpy(kept.astype(np.int64))


def check_payload(payload, pieces: Sequence[str]) -> dict:
    """An encoding's subword data read back from a cache (``pieces``: its vocabulary), against
    its closed shape: plain strings, integers and int tensors that fit one another (every id
    inside what it indexes); ``ValueError`` otherwise."""
    expected = {"types", "streams", "segments", "merges", "alphabet", "max_length", "unknown",
                "tokens"}  # fmt: skip
    if not isinstance(payload, dict) or set(payload) != expected or not _plain(payload):
        raise ValueError("not the subword data of this tool")
    flat, counts = payload["segments"]
    words = len(payload["types"])
    fits = (
        len(counts) == words and int(counts.sum()) == len(flat)
        and (len(flat) == 0 or int(flat.min()) >= 0 and int(flat.max()) < len(pieces))
        and 0 <= payload["alphabet"] <= len(pieces) - len(SPECIALS)
        and len(payload["merges"]) >= len(pieces) - len(SPECIALS) - payload["alphabet"]
        and all(int(lengths.sum()) == len(stream) and int(lengths.min(initial=0)) >= 0
                and (len(stream) == 0 or int(stream.min()) >= 0 and int(stream.max()) < words)
                for stream, lengths in (
                    (s.numpy(), n.numpy()) for s, n in payload["streams"].values()))
    )  # fmt: skip
    if not fits:
        raise ValueError("the subword data of this cache does not fit together")
    return payload


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ints(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.dim() == 1 and tensor.dtype in (
        torch.int32, torch.int64)  # fmt: skip


def _plain(payload: dict) -> bool:
    """The payload's values of the right plain types (``check_payload``)."""
    return (
        isinstance(payload["types"], list) and all(isinstance(w, str) for w in payload["types"])
        and isinstance(payload["merges"], list)
        and all(isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m)
                for m in payload["merges"])
        and _int(payload["alphabet"]) and _int(payload["max_length"])
        and payload["max_length"] >= 1
        and all(isinstance(payload[k], dict) and set(payload[k]) == set(SPLITS)
                for k in ("streams", "unknown", "tokens"))
        and all(_int(payload[k][s]) for k in ("unknown", "tokens") for s in SPLITS)
        and all(isinstance(t, tuple) and len(t) == 2 and all(_ints(x) for x in t)
                for t in [*payload["streams"].values(), payload["segments"]])
    )  # fmt: skip
