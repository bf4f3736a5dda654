"""The model kinds, named once: each classifier, the config target that names it, its packed form
and where it packs; and ``build_model``, which builds one from its config.

``sweep.models.pack.grouping`` decides what packs from ``KINDS`` (by the config's ``_target_``)
and ``sweep.models.pack.fit`` builds a pack's module from it (by the trained model's class), so
a new model is one entry here (and, to pack, a ``Packed`` class in
``sweep.models.pack.modules``)."""

from __future__ import annotations

from dataclasses import dataclass

import hydra
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sweep.models.classifiers import (
    BagClassifier,
    CNNClassifier,
    RNNClassifier,
    TransformerClassifier,
)
from sweep.models.embedding import use_sparse
from sweep.models.pack.modules import Packed, PackedBag, PackedCNN, PackedRNN, PackedTransformer


@dataclass(frozen=True)
class Kind:
    name: str  # the configs' model.name
    classifier: type[nn.Module]
    packed: type[Packed]
    # Where its trials pack (None: on any device). The CNN, RNN and Transformer not on a CPU,
    # where a step is arithmetic: on TREC packing measured 0.52x (CNN, grouped convolutions)
    # and 0.75-0.96x (each trial's own), 0.73x (RNN: its block-diagonal pack does N times the
    # arithmetic) and 0.63x (Transformer: padded widths and heads) the lone trials' speed
    # (docs/benchmarks.md "Packed trials"). On CUDA a small step is launch-bound.
    pack_devices: frozenset[str] | None

    @property
    def target(self) -> str:
        """The ``_target_`` the configs give (``configs/model/*.yaml``): the package's face."""
        return f"sweep.models.{self.classifier.__name__}"


KINDS = {
    kind.name: kind
    for kind in (
        Kind("bag", BagClassifier, PackedBag, None),
        Kind("cnn", CNNClassifier, PackedCNN, frozenset({"cuda"})),
        Kind("rnn", RNNClassifier, PackedRNN, frozenset({"cuda"})),
        Kind("transformer", TransformerClassifier, PackedTransformer, frozenset({"cuda"})),
    )
}
BY_TARGET = {kind.target: kind for kind in KINDS.values()}


def kind_of(model: nn.Module) -> Kind:
    """The kind of a built model; a model of no kind here is an error, not a guess."""
    for kind in KINDS.values():
        if type(model) is kind.classifier:
            return kind
    raise TypeError(f"{type(model).__name__} is no model kind of sweep.models.kinds.KINDS")


# model.* keys that are not constructor arguments: the study-name label, and the hash buckets,
# which act on the data view (sweep.data.vocab.cut) and only enlarge num_embeddings.
NOT_MODEL_ARGS = ("name", "hash_buckets")


def build_model(model_cfg: DictConfig, num_embeddings: int, embedding_dim: int, num_classes: int):
    """Instantiate ``cfg.model`` with the sizes known only at run time."""
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    for key in NOT_MODEL_ARGS:  # labels and data-view settings, not constructor arguments
        kwargs.pop(key, None)
    kwargs.update(
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        num_classes=num_classes,
        sparse=use_sparse(kwargs.get("sparse", "auto"), num_embeddings),
    )
    return hydra.utils.instantiate(kwargs)
