"""Digests: one way to fingerprint a set of settings, one way to hash a file.

A setup's identity (the study signature, the encoded-corpus cache key, the corpus fingerprint,
a data set's converted folder, the default study name) is the SHA-256 of its JSON with sorted
keys, cut to the length its use needs; a file's is the hash of its bytes, read in chunks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def json_digest(parts: Any, length: int | None = None) -> str:
    """Hex SHA-256 of ``parts`` as JSON (sorted keys; values JSON lacks as their ``str``)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm``: any hashlib name: sha256, md5, sha1)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
