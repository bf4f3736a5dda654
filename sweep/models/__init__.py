"""Stage 3-4, models: the front-end kinds (``frontends``: one module a kind, the word table's
``word``) and their table module (``embedding``), the classifiers, packed models, optimizers,
the fit (one epoch loop for a lone trial and a pack).

The classifiers are named here, ``sweep.models.BagClassifier`` and so on: the configs'
``_target_`` (``configs/model/*.yaml``) and a user's own configs name them so."""

from sweep.models.classifiers import (
    BagClassifier,
    CNNClassifier,
    RNNClassifier,
    TransformerClassifier,
)

__all__ = ["BagClassifier", "CNNClassifier", "RNNClassifier", "TransformerClassifier"]
