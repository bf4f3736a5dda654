"""Downloads of the named public data sets: checked, atomic, resumable, with a progress bar.

``fetch(url, dest, checksum)`` writes to ``dest.part`` and renames it to ``dest`` only when the
bytes match the checksum, so a partial or corrupted download is never used. A dropped
connection resumes from the bytes already in ``dest.part`` (HTTP Range), in the same call up to
``retries`` times and in the next run after that. A lock file keeps two workers that start at
the same time from writing one ``.part`` file together. Offline, the error says where to put
the file by hand.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from sweep.common.digest import file_digest
from sweep.data.readers import DataError

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
USER_AGENT = "embedding-sweep (https://pypi.org/project/embedding-sweep)"


class DownloadError(DataError):
    """A download failed or its bytes did not match the checksum; the message says what to do."""


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``'sha256:<hex>'`` or ``'md5:<hex>'`` -> (algorithm, lowercase hex digest)."""
    algorithm, _, digest = str(checksum).partition(":")
    if algorithm not in ("sha256", "md5", "sha1") or not digest:
        raise DataError(
            f"checksum {checksum!r} must be 'sha256:<hex>' (or md5:/sha1:); got neither"
        )
    return algorithm, digest.lower()


def by_hand(url: str, dest: Path, checksum: str) -> str:
    return (
        f"download {url} by hand (a browser, curl -L -o, or another machine) and put it at "
        f"{dest} (its {checksum.split(':')[0]} must be {checksum.split(':', 1)[1]})"
    )


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on ``path`` (POSIX flock; no lock where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(
    url: str,
    dest: Path,
    checksum: str,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 2.0,
    progress: bool | None = None,
) -> Path:
    """Return ``dest`` holding the bytes of ``url`` that match ``checksum``; download if needed."""
    algorithm, expected = parse_checksum(checksum)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file():
            if file_digest(dest, algorithm) == expected:
                return dest
            log.warning("%s does not match its checksum; downloading it again", dest)
            dest.unlink()
        part = dest.with_name(dest.name + ".part")
        for attempt in range(retries + 1):
            try:
                _download(url, part, timeout, progress)
                break
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                if isinstance(error, urllib.error.HTTPError) and error.code in (403, 404, 410):
                    raise DownloadError(
                        f"{url} answered HTTP {error.code}; the source may have moved: "
                        + by_hand(url, dest, checksum)
                        + ", or set the data set's url to a mirror"
                    ) from error
                have = part.stat().st_size if part.exists() else 0
                if attempt == retries:
                    raise DownloadError(
                        f"could not download {url} ({type(error).__name__}: {error}); "
                        f"{have} bytes are kept in {part} and the next run resumes from them. "
                        "Offline? " + by_hand(url, dest, checksum)
                    ) from error
                wait = backoff * 2**attempt
                log.warning(
                    "download of %s interrupted at %d bytes (%s); resuming in %.0f s",
                    url,
                    have,
                    error,
                    wait,
                )
                time.sleep(wait)
        got = file_digest(part, algorithm)
        if got != expected:
            size = part.stat().st_size
            part.unlink()  # never resume from bytes that are known to be wrong
            raise DownloadError(
                f"{url}: the downloaded file ({size} bytes) has {algorithm} {got}, expected "
                f"{expected}; it was deleted. The source may be corrupted or changed: try "
                "again, or " + by_hand(url, dest, checksum)
            )
        os.replace(part, dest)  # atomic: dest only ever holds verified bytes
        log.info("downloaded %s to %s (%s verified)", url, dest, algorithm)
        return dest


def _download(url: str, part: Path, timeout: float, progress: bool | None) -> None:
    """Download ``url`` into ``part``, resuming from its current size when the server can."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part file already holds every byte
            return
        raise
    with response:
        if have and response.status != 206:
            log.info("%s does not resume downloads; starting again from byte 0", url)
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            part.open("ab" if have else "wb") as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=None if progress is None else not progress,  # None: only on a terminal
            ) as bar,
        ):
            received = have
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (TimeoutError, http.client.IncompleteRead) as error:
                    raise ConnectionError(f"connection dropped: {error}") from error
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise ConnectionError(f"connection closed after {received} of {total} bytes")
