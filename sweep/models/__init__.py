"""Stage 3-4, models: the embedding front end, the classifiers, packed models, optimizers, the fit.

The classifiers are named here, ``sweep.models.BagClassifier`` and so on: the configs'
``_target_`` (``configs/model/*.yaml``) and a user's own configs name them so."""

from sweep.models.classifiers import (
    BagClassifier,
    CNNClassifier,
    RNNClassifier,
    TransformerClassifier,
)

__all__ = ["BagClassifier", "CNNClassifier", "RNNClassifier", "TransformerClassifier"]
