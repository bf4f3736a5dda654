"""Embedding-dimension sweep: see README.md and the module docstrings of each stage."""

from sweep.naming import register_resolvers

register_resolvers()  # the configs' ${setup_digest:} and ${pid:} (sweep/naming.py)


def load(folder):
    """An exported model folder (``report.export``) as a ``Predictor``: ``sweep.ship.export.load``."""
    from sweep.ship.export import load as load_folder  # torch: imported only when a model is loaded

    return load_folder(folder)
