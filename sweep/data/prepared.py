"""The data a study trains on, prepared once: encoded, counted and moved to the device.

``PreparedData.load`` reads the corpus, encodes it as the study's front-end kind does (or loads
the encoded cache), drops the raw texts and moves the id matrices and labels to the device.
Every trial then only makes its cutoff view (``view``); the runner, the workers' parent and the
benchmarks share this one object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sweep.data import vocab
from sweep.data.corpus import SPLITS, load_corpus
from sweep.data.vocab import Encoded

# (corpus, data config) -> (the corpus encoded once, the digest of that encoding): a front-end
# kind's ``encode``.
Encode = Callable[..., tuple[Encoded, str]]  # (corpus, data_cfg, keep_streams=...)


@dataclass
class SplitTensors:
    """One split: ids (docs, max_len) and labels on the device, lengths on the host."""

    ids: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor  # host tensor: batch widths are planned without a device sync

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


@dataclass
class PreparedData:
    """The encoded corpus on ``device`` and the figures every trial's description needs."""

    encoded: Encoded  # host tensors (lengths stay there: batches are planned without a sync)
    ids: dict[str, torch.Tensor]  # on the device
    labels: dict[str, torch.Tensor]  # on the device
    key: str  # digest of the corpus and its encoding (part of the study signature)
    stats: dict[str, Any]  # documents per class and split, rows dropped, leakage
    device: torch.device
    val_histogram: torch.Tensor  # validation-token count per id (the OOV rate at any cutoff)
    _vocab_bytes: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        data_cfg,
        seed: int,
        device: torch.device,
        encode: Encode | None = None,
        keep_streams: bool = False,
        words: PreparedData | None = None,
    ) -> PreparedData:
        """The corpus of ``data_cfg`` encoded by ``encode`` (the study's front-end kind's:
        ``sweep.models.frontends``; None: the word table's, ``vocab.load_or_build``) and moved
        to ``device``. With ``words`` (the word encoding of the same data, keeping its streams)
        word n-grams are derived from it: the texts are neither read nor tokenized again.
        ``keep_streams``: keep the word streams, to derive n-grams from this data later (the
        recipe probe)."""
        derivable = words is not None and words.encoded.streams is not None
        if derivable and vocab.derives_ngrams(data_cfg.tokenizer):
            encoded, key = vocab.derived(words.encoded, words.key, data_cfg)
            return cls.from_encoded(encoded, key, words.stats, device)
        corpus = load_corpus(data_cfg, seed)
        encoded, key = (encode or vocab.load_or_build)(corpus, data_cfg, keep_streams=keep_streams)
        stats = corpus.stats
        del corpus  # the raw texts are encoded now: a large corpus need not stay in memory
        return cls.from_encoded(encoded, key, stats, device)

    def drop_streams(self) -> None:
        """Forget the word streams (n-grams will not be derived from this data any more)."""
        self.encoded.streams = None

    @classmethod
    def from_encoded(cls, encoded: Encoded, key: str, stats, device) -> PreparedData:
        return cls(
            encoded=encoded,
            ids={s: encoded.ids[s].to(device) for s in SPLITS},
            labels={s: encoded.labels[s].to(device) for s in SPLITS},
            key=key,
            stats=dict(stats),
            device=torch.device(device),
            val_histogram=vocab.id_histogram(encoded.ids["validation"], len(encoded.words)),
        )

    def sample(self, limit: int, seed: int) -> PreparedData:
        """At most ``limit`` documents of each split (a seeded sample, kept in corpus order),
        with the whole corpus's vocabulary, ranks and counts: so a cutoff K keeps the same words
        as on the whole corpus. ``self`` where no split is over ``limit``. The recipe probe
        trains on it where the corpus is large (``train.recipe.max_texts``). Word streams are
        kept for the sampled documents: n-grams derived from the sample are the sample's."""
        encoded = self.encoded
        sizes = {s: len(encoded.labels[s]) for s in SPLITS}
        if all(n <= limit for n in sizes.values()):
            return self
        generator = torch.Generator().manual_seed(int(seed))
        keep = {s: torch.randperm(n, generator=generator)[:limit].sort().values
                for s, n in sizes.items()}  # fmt: skip
        subwords = encoded.subwords
        if subwords is not None:  # a subword view is cut from each split's word stream
            streams = {s: stream_rows(*subwords["streams"][s], keep[s]) for s in SPLITS}
            subwords = {**subwords, "streams": streams}
        sampled = dataclasses.replace(
            encoded,
            ids={s: encoded.ids[s][keep[s]] for s in SPLITS},
            lengths={s: encoded.lengths[s][keep[s]] for s in SPLITS},
            labels={s: encoded.labels[s][keep[s]] for s in SPLITS},
            streams=None if encoded.streams is None else {
                s: stream_rows(*encoded.streams[s], keep[s]) for s in SPLITS},
            subwords=subwords,
        )  # fmt: skip
        stats = {**self.stats, "sampled": {s: len(keep[s]) for s in SPLITS}}
        key = f"{self.key}:sample{limit}:seed{seed}"
        return PreparedData.from_encoded(sampled, key, stats, self.device)

    @property
    def full_vocab(self) -> int:
        """Distinct train words: the largest meaningful cutoff."""
        return self.encoded.full_vocab_size

    @property
    def num_classes(self) -> int:
        return self.encoded.num_classes

    @property
    def max_length(self) -> int:
        return int(self.ids["train"].shape[1])

    @property
    def device_bytes(self) -> int:
        """Bytes the id matrices hold on the device."""
        return sum(t.numel() * t.element_size() for t in self.ids.values())

    def view(self, split: str, vocab_size: int, hash_buckets: int = 0) -> SplitTensors:
        """The split as a trial with cutoff ``vocab_size`` sees it (one vectorised op)."""
        return SplitTensors(
            vocab.cut(self.ids[split], vocab_size, hash_buckets),
            self.labels[split],
            self.encoded.lengths[split],
        )

    def vocab_file_bytes(self, vocab_size: int, hash_buckets: int = 0) -> int:
        """Bytes of the exported ``vocab.txt`` (a word and a newline per id) at this cutoff; with
        hash buckets every word is kept (its rank picks its bucket)."""
        if self._vocab_bytes is None:  # cumulative UTF-8 bytes by rank, computed once
            sizes = [len(word.encode("utf-8")) + 1 for word in self.encoded.words]
            self._vocab_bytes = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        words = len(self.encoded.words)
        kept = words if hash_buckets else min(vocab_size + len(vocab.SPECIALS), words)
        return int(self._vocab_bytes[kept])

    def cutoff_figures(self, vocab_size: int) -> dict[str, Any]:
        """What cutoff ``vocab_size`` keeps: the equivalent minimum frequency, the share of
        train tokens covered and the validation OOV rate."""
        counts = self.encoded.train_counts
        return {
            "min_freq": vocab.min_frequency(counts, vocab_size),
            "train_coverage": vocab.coverage(counts, vocab_size, self.encoded.train_unknown),
            "val_oov_rate": vocab.oov_rate(self.val_histogram, vocab_size),
        }

    def coverage_curve(self, points: int = 40) -> dict[str, list]:
        """Train coverage and validation OOV rate at ``points`` log-spaced cutoffs (the page's
        chart 4)."""
        ks = sorted({int(k) for k in np.geomspace(1, self.full_vocab, points)})
        counts = self.encoded.train_counts
        return {
            "vocab_size": ks,
            "train_coverage": [vocab.coverage(counts, k, self.encoded.train_unknown) for k in ks],
            "val_oov_rate": [vocab.oov_rate(self.val_histogram, k) for k in ks],
        }

    def summary(self) -> dict[str, Any]:
        """The page's data section: the corpus stats, the vocabulary and the train tokens."""
        return {
            **self.stats,
            "vocabulary": self.full_vocab,
            "train_tokens": int(self.encoded.train_counts.sum()) + self.encoded.train_unknown,
        }


def stream_rows(
    stream: torch.Tensor, lengths: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Documents ``keep`` (sorted indices) of a word stream (ids laid end to end, ``lengths``
    per document): the same pair for those documents alone."""
    starts = torch.cumsum(lengths, 0) - lengths
    kept = lengths[keep]
    index = torch.repeat_interleave(starts[keep], kept)
    index += torch.from_numpy(vocab.positions(kept.numpy())).to(index.dtype)
    return stream[index], kept
