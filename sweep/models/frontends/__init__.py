"""Front-end kinds: how a document's text becomes the rows of the table the model reads.

Each kind is one module (DESIGN.md, decision 8) implementing ``FrontEnd`` (``kind.py``): how it
encodes text (once per study, then a cheap view per trial), builds its table, counts its
parameters and memory in closed form, and what it exports and reads back. The sweep's stages
ask the kind and hold nothing of it: the data (``sweep.data.prepared``, given the kind's
``encode``), the models (their table), the trial (sizes, views, the columns known before
training, the memory estimate's table term), packing (``packs``) and shipping (the folder's
files and its keys of config.json, read back as data).

The kinds (``FRONT_ENDS``), named by ``model.frontend``: ``word`` (``word.py``: the word table
cut at K, with hashed buckets and a factorized table), ``subword`` (``subword.py``: BPE pieces of
the train words, cut at K), ``mixed`` (``mixed.py``: the word table's rows in frequency bands of
decreasing width, projected to D). ``frontend_of`` gives a model's kind, ``named`` the kind an exported
folder names (its config.json's ``frontend``; a folder without one has the word table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sweep.models.frontends.kind import FrontEnd, Sizes
from sweep.models.frontends.mixed import MIXED
from sweep.models.frontends.subword import SUBWORD
from sweep.models.frontends.word import WORD

FRONT_ENDS: dict[str, FrontEnd] = {kind.name: kind for kind in (WORD, SUBWORD, MIXED)}


def named(name: Any, key: str = "model.frontend") -> FrontEnd:
    """The kind called ``name`` (``key``: where the name was read, for the error)."""
    if not isinstance(name, str) or name not in FRONT_ENDS:
        raise ValueError(f"{key}={name!r} is no front-end kind of this tool; the kinds are "
                         f"{', '.join(FRONT_ENDS)}")  # fmt: skip
    return FRONT_ENDS[name]


def frontend_of(model_settings: Mapping[str, Any]) -> FrontEnd:
    """The front-end kind of a model (``cfg.model``: its ``frontend``, word when absent)."""
    return named(model_settings.get("frontend") or WORD.name)


def left_out(kind: FrontEnd | None) -> tuple[set[str], set[str]]:
    """(model.* keys, data.* keys) that a study or folder of ``kind`` leaves out: the other
    kinds' own options (every kind's for None, a name not in the registry), and for the word
    table ``frontend`` itself (the default), so that a word-table setup reads as it did before
    kinds were named."""
    others = [other for other in FRONT_ENDS.values() if other is not kind]
    model = {key for other in others for key in other.own_keys}
    if kind is WORD:
        model.add("frontend")
    return model, {key for other in others for key in other.own_data_keys}


__all__ = [
    "FRONT_ENDS",
    "MIXED",
    "SUBWORD",
    "WORD",
    "FrontEnd",
    "Sizes",
    "frontend_of",
    "left_out",
    "named",
]
