"""Shipping: precisions, the weights file, and the exported model that predicts on its own."""
