"""Packed trials: several trials' models trained together as one module, each trial's numbers
the ones it gets alone (docs/packing.md). ``modules``: the packed forms of each model kind;
``fit``: which trials may share a pack, the pack's optimizer and its training."""
