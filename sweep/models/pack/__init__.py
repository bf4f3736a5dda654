"""Packed trials: several trials' models trained together as one module, each trial's numbers
the ones it gets alone (docs/packing.md).

The public face, one module each (imported by name: ``sweep.models.kinds`` registers the packed
forms, so this package imports nothing on its own):

- ``grouping``: ``pack_key`` and ``split_by_width``, which trials may share a pack;
- ``member``: ``Member``, one trial in a pack (a member of the epoch loop, and its dropout stream);
- ``modules``: the packed form of each model kind (``Packed``);
- ``optim``: ``PackedOptimizer``, the pack's Adam, from and back to each trial's own;
- ``fit``: ``fit_pack``, a pack's training through the lone trial's epoch loop."""
