"""Embedding-dimension sweep: see README.md and the module docstrings of each stage."""

from sweep.naming import register_resolvers

register_resolvers()  # the configs' ${setup_digest:} and ${pid:} (sweep/naming.py)
