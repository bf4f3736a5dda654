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
from pathlib import Path
from typing import Any

from sweep import schema
from sweep.common.closed import Rule, check_keys, count, of, plain
from sweep.models.kinds import KINDS, check_settings


class ExportError(ValueError):
    """A model that cannot be exported as configured (a vocabulary word holding a newline,
    ``report.prune_rows`` with hashed rows: exit 2, as any bad input), or an exported folder that
    is missing, incomplete, altered or not of this schema; the message names the key or file. A
    file that cannot be written is a ``sweep.common.atomic.WriteError``."""


_METADATA = "a mapping of plain JSON data (numbers, strings, lists)"
TOP = {
    "model": of(dict, "a mapping of the model's settings"),
    "model_name": of(str, f"one of {', '.join(KINDS)}"),
    "precision": Rule(
        lambda v: v in schema.PRECISIONS, f"one of {', '.join(schema.PRECISIONS)}", required=False
    ),  # fmt: skip
    "num_embeddings": count(2),
    "embedding_dim": count(1),
    "num_classes": count(1),
    "vocab_size": count(0),
    "hash_buckets": count(0),
    "tokenizer": of(dict, "a mapping of the tokenizer's settings"),
    "max_length": count(1),
    "labels": Rule(
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "a list of label names",
    ),  # fmt: skip
    "params": Rule(lambda v: isinstance(v, dict) and plain(v), _METADATA, required=False),
    "figures": Rule(lambda v: isinstance(v, dict) and plain(v), _METADATA, required=False),
}
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


def parse(text: str, where: str) -> dict[str, Any]:
    """``config.json``'s text read against the schema; the checked mapping, or ``ExportError``
    naming ``where`` (the file) and the key."""
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ExportError(f"{where} is not valid JSON ({error}); export the model again") from None
    if not isinstance(config, dict):
        raise ExportError(f"{where} must hold one JSON object; export the model again")
    check_keys(config, TOP, where, ExportError)
    name = config["model_name"]
    if name not in KINDS:
        raise ExportError(f"{where}: model_name={name!r} is no model kind of this tool (kinds: "
                          f"{', '.join(KINDS)}); a folder can only name a kind the tool has")  # fmt: skip
    try:
        check_settings(KINDS[name], config["model"], where="model")
    except ValueError as error:
        raise ExportError(f"{where}: {error}") from None
    check_keys(config["tokenizer"], TOKENIZER, f"{where} (tokenizer)", ExportError)
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
