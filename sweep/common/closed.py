"""A mapping read against a closed schema: known keys only, each a plain value of its rule.

What the tool reads back (an exported folder's ``config.json``) is data: ``check_keys`` refuses
a key the schema does not list, a missing required key, and a value its ``Rule`` refuses, with
one error naming the key. ``sweep.ship.manifest`` holds the folder's schema; a front-end kind
(``sweep.models.frontends``) holds the rules of its own keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What one key may hold: ``check(value)`` true, described as ``what`` in the error."""

    check: Callable[[Any], bool]
    what: str
    required: bool = True


def count(low: int, required: bool = True) -> Rule:
    """An integer (not a bool) of at least ``low``."""

    def check(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    return Rule(check, f"an integer >= {low}", required)


def of(kind: type, what: str, required: bool = True) -> Rule:
    """A value of type ``kind`` (a bool only where ``kind`` is bool)."""
    return Rule(lambda v: isinstance(v, kind) and not (isinstance(v, bool) and kind is not bool),
                what, required)  # fmt: skip


def plain(value, depth: int = 0) -> bool:
    """A JSON value of numbers, strings, booleans, nulls, lists and string-keyed mappings, no
    deeper than three levels and naming no ``_target_`` (a trial's figures: metadata, never
    interpreted; the tool never writes a ``_target_`` there, so one is a crafted file)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if depth >= 3:
        return False
    if isinstance(value, list):
        return all(plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and k != "_target_" and plain(v, depth + 1)
                   for k, v in value.items())  # fmt: skip
    return False


def check_keys(
    mapping: dict, rules: dict[str, Rule], where: str, error: type[Exception] = ValueError
) -> None:
    """Every key of ``mapping`` in ``rules``, every required one present, each value passing
    its rule; else ``error`` naming ``where`` and the key."""
    for key in mapping:
        if key not in rules:
            raise error(f"{where}: {key!r} is not a key of an exported model's config "
                        f"(known: {', '.join(rules)}); the file was not written by this "
                        "tool: export the model again")  # fmt: skip
    for key, rule in rules.items():
        if key not in mapping:
            if rule.required:
                raise error(f"{where}: {key!r} is missing; export the model again")
            continue
        if not rule.check(mapping[key]):
            value = repr(mapping[key])
            shown = value if len(value) <= 80 else f"a {type(mapping[key]).__name__}"
            raise error(f"{where}: {key}={shown} must be {rule.what}; export the model "
                        "again")  # fmt: skip
