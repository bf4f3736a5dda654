"""Front-end kinds: how a document's text becomes the rows of the table the model reads.

Each kind is one module (DESIGN.md, decision 8) implementing ``FrontEnd`` (``kind.py``): how it
encodes text (once per study, then a cheap view per trial), builds its table, counts its
parameters and memory in closed form, and what it exports and reads back. The sweep's stages
ask the kind and hold nothing of it: the data (``sweep.data.prepared``, given the kind's
``encode``), the models (their table), the trial (sizes, views, the columns known before
training, the memory estimate's table term), packing (``packs``) and shipping (the folder's
files and its keys of config.json, read back as data).

The kinds (``FRONT_ENDS``): ``word`` (``word.py``: the word table cut at K, with hashed buckets
and a factorized table). ``frontend_of`` gives a model's kind: no config key names one yet, so
every model has the word table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sweep.models.frontends.kind import FrontEnd, Sizes
from sweep.models.frontends.word import WORD

FRONT_ENDS: dict[str, FrontEnd] = {kind.name: kind for kind in (WORD,)}


def frontend_of(model_settings: Mapping[str, Any]) -> FrontEnd:
    """The front-end kind of a model (``cfg.model``, or an exported folder's checked ``model``
    settings): the word table, the only kind a model has today."""
    return WORD


__all__ = ["FRONT_ENDS", "WORD", "FrontEnd", "Sizes", "frontend_of"]
