"""What an exported folder's ``config.json`` may say: a closed schema, read as data.

A model folder is made to be handed to someone else, and ``SHA256SUMS`` is an integrity list
anyone can recompute, not a signature. So nothing in the folder is trusted as code: ``read``
checks ``config.json`` against the schema below (known keys, plain values of the right type, a
model kind from the project's own registry, ``sweep.models.kinds.KINDS``; the front end's keys
by its own rules, ``sweep.models.frontends``) and refuses anything else with one
``ExportError`` naming the key, before anything is built. The model is then built from its
kind (``build_kind``), the tokenizer from plain settings: no value of the file reaches
``hydra.utils.instantiate``, an import by name, a pickle or an OmegaConf interpolation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweep import schema
from sweep.common.closed import Rule, check_keys, count, of, plain
from sweep.models.frontends import FRONT_ENDS, WORD
from sweep.models.kinds import BY_TARGET, KINDS, check_settings


class ExportError(ValueError):
    """A model that cannot be exported as configured (a vocabulary word holding a newline,
    ``report.prune_rows`` with hashed rows: exit 2, as any bad input), or an exported folder that
    is missing, incomplete, altered or not of this schema; the message names the key or file. A
    file that cannot be written is a ``sweep.common.atomic.WriteError``."""


_METADATA = "a mapping of plain JSON data (numbers, strings, lists)"
# config.json's keys, in the order the export writes them; the front end's own in the middle
# (its kind, sizes, cutoff, tokenizer settings: sweep.models.frontends, each kind's
# config_rules). A folder that names no kind has the word table (every folder before kinds).
BEFORE = {
    "model": of(dict, "a mapping of the model's settings"),
    "model_name": of(str, f"one of {', '.join(KINDS)}"),
    "precision": Rule(
        lambda v: v in schema.PRECISIONS, f"one of {', '.join(schema.PRECISIONS)}", required=False
    ),  # fmt: skip
    "frontend": Rule(
        lambda v: isinstance(v, str) and v in FRONT_ENDS,
        f"one of {', '.join(FRONT_ENDS)}",
        required=False,
    ),  # fmt: skip
}
AFTER = {
    "num_classes": count(1),
    "labels": Rule(
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "a list of label names",
    ),  # fmt: skip
    "params": Rule(lambda v: isinstance(v, dict) and plain(v), _METADATA, required=False),
    "figures": Rule(lambda v: isinstance(v, dict) and plain(v), _METADATA, required=False),
    # The first export format's note of a re-created trial's accuracy (folders made then load).
    "recreated_val_accuracy": Rule(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "a number",
        required=False,
    ),  # fmt: skip
}


def frontend_in(config: dict[str, Any]):
    """The front-end kind a checked config.json names (the word table where it names none)."""
    return FRONT_ENDS[config.get("frontend", WORD.name)]


def top(config: dict[str, Any]) -> dict[str, Rule]:
    """The keys a config.json may hold: the shared ones and its front end's (``frontend``:
    ``parse`` checks it first)."""
    kind = FRONT_ENDS[config.get("frontend", WORD.name)]
    return {**BEFORE, **kind.config_rules, **AFTER}


def parse(text: str, where: str) -> dict[str, Any]:
    """``config.json``'s text read against the schema; the checked mapping, or ``ExportError``
    naming ``where`` (the file) and the key."""
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ExportError(f"{where} is not valid JSON ({error}); export the model again") from None
    if not isinstance(config, dict):
        raise ExportError(f"{where} must hold one JSON object; export the model again")
    # the kind first: its name says which keys the rest may hold
    check_keys({k: config[k] for k in ("frontend",) if k in config},
               {"frontend": BEFORE["frontend"]}, where, ExportError)  # fmt: skip
    check_keys(config, top(config), where, ExportError)
    name = config["model_name"]
    if name not in KINDS and config["model"].get("_target_") in BY_TARGET:
        # model.name is a free label (a user's model=bag_wide): folders exported before the
        # kind was written in its place name their kind by its target
        name = config["model_name"] = BY_TARGET[config["model"]["_target_"]].name
    if name not in KINDS:
        raise ExportError(f"{where}: model_name={name!r} is no model kind of this tool (kinds: "
                          f"{', '.join(KINDS)}); a folder can only name a kind the tool has")  # fmt: skip
    try:
        check_settings(KINDS[name], config["model"], where="model")
    except ValueError as error:
        raise ExportError(f"{where}: {error}") from None
    if len(config["labels"]) != config["num_classes"]:
        raise ExportError(f"{where}: labels must be num_classes={config['num_classes']} strings")
    # A word folder's model names no kind (the constructor's default); another kind's names it.
    config["model"].setdefault("frontend", config.get("frontend", WORD.name))
    if config["model"]["frontend"] != config.get("frontend", WORD.name):
        raise ExportError(f"{where}: model.frontend={config['model'].get('frontend')!r} and "
                          f"frontend={config.get('frontend')!r} disagree; export the model "
                          "again")  # fmt: skip
    try:  # the front end's keys together: the word table's tokenizer settings and row count
        frontend_in(config).check_config(config, where)
    except ValueError as error:
        raise ExportError(str(error)) from None
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
