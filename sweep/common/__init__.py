"""What every stage uses, and nothing of the sweep's own: layer 0, importing no other stage.

The public face, one module each: ``atomic`` (``write_atomic``, ``replacing``: a file is whole
or untouched; ``WriteError``), ``digest`` (``json_digest``, ``file_digest``: the names of
caches and studies), ``secrets`` (``mask``: passwords out of logs and files), ``overrides``
(``override_key``), ``stop`` (``Stopped``, ``install``: SIGTERM and SIGINT end a run cleanly;
``TimeBudget``: ``search.timeout_s``), ``closed`` (``check_keys``: a mapping read against a
closed schema)."""
