"""What an exported folder's ``config.json`` may say: a closed schema, read as data.

A model folder is made to be handed to someone else, and ``SHA256SUMS`` is an integrity list
anyone can recompute, not a signature. So nothing in the folder is trusted as code: ``read``
checks ``config.json`` against the schema below (known keys, plain values of the right type, a
model kind from the project's own registry, ``sweep.models.kinds.KINDS``) and refuses anything
else with one ``ExportError`` naming the key, before anything is built. The model is then built
from its kind (``build_kind``), the tokenizer from plain settings: no value of the file reaches
``hydra.utils.instantiate``, an import by name, a pickle or an OmegaConf interpolation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep import schema
from sweep.models.kinds import KINDS, check_settings


class ExportError(ValueError):
    """A model that cannot be exported as configured (a vocabulary word holding a newline,
    ``report.prune_rows`` with hashed rows: exit 2, as any bad input), or an exported folder that
    is missing, incomplete, altered or not of this schema; the message names the key or file. A
    file that cannot be written is a ``sweep.common.atomic.WriteError``."""


@dataclass(frozen=True)
class Rule:
    """What one key may hold: ``check(value)`` true, described as ``what`` in the error."""

    check: Callable[[Any], bool]
    what: str
    required: bool = True


def _count(low: int, required: bool = True) -> Rule:
    def check(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    return Rule(check, f"an integer >= {low}", required)


def _of(kind: type, what: str, required: bool = True) -> Rule:
    return Rule(lambda v: isinstance(v, kind) and not (isinstance(v, bool) and kind is not bool),
                what, required)  # fmt: skip


def _plain(value, depth: int = 0) -> bool:
    """A JSON value of numbers, strings, booleans, nulls, lists and string-keyed mappings, no
    deeper than three levels and naming no ``_target_`` (a trial's figures: metadata, never
    interpreted; the tool never writes a ``_target_`` there, so one is a crafted file)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if depth >= 3:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and k != "_target_" and _plain(v, depth + 1)
                   for k, v in value.items())  # fmt: skip
    return False


_METADATA = "a mapping of plain JSON data (numbers, strings, lists)"
TOP = {
    "model": _of(dict, "a mapping of the model's settings"),
    "model_name": _of(str, f"one of {', '.join(KINDS)}"),
    "precision": Rule(
        lambda v: v in schema.PRECISIONS, f"one of {', '.join(schema.PRECISIONS)}", required=False
    ),  # fmt: skip
    "num_embeddings": _count(2),
    "embedding_dim": _count(1),
    "num_classes": _count(1),
    "vocab_size": _count(0),
    "hash_buckets": _count(0),
    "tokenizer": _of(dict, "a mapping of the tokenizer's settings"),
    "max_length": _count(1),
    "labels": Rule(
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "a list of label names",
    ),  # fmt: skip
    "params": Rule(lambda v: isinstance(v, dict) and _plain(v), _METADATA, required=False),
    "figures": Rule(lambda v: isinstance(v, dict) and _plain(v), _METADATA, required=False),
    # The first export format's note of a re-created trial's accuracy (folders made then load).
    "recreated_val_accuracy": Rule(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "a number",
        required=False,
    ),  # fmt: skip
}
# data.tokenizer's keys, as the export writes them (sweep.data.vocab.Tokenizer's arguments).
TOKENIZER = {
    "pattern": _of(str, "a regular expression"),
    "lowercase": _of(bool, "true or false", required=False),
    "normalize": Rule(
        lambda v: v in (None, "NFC", "NFKC", "NFD", "NFKD"),
        "NFC, NFKC, NFD, NFKD or null",
        required=False,
    ),  # fmt: skip
    "word_ngrams": _count(1, required=False),
    "char_ngrams": Rule(
        lambda v: (
            v is None
            or (isinstance(v, list) and len(v) == 2 and all(_count(1).check(n) for n in v))
        ),
        "null or [min, max]",
        required=False,
    ),  # fmt: skip
}


def _check_keys(mapping: dict, rules: dict[str, Rule], where: str) -> None:
    for key in mapping:
        if key not in rules:
            raise ExportError(f"{where}: {key!r} is not a key of an exported model's config "
                              f"(known: {', '.join(rules)}); the file was not written by this "
                              "tool: export the model again")  # fmt: skip
    for key, rule in rules.items():
        if key not in mapping:
            if rule.required:
                raise ExportError(f"{where}: {key!r} is missing; export the model again")
            continue
        if not rule.check(mapping[key]):
            value = repr(mapping[key])
            shown = value if len(value) <= 80 else f"a {type(mapping[key]).__name__}"
            raise ExportError(f"{where}: {key}={shown} must be {rule.what}; export the model "
                              "again")  # fmt: skip


def parse(text: str, where: str) -> dict[str, Any]:
    """``config.json``'s text read against the schema; the checked mapping, or ``ExportError``
    naming ``where`` (the file) and the key."""
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ExportError(f"{where} is not valid JSON ({error}); export the model again") from None
    if not isinstance(config, dict):
        raise ExportError(f"{where} must hold one JSON object; export the model again")
    _check_keys(config, TOP, where)
    name = config["model_name"]
    if name not in KINDS:
        raise ExportError(f"{where}: model_name={name!r} is no model kind of this tool (kinds: "
                          f"{', '.join(KINDS)}); a folder can only name a kind the tool has")  # fmt: skip
    try:
        check_settings(KINDS[name], config["model"], where="model")
    except ValueError as error:
        raise ExportError(f"{where}: {error}") from None
    _check_keys(config["tokenizer"], TOKENIZER, f"{where} (tokenizer)")
    if len(config["labels"]) != config["num_classes"]:
        raise ExportError(f"{where}: labels must be num_classes={config['num_classes']} strings")
    rows = config["vocab_size"] + 2 + config["hash_buckets"]  # <pad> and <unk>
    if config["num_embeddings"] != rows:
        raise ExportError(f"{where}: num_embeddings={config['num_embeddings']} must be "
                          f"vocab_size + 2 + hash_buckets = {rows}")  # fmt: skip
    return config


def read(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json``, checked (``parse``)."""
    path = Path(folder) / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ExportError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                          "export the model again") from None  # fmt: skip
    return parse(text, str(path))
