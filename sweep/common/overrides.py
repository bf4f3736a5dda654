"""Command-line overrides as Hydra takes them (``a.b=1``, ``+a.b=1``, ``~a.b``): the key each sets.

The command line (``sweep.cli``), the workers' argv (``sweep.parallel``) and the report's
reproduce command (``sweep.report.page``) each filter a list of overrides by key."""

from __future__ import annotations


def override_key(override: str) -> str:
    """The config key an override sets: ``+a.b=1``, ``~a.b`` and ``a.b=1`` all name ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")
