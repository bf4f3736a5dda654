"""Atomic file writes: a temp file in the target's folder, renamed over the target when complete.

Readers (a resumed sweep, another worker, a browser) then see the old file or the new one,
never a half-written one, and a failed write leaves no temp file behind. The file gets the mode an
ordinary ``open`` would give it (0666 less the umask), not ``mkstemp``'s private 0600, so others
on a shared machine can read the reports when the umask lets them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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


class WriteError(OSError):
    """A file of the sweep's (a report, an exported model) could not be written (full disk, no
    permission): one line for the user, naming the file and the free space. The study storage
    holds every finished trial, so the same command writes it again."""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename.

    An ``OSError`` becomes a ``WriteError`` naming the folder and its free space; the old file
    (if any) is left whole.
    """
    path = Path(path)
    try:
        with replacing(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    except OSError as error:
        raise WriteError(
            f"cannot write the report {str(path)!r} ({error.strerror or error}); "
            f"{free_space(path.parent)} free in {str(path.parent)!r}. Free some space or "
            "choose another folder (hydra.run.dir=...); the study storage keeps every finished "
            "trial: rerun the same command, or python -m sweep.report, to write the reports"
        ) from None


def free_space(folder: Path) -> str:
    """Free space on ``folder``'s file system in MB (e.g. ``12.3 MB``), or ``unknown``."""
    try:
        return f"{shutil.disk_usage(folder).free / 1e6:,.1f} MB"
    except OSError:
        return "unknown"
