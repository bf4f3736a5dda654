"""Atomic file writes: a temp file in the target's folder, renamed over the target when complete.

Readers (a resumed sweep, another worker, a browser) then see the old file or the new one,
never a half-written one, and a failed write leaves no temp file behind. The file gets the mode an
ordinary ``open`` would give it (0666 less the umask), not ``mkstemp``'s private 0600, so others
on a shared machine can read the reports when the umask lets them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set and restore at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path: Path, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temp path beside ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
