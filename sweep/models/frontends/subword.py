"""The subword table: BPE pieces of the train split's words (Hugging Face ``tokenizers``), cut at K.

A word the train split never held is still read, as the pieces it is spelled with: what a word
table cut at K cannot do. Over the data stage's subword vocabulary (``sweep.data.subword``) and
the table module (``sweep.models.embedding``):

- text: the study's words read once, BPE learned on train up to ``data.subword_vocab`` pieces,
  every split laid out as pieces (``encode``); a trial's vocabulary of K pieces is the first K
  (BPE's merges are ordered: the alphabet, then the merges up to K), its view the study's
  distinct words' pieces with the merges past K undone, laid out again (``view``; no text read
  again);
- table: K + 2 (``<pad>``, ``<unk>``) rows of width E (``sizes``), the word table's
  ``EmbeddingFrontEnd`` (``table``, factorized as it); trials train alone (``packs``: a pack shares its
  batches, and two cutoffs give two different id sequences);
- counts: rows x E (+ E x H) parameters, a step's gradient as the word table's (``num_params``,
  ``grad_bytes``); the train and validation words holding a character outside the alphabet
  (``describe``: coverage and unknown rate, per word as the word table's); the bytes of
  ``vocab.txt`` (``file_bytes``);
- shipping: ``vocab.txt``, a line per row: ``<pad>``, ``<unk>``, the alphabet's characters,
  then each merge as its two pieces, a space apart (a merge that makes a piece seen already is
  a line but no row); read back as data (``read_vocabulary``, ``encoder``), the tokenizer
  settings in config.json as the word table's (``check_config``).

A K below the alphabet is refused before the study starts (``check``: the axis's low, its
choices, the grid's values), naming the key; a trial that still asks one fails with the reason
(``sweep.data.subword.cut``). Hash buckets, pruning and word n-grams are word-table options:
each is refused with the key to change, before the study starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sweep.common.closed import check_keys, count, of
from sweep.data import subword, vocab
from sweep.data.corpus import SPLITS, Corpus
from sweep.data.prepared import PreparedData, SplitTensors
from sweep.data.vocab import SPECIALS, Encoded
from sweep.models.frontends.kind import Sizes
from sweep.models.frontends.word import TOKENIZER, VOCAB_FILE, WordTable

PRUNE = (
    "report.prune_rows: model.frontend=subword keeps every piece its merges make; choose "
    "a smaller K instead (set report.prune_rows=null)"
)


class SubwordTable(WordTable):
    """BPE pieces cut at K (module docstring). Its table, gradients, parameter count and the
    reading of ``vocab.txt`` (a line per entry) are the word table's; every other answer is
    its own."""

    name = "subword"
    data_keys = ()
    own_data_keys = ("subword_vocab",)
    takes_ngrams = False
    files = (VOCAB_FILE,)
    config_rules = {
        "num_embeddings": count(2),
        "embedding_dim": count(1),
        "vocab_size": count(0),
        "tokenizer": of(dict, "a mapping of the tokenizer's settings"),
        "max_length": count(1),
    }

    def __init__(self):
        # The last cutoff's segmentation and views (a trial asks each split's view in turn),
        # with the encoding and rows they are of (held: an identity, never a reused address).
        self._cut: tuple[Encoded, int, Any, dict[str, SplitTensors]] | None = None

    def encode(self, corpus: Corpus, data_cfg, keep_streams: bool = False) -> tuple[Encoded, str]:
        """BPE learned once for the study, every split laid out as pieces; cached under
        ``data.cache_dir`` (``sweep.data.subword.load_or_build``)."""
        return subword.load_or_build(corpus, data_cfg)

    def check(self, cfg, data: PreparedData) -> None:
        """No hash buckets (``sizes``), no pruned export, and no cutoff below the alphabet
        (below it some train words could not be spelled): the axis's ``low``, its categorical
        choices and the grid sampler's values."""
        self.sizes({"vocab_size": 0, "embedding_dim": 1}, cfg.model, 0)
        if OmegaConf.select(cfg, "report.prune_rows") is not None:
            raise ValueError(PRUNE)
        alphabet = data.encoded.subwords["alphabet"]
        spec = OmegaConf.select(cfg, "search.space.vocab_size") or {}
        given = {
            "search.space.vocab_size.low": [spec.get("low")],
            "search.space.vocab_size.choices": list(spec.get("choices") or []),
            "search.sampler.values.vocab_size": list(
                OmegaConf.select(cfg, "search.sampler.values.vocab_size") or []),
        }  # fmt: skip
        for key, values in given.items():
            low = min((v for v in values if isinstance(v, (int, float))), default=None)
            if low is not None and low < alphabet:
                raise ValueError(
                    f"{key} holds {low}, below the subword alphabet of {alphabet} characters "
                    f"(model.frontend=subword: every piece vocabulary holds them); use "
                    f"{alphabet} or more"
                )

    def sizes(self, params: Mapping[str, Any], model_cfg, full_vocab: int) -> Sizes:
        """K = ``params["vocab_size"]`` pieces clamped to those learned, E =
        ``params["embedding_dim"]``: K + 2 rows."""
        if int(model_cfg.get("hash_buckets") or 0):
            raise ValueError("model.hash_buckets: model.frontend=subword has a row for every "
                             "piece it keeps; set model.hash_buckets=0")  # fmt: skip
        vocab_size = min(int(params["vocab_size"]), full_vocab)
        return Sizes(vocab_size, 0, vocab_size + len(SPECIALS), int(params["embedding_dim"]))

    def view(self, data: PreparedData, split: str, sizes: Sizes) -> SplitTensors:
        """The split at K pieces: the study's distinct words segmented by the first K (once per
        cutoff), each document's words laid out as their pieces."""
        payload, rows = data.encoded.subwords, sizes.num_embeddings
        if self._cut is None or self._cut[0] is not data.encoded or self._cut[1] != rows:
            self._cut = None  # the last cut's views go before the next is made
            self._cut = (data.encoded, rows, subword.cut(data.encoded.words, payload, rows), {})
        _, _, (flat, counts), views = self._cut
        if split not in views:
            ids, lengths = subword.expand(flat, counts, *payload["streams"][split],
                                          payload["max_length"])  # fmt: skip
            views[split] = SplitTensors(ids.to(data.device), data.labels[split], lengths)
        return views[split]

    def widest(self, data: PreparedData, sizes: Sizes) -> int:
        """The widest document of the trial's views: at a small K a word is several pieces
        (the views are made here once, and kept for the trial)."""
        return max(int(self.view(data, s, sizes).ids.shape[1]) for s in SPLITS)

    def device_bytes(self, data: PreparedData, sizes: Sizes) -> int:
        """The study's id matrices and the trial's views beside them."""
        views = (self.view(data, s, sizes).ids for s in SPLITS)
        return data.device_bytes + sum(v.numel() * v.element_size() for v in views)

    def coverage_curve(self, data: PreparedData) -> dict[str, list]:
        return {}  # no K changes its coverage (``describe``)

    def packs(self, model_settings: Mapping[str, Any], sparse: bool) -> bool:
        """Never: a pack's trials share their batches, and each cutoff has its own ids."""
        return False

    def describe(self, data: PreparedData, sizes: Sizes) -> dict[str, Any]:
        """Its sizes; per word (the word table's are per token at K): the share of train words
        it spells without ``<unk>`` and of validation words holding a character outside its
        alphabet (the same at every K: the alphabet is in every vocabulary). No minimum
        frequency is equivalent to K."""
        payload = data.encoded.subwords
        share = lambda split: payload["unknown"][split] / max(payload["tokens"][split], 1)  # noqa: E731
        return {
            "embedding_dim": sizes.embedding_dim,
            "vocab_size": sizes.vocab_size,
            "num_embeddings": sizes.num_embeddings,
            "hash_buckets": 0,
            "min_freq": None,
            "train_coverage": 1.0 - share("train"),
            "val_oov_rate": share("validation"),
        }

    def file_bytes(self, data: PreparedData, sizes: Sizes) -> int:
        """``vocab.txt``: its lines up to the merge that made the K-th piece, a newline each."""
        return sum(len(line.encode("utf-8")) + 1 for line in self.vocabulary(data, sizes))

    def vocabulary(self, data: PreparedData, sizes: Sizes) -> list[str]:
        """``vocab.txt``'s lines: the specials, the alphabet, the merges kept at K."""
        pieces, payload = data.encoded.words, data.encoded.subwords
        merges = payload["merges"][: subword.merges_for(pieces, payload["merges"],
                                                        sizes.num_embeddings)]  # fmt: skip
        alphabet = pieces[: len(SPECIALS) + payload["alphabet"]]
        return [*alphabet, *(f"{left} {right}" for left, right in merges)]

    def prune(
        self, model: nn.Module, sizes: Sizes, rows: int, by: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise ValueError(PRUNE)

    def export_config(self, sizes: Sizes, data_cfg, vocab_size: int) -> dict[str, Any]:
        return {
            "frontend": self.name,
            "num_embeddings": vocab_size + len(SPECIALS),
            "embedding_dim": sizes.embedding_dim,
            "vocab_size": vocab_size,
            "tokenizer": OmegaConf.to_container(data_cfg.tokenizer, resolve=True),
            "max_length": int(data_cfg.max_length),
        }

    def check_config(self, config: Mapping[str, Any], where: str) -> None:
        """The tokenizer's settings (words only); rows = vocab_size + 2."""
        check_keys(config["tokenizer"], TOKENIZER, f"{where} (tokenizer)")
        subword.check_tokenizer(config["tokenizer"])
        rows = config["vocab_size"] + len(SPECIALS)
        if config["num_embeddings"] != rows:
            raise ValueError(f"{where}: num_embeddings={config['num_embeddings']} must be "
                             f"vocab_size + 2 = {rows}")  # fmt: skip

    def encoder(
        self, config: Mapping[str, Any], vocabulary: Sequence[str]
    ) -> Callable[[Sequence[str]], torch.Tensor]:
        """Tokenize into words, each word into the pieces of ``vocab.txt`` (a word's pieces
        remembered), truncate to max_length pieces."""
        pieces, merges = read_lines(vocabulary, config["vocab_size"])
        segmenter = subword.Segmenter(pieces, merges)
        tokenizer = vocab.Tokenizer(**config["tokenizer"])  # checked plain settings
        max_length = config["max_length"]

        def encode(texts: Sequence[str]) -> torch.Tensor:
            index: dict[str, int] = {}
            words = [[index.setdefault(w, len(index)) for w in tokenizer(t)] for t in texts]
            flat, counts = segmenter.segment(list(index))
            stream = torch.tensor([w for doc in words for w in doc], dtype=torch.int32)
            lengths = torch.tensor([len(doc) for doc in words], dtype=torch.int64)
            ids, _ = subword.expand(flat, counts, stream, lengths, max_length)
            return ids.long()

        return encode


def read_lines(lines: Sequence[str], vocab_size: int) -> tuple[list[str], list[list[str]]]:
    """(pieces in id order, merges) from ``vocab.txt``'s lines, checked as data: the specials,
    single characters, then merges of two known pieces; ``ValueError`` naming the file."""
    where = f"{VOCAB_FILE} (model.frontend=subword)"
    if list(lines[: len(SPECIALS)]) != list(SPECIALS):
        raise ValueError(f"{where} must start with {', '.join(SPECIALS)}; export the model again")
    pieces, merges, known = list(SPECIALS), [], set(SPECIALS)
    for number, line in enumerate(lines[len(SPECIALS) :], start=len(SPECIALS) + 1):
        parts = line.split(" ")
        if len(parts) == 1 and len(line) == 1 and not merges and line not in known:
            pieces.append(line)
        elif len(parts) == 2 and all(p in known and p not in SPECIALS for p in parts):
            merges.append(parts)
            if parts[0] + parts[1] not in known:
                pieces.append(parts[0] + parts[1])
        else:
            raise ValueError(f"{where}, line {number}: {line[:40]!r} is neither a character of "
                             "the alphabet nor a merge of two pieces above it; export the model "
                             "again")  # fmt: skip
        known.add(pieces[-1])
    if len(pieces) != vocab_size + len(SPECIALS):
        raise ValueError(f"{where} holds {len(pieces) - len(SPECIALS)} pieces, config.json's "
                         f"vocab_size says {vocab_size}; export the model again")  # fmt: skip
    return pieces, merges


SUBWORD = SubwordTable()
