"""What every front-end kind answers (``FrontEnd``), and a trial's table sizes (``Sizes``).

A front end turns a document's text into the vectors the model body reads: how text becomes
ids, the table those ids index, and everything that follows from both (the parameter count and
memory of the table, the files an exported model needs to read text again). The sweep sizes it
(rows and width); a kind decides what the rows are. Each kind is one module of this package
implementing ``FrontEnd`` (DESIGN.md, decision 8), over the data stage's primitives
(``sweep.data``) and the models' table modules (``sweep.models.embedding``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sweep.common.closed import Rule
from sweep.data.corpus import Corpus
from sweep.data.prepared import PreparedData, SplitTensors
from sweep.data.vocab import Encoded


@dataclass(frozen=True)
class Sizes:
    """A trial's table: cutoff K (clamped to the vocabulary), hash buckets B, rows, width."""

    vocab_size: int
    hash_buckets: int
    num_embeddings: int  # K + 2 specials + B
    embedding_dim: int


class FrontEnd(ABC):
    """One kind of front end: what the sweep asks of it, from a study's text to a shipped
    folder. Methods take the model's settings (``model_cfg``: ``cfg.model``, or a folder's
    checked ``model`` mapping) where the kind has options there."""

    name: ClassVar[str]  # the registry's name of the kind (``sweep.models.frontends.FRONT_ENDS``)
    # model.* keys that act on the data view, not on the table module (no constructor argument)
    data_keys: ClassVar[tuple[str, ...]]
    # files of an exported folder besides the weights and config.json, in the order written
    files: ClassVar[tuple[str, ...]]
    # the kind's keys of an exported config.json and what each may hold (read back as data)
    config_rules: ClassVar[dict[str, Rule]]
    # model.* and data.* keys that are this kind's options only: another kind's study name,
    # signature and exported folder leave them out (``sweep.models.frontends.left_out``)
    own_keys: ClassVar[tuple[str, ...]] = ()
    own_data_keys: ClassVar[tuple[str, ...]] = ()
    # whether its text may hold word n-grams (data.tokenizer.word_ngrams > 1: the recipe probe
    # only offers them to a kind that takes them)
    takes_ngrams: ClassVar[bool] = True

    # Text -> ids: once per study, then a cheap view per trial.

    @abstractmethod
    def encode(self, corpus: Corpus, data_cfg, keep_streams: bool = False) -> tuple[Encoded, str]:
        """The corpus encoded once for the whole study (every split), and the digest of that
        encoding (its cache key, part of the study signature); ``keep_streams``: what later
        encodings of the study derive from is kept (the word table's: its word streams)."""

    def check(self, cfg, data: PreparedData) -> None:
        """What the study's config must say for this kind given its data, checked before the
        study starts (``ValueError`` naming the key); nothing by default."""
        return None

    def widest(self, data: PreparedData, sizes: Sizes) -> int:
        """The most ids a document of the trial's view holds (the memory estimate's batch
        length): the study's encoding's, where a view only renames ids."""
        return data.max_length

    def device_bytes(self, data: PreparedData, sizes: Sizes) -> int:
        """Bytes the trial's data holds on the device: the study's id matrices, where a view
        is made batch by batch from them."""
        return data.device_bytes

    def coverage_curve(self, data: PreparedData) -> dict[str, list]:
        """The page's coverage chart (train coverage and validation unknown rate against K);
        empty where K does not change them."""
        return {}

    @abstractmethod
    def sizes(self, params: Mapping[str, Any], model_cfg, full_vocab: int) -> Sizes:
        """The trial's table from its sampled values (``params``) and model settings."""

    @abstractmethod
    def view(self, data: PreparedData, split: str, sizes: Sizes) -> SplitTensors:
        """The split as a trial of these sizes sees it (no re-tokenizing)."""

    # The table.

    @abstractmethod
    def table(
        self,
        num_embeddings: int,
        embedding_dim: int,
        factorized_dim: int | None = None,
        sparse: bool = False,
        **options: Any,
    ) -> nn.Module:
        """The table module a model is built on: token ids -> vectors (``out_dim`` wide), with
        ``mean(ids)`` (a document's mean vector) and ``num_params()``; ``options``: the kind's
        own settings (the mixed table's ``alpha`` and ``bands``; others take none)."""

    @abstractmethod
    def sparse(self, model_cfg, sizes: Sizes) -> bool:
        """Whether the trial's table trains with sparse gradients (``model.sparse`` resolved)."""

    @abstractmethod
    def packs(self, model_settings: Mapping[str, Any], sparse: bool) -> bool:
        """Whether trials with this table may share a pack (``sweep.models.pack``)."""

    # Counts, in closed form: known before the trial trains.

    @abstractmethod
    def num_params(self, sizes: Sizes, model_cfg) -> int:
        """Parameters of the table (and of what belongs to it, e.g. a projection)."""

    @abstractmethod
    def grad_bytes(self, sizes: Sizes, *, sparse: bool, params: int, tokens: int) -> int:
        """Bytes of the table's gradient at one training step of ``tokens`` batch tokens
        (``params``: ``num_params``): the memory estimate's term for the table."""

    @abstractmethod
    def describe(self, data: PreparedData, sizes: Sizes) -> dict[str, Any]:
        """The trial's columns of trials.csv this kind knows before training (its sizes, and
        what its vocabulary keeps of the data)."""

    @abstractmethod
    def file_bytes(self, data: PreparedData, sizes: Sizes) -> int:
        """Bytes of its exported files (``files``) for a trial of these sizes, exactly."""

    # Shipping: what an exported folder holds and how it reads text again.

    @abstractmethod
    def vocabulary(self, data: PreparedData, sizes: Sizes) -> list[str]:
        """What the exported model has ids for, in id order."""

    @abstractmethod
    def prune(
        self, model: nn.Module, sizes: Sizes, rows: int, by: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep ``rows`` rows of the trained table (``report.prune_rows``), in place: (the ids
        kept, a map from every id of the trial's view to its id in the pruned table). Raises
        ``ValueError`` where the kind cannot."""

    @abstractmethod
    def export_config(self, sizes: Sizes, data_cfg, vocab_size: int) -> dict[str, Any]:
        """Its keys of config.json (``config_rules``) for the trial (``vocab_size``: the
        vocabulary kept, after pruning)."""

    @abstractmethod
    def files_of(self, vocabulary: Sequence[str]) -> dict[str, str]:
        """Its exported files' text, by name (``files``); ``ValueError`` if they cannot hold it."""

    @abstractmethod
    def read_vocabulary(self, folder: Path) -> list[str]:
        """The vocabulary of an exported folder (its integrity already checked); ``ValueError``
        naming the file when it cannot be read."""

    @abstractmethod
    def check_config(self, config: Mapping[str, Any], where: str) -> None:
        """What its keys of a folder's config.json say together (their types passed
        ``config_rules``); ``ValueError`` naming ``where`` and the key."""

    @abstractmethod
    def encoder(
        self, config: Mapping[str, Any], vocabulary: Sequence[str]
    ) -> Callable[[Sequence[str]], torch.Tensor]:
        """Texts -> the padded ids the exported model reads, as training made them."""
