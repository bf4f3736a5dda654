"""The word table: the train split's words by frequency, cut at the K most frequent, one row each.

Its options: hashed buckets for the train words past the cutoff (``model.hash_buckets`` B, as
fastText's ``-bucket``: they share B rows instead of ``<unk>``), a factorized table
(``model.factorized_dim`` H, as ALBERT: an E-wide table projected to H), sparse or dense
gradients (``model.sparse``). Over the data stage's vocabulary (``sweep.data.vocab``: the
tokenizer, ``build``, ``cut``) and the table module (``sweep.models.embedding``):

- text: the corpus tokenized once per study, ids ranked by train frequency (``encode``), then a
  trial's view, ids past K + 2 to ``<unk>`` or a bucket (``view``, one vectorised op);
- table: K + 2 (``<pad>``, ``<unk>``) + B rows of width E (``sizes``), ``EmbeddingFrontEnd``
  (``table``); trials share a pack with a dense, unfactorized table (``packs``);
- counts: rows x E (+ E x H) parameters, and a step's gradient, the batch's rows or the whole
  table (``num_params``, ``grad_bytes``); coverage, OOV rate and the equivalent minimum
  frequency at K (``describe``); the bytes of ``vocab.txt`` (``file_bytes``);
- shipping: ``vocab.txt`` (the kept words, one a line, in id order; with buckets every train
  word: its rank picks its bucket), the keys of config.json that read text again (cutoff,
  buckets, tokenizer settings, max_length), checked as data on the way back (``CONFIG``,
  ``check_config``), and the encoder of a loaded folder (``encoder``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sweep import measure
from sweep.common.closed import Rule, check_keys, count, of
from sweep.data import vocab
from sweep.data.corpus import Corpus
from sweep.data.prepared import PreparedData, SplitTensors
from sweep.data.vocab import Encoded
from sweep.models.embedding import EmbeddingFrontEnd, use_sparse
from sweep.models.frontends.kind import FrontEnd, Sizes

VOCAB_FILE = "vocab.txt"

# data.tokenizer's keys, as the export writes them (sweep.data.vocab.Tokenizer's arguments).
TOKENIZER = {
    "pattern": of(str, "a regular expression"),
    "lowercase": of(bool, "true or false", required=False),
    "normalize": Rule(
        lambda v: v in (None, "NFC", "NFKC", "NFD", "NFKD"),
        "NFC, NFKC, NFD, NFKD or null",
        required=False,
    ),  # fmt: skip
    "word_ngrams": count(1, required=False),
    "char_ngrams": Rule(
        lambda v: (
            v is None or (isinstance(v, list) and len(v) == 2 and all(count(1).check(n) for n in v))
        ),
        "null or [min, max]",
        required=False,
    ),  # fmt: skip
}


class WordTable(FrontEnd):
    """The word table cut at K, with hashed buckets and a factorized table (module docstring)."""

    name = "word"
    data_keys = ("hash_buckets",)  # acts on the view (sweep.data.vocab.cut): more rows only
    files = (VOCAB_FILE,)
    # Its keys of config.json, in the order the export writes them.
    config_rules = {
        "num_embeddings": count(2),
        "embedding_dim": count(1),
        "vocab_size": count(0),
        "hash_buckets": count(0),
        "tokenizer": of(dict, "a mapping of the tokenizer's settings"),
        "max_length": count(1),
    }

    def encode(self, corpus: Corpus, data_cfg, keep_streams: bool = False) -> tuple[Encoded, str]:
        """Tokenize once, count on train, ids by frequency, every split encoded; cached under
        ``data.cache_dir`` (``sweep.data.vocab.load_or_build``); ``keep_streams``: the word
        ids kept untruncated, to derive word n-grams from (``sweep.data.ngrams``)."""
        return vocab.load_or_build(corpus, data_cfg, keep_streams=keep_streams)

    def coverage_curve(self, data: PreparedData) -> dict[str, list]:
        return data.coverage_curve()

    def sizes(self, params: Mapping[str, Any], model_cfg, full_vocab: int) -> Sizes:
        """K = ``params["vocab_size"]`` clamped to the train words, B = ``model.hash_buckets``,
        E = ``params["embedding_dim"]``: K + 2 + B rows."""
        vocab_size = min(int(params["vocab_size"]), full_vocab)
        hash_buckets = int(model_cfg.get("hash_buckets") or 0)
        if hash_buckets < 0:
            raise ValueError(f"model.hash_buckets={hash_buckets} must be >= 0")
        rows = vocab_size + len(vocab.SPECIALS) + hash_buckets
        return Sizes(vocab_size, hash_buckets, rows, int(params["embedding_dim"]))

    def view(self, data: PreparedData, split: str, sizes: Sizes) -> SplitTensors:
        return data.view(split, sizes.vocab_size, sizes.hash_buckets)

    def table(
        self,
        num_embeddings: int,
        embedding_dim: int,
        factorized_dim: int | None = None,
        sparse: bool = False,
        **options: Any,
    ) -> EmbeddingFrontEnd:
        return EmbeddingFrontEnd(num_embeddings, embedding_dim, factorized_dim, sparse)

    def sparse(self, model_cfg, sizes: Sizes) -> bool:
        return use_sparse(model_cfg.get("sparse", "auto"), sizes.num_embeddings)

    def packs(self, model_settings: Mapping[str, Any], sparse: bool) -> bool:
        """A dense table without a projection: a packed model holds every trial's rows in one
        table (``sweep.models.pack.modules``). A sparse one trains alone: there the lone
        trial's fused count-matrix mean is faster than a packed sparse embedding_bag."""
        return not sparse and not model_settings.get("factorized_dim")

    def num_params(self, sizes: Sizes, model_cfg) -> int:
        """rows x E, and E x H for the factorized table's bias-free projection (the pad row
        counts: it is a row of the table)."""
        factorized = model_cfg.get("factorized_dim")
        projection = sizes.embedding_dim * factorized if factorized else 0
        return sizes.num_embeddings * sizes.embedding_dim + projection

    def grad_bytes(self, sizes: Sizes, *, sparse: bool, params: int, tokens: int) -> int:
        """Sparse: the batch's rows (``nn.Embedding``'s sparse gradient); dense: the table."""
        return measure.table_grad_bytes(params, sizes.embedding_dim, sparse, tokens)

    def describe(self, data: PreparedData, sizes: Sizes) -> dict[str, Any]:
        """Its sizes, and at cutoff K the equivalent minimum frequency, the train tokens
        covered and the validation OOV rate."""
        return {
            "embedding_dim": sizes.embedding_dim,
            "vocab_size": sizes.vocab_size,
            "num_embeddings": sizes.num_embeddings,
            "hash_buckets": sizes.hash_buckets,
            **data.cutoff_figures(sizes.vocab_size),
        }

    def file_bytes(self, data: PreparedData, sizes: Sizes) -> int:
        """``vocab.txt``: a word and a newline per kept id."""
        return data.vocab_file_bytes(sizes.vocab_size, sizes.hash_buckets)

    def vocabulary(self, data: PreparedData, sizes: Sizes) -> list[str]:
        """The K + 2 kept words; with hash buckets every train word (its rank picks its
        bucket)."""
        words = data.encoded.words
        return words if sizes.hash_buckets else words[: sizes.vocab_size + len(vocab.SPECIALS)]

    def prune(
        self, model: nn.Module, sizes: Sizes, rows: int, by: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep ``rows`` word rows (``by``: ``norm``, the largest L2 norm after training, as
        fastText's quantization does; ``frequency``, the most frequent) and the specials; the
        words past them read as ``<unk>``."""
        if sizes.hash_buckets:
            raise ValueError(
                "report.prune_rows needs model.hash_buckets=0 (hashed rows are shared)"
            )
        embed = model.frontend.embed
        table = embed.weight.detach()
        kept = min(int(rows), sizes.vocab_size)
        first = len(vocab.SPECIALS)
        if by == "norm":
            norms = table[first : first + sizes.vocab_size].norm(dim=1)
            chosen = torch.argsort(norms, descending=True, stable=True)[:kept].sort().values
            chosen = chosen + first
        else:  # ids are frequency ranks
            chosen = torch.arange(first, first + kept)
        index = torch.cat([torch.arange(first), chosen])
        embed.weight = nn.Parameter(table[index].clone())
        embed.num_embeddings = len(index)
        remap = torch.full((first + sizes.vocab_size,), vocab.UNK, dtype=torch.long)
        remap[index] = torch.arange(len(index))
        return index, remap

    def export_config(self, sizes: Sizes, data_cfg, vocab_size: int) -> dict[str, Any]:
        return {
            "num_embeddings": vocab_size + len(vocab.SPECIALS) + sizes.hash_buckets,
            "embedding_dim": sizes.embedding_dim,
            "vocab_size": vocab_size,
            "hash_buckets": sizes.hash_buckets,
            "tokenizer": OmegaConf.to_container(data_cfg.tokenizer, resolve=True),
            "max_length": int(data_cfg.max_length),
        }

    def files_of(self, vocabulary: Sequence[str]) -> dict[str, str]:
        if any("\n" in word for word in vocabulary):
            raise ValueError("a vocabulary word holds a newline; vocab.txt cannot store it "
                             "(set data.tokenizer so that tokens hold no line breaks)")  # fmt: skip
        return {VOCAB_FILE: "".join(f"{word}\n" for word in vocabulary)}

    def read_vocabulary(self, folder: Path) -> list[str]:
        path = Path(folder) / VOCAB_FILE
        try:
            return path.read_text(encoding="utf-8").split("\n")[:-1]
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                             "export the model again") from None  # fmt: skip

    def check_config(self, config: Mapping[str, Any], where: str) -> None:
        """The tokenizer's settings against ``TOKENIZER``; rows = vocab_size + 2 + buckets."""
        check_keys(config["tokenizer"], TOKENIZER, f"{where} (tokenizer)")
        rows = config["vocab_size"] + len(vocab.SPECIALS) + config["hash_buckets"]
        if config["num_embeddings"] != rows:
            raise ValueError(f"{where}: num_embeddings={config['num_embeddings']} must be "
                             f"vocab_size + 2 + hash_buckets = {rows}")  # fmt: skip

    def encoder(
        self, config: Mapping[str, Any], vocabulary: Sequence[str]
    ) -> Callable[[Sequence[str]], torch.Tensor]:
        """Tokenize, truncate to max_length, the train vocabulary's ids (``<unk>`` for words it
        never saw), then the trial's cutoff (and hash buckets)."""
        tokenizer = vocab.Tokenizer(**config["tokenizer"])  # checked plain settings
        index = {w: i for i, w in enumerate(vocabulary)}
        max_length = config["max_length"]

        def encode(texts: Sequence[str]) -> torch.Tensor:
            docs = [[index.get(w, vocab.UNK) for w in tokenizer(t)][:max_length] for t in texts]
            width = max([len(d) for d in docs] + [1])
            ids = torch.full((len(docs), width), vocab.PAD, dtype=torch.long)
            for row, doc in enumerate(docs):
                ids[row, : len(doc)] = torch.tensor(doc, dtype=torch.long)
            return vocab.cut(ids, config["vocab_size"], config["hash_buckets"])

        return encode


WORD = WordTable()
