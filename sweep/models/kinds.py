"""The model kinds, named once: each classifier, the config target that names it, its packed form
and where it packs; and ``build_model``, which builds one from its config.

``sweep.models.pack.grouping`` decides what packs from ``KINDS`` (by the config's ``_target_``)
and ``sweep.models.pack.fit`` builds a pack's module from it (by the trained model's class), so
a new model is one entry here (and, to pack, a ``Packed`` class in
``sweep.models.pack.modules``)."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
from sweep.models.frontends import WORD
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


# model.* keys that are not constructor arguments: the study-name label, and the front end's
# keys that act on the data view (the word table's hash buckets: sweep.data.vocab.cut; they only
# enlarge num_embeddings).
NOT_MODEL_ARGS = ("name", *WORD.data_keys)


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


# Sizes every kind takes, passed at the call site (never read from a settings mapping).
SIZES = ("num_embeddings", "embedding_dim", "num_classes")


def settings_of(kind: Kind) -> dict[str, Any]:
    """The settings a kind's constructor takes besides its sizes: {name: type annotation}."""
    hints = typing.get_type_hints(kind.classifier.__init__)
    names = [n for n in inspect.signature(kind.classifier.__init__).parameters if n != "self"]
    return {name: hints.get(name, Any) for name in names if name not in SIZES}


def _fits(value: Any, annotation: Any) -> bool:
    """``value`` is a plain value of ``annotation`` (int, float, bool, str, a sequence of ints,
    optional): no mapping, no object, no bool where a number belongs."""
    if annotation is Any:
        return value is None or isinstance(value, (bool, int, float, str))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_fits(value, arm) for arm in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if typing.get_origin(annotation) in (Sequence, list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    return False


def _type_name(annotation: Any) -> str:
    """``int``, ``int | None``, ``list of int``: a type as an error message says it."""
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    if typing.get_origin(annotation) in (Sequence, list, tuple):
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arm) for arm in typing.get_args(annotation))
    return str(annotation)


def check_settings(kind: Kind, settings: dict[str, Any], where: str = "model") -> dict[str, Any]:
    """``settings`` checked against the kind's constructor, as data: known names only, each a
    plain value of its type (``sparse`` may also be ``auto``), ``_target_`` (if given) the kind's
    own. Returns the constructor's keyword arguments; raises ``ValueError`` naming
    ``where.<key>`` for anything else."""
    known = settings_of(kind)
    out = {}
    for key, value in settings.items():
        if key == "_target_":
            if value != kind.target:
                raise ValueError(f"{where}._target_={value!r} is not the {kind.name} model's "
                                 f"{kind.target!r}; a model is built from its kind only")  # fmt: skip
            continue
        if key not in known:
            raise ValueError(f"{where}.{key} is no setting of the {kind.name} model (known: "
                             f"{', '.join(sorted(known))})")  # fmt: skip
        if not (_fits(value, known[key]) or (key == "sparse" and value == "auto")):
            shown = repr(value) if len(repr(value)) <= 80 else f"a {type(value).__name__}"
            raise ValueError(f"{where}.{key}={shown} is not a plain value of type "
                             f"{_type_name(known[key])}")  # fmt: skip
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def build_kind(
    name: str, settings: dict[str, Any], num_embeddings: int, embedding_dim: int, num_classes: int
) -> nn.Module:
    """A model of the registered kind ``name`` from plain ``settings`` (``check_settings``): what
    the tool reads back (an exported folder) builds through here, never through ``instantiate``
    or an import by name, so a file cannot choose what code runs."""
    if name not in KINDS:
        raise ValueError(f"model kind {name!r} is unknown: the kinds are {', '.join(KINDS)}")
    kind = KINDS[name]
    kwargs = check_settings(kind, settings)
    kwargs["sparse"] = use_sparse(kwargs.get("sparse", "auto"), num_embeddings)
    return kind.classifier(num_embeddings=num_embeddings, embedding_dim=embedding_dim,
                           num_classes=num_classes, **kwargs)  # fmt: skip
