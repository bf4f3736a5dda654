"""Shipping: precisions, the weights file, and the exported model that predicts on its own.

The public face: ``quantize`` (a model stored at fp16, int8 or int4, and what it predicts then), ``tensorfile``
(the safetensors file, written without the safetensors package), ``export`` (the recommended
trial's folder; ``load``, also ``sweep.load``, gives a ``Predictor``; ``python -m
sweep.predict``)."""
