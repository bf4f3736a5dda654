"""Stage 1-2, data: sources, reading, the vocabulary, and the corpus prepared once.

The public face: ``prepared.PreparedData`` (the data of a study, encoded once and on the
device; ``SplitTensors`` per split), which every later stage reads. Below it, one job per
module: ``corpus`` (``load_corpus``: texts and labels of every split, ``DataError``),
``readers`` (CSV, TSV, JSONL, Parquet, local or at a URL), ``datasets`` and
``download`` (the named sets and their cached downloads), ``synthetic`` (the built-in corpus),
``vocab`` (tokenize once, ids by train frequency, ``cut`` to a vocabulary size: ``PAD`` 0,
``UNK`` 1)."""
