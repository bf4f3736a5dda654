"""Embedding-dimension sweep: see README.md, docs/ and each subpackage's docstring."""


def load(folder):
    """An exported model folder (``report.export``) as a ``Predictor``: ``sweep.ship.export.load``."""
    from sweep.ship.export import load as load_folder  # torch: imported only when a model is loaded

    return load_folder(folder)
