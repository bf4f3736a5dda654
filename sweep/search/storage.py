"""The study storage: open it safely, repair a torn journal, name the file or URL in every error.

Default: a journal file per study (``<storage_dir>/<study_name>/journal.log``), safe for several
processes on one machine. ``search.storage`` takes any Optuna URL (sqlite, postgresql, mysql) or a
journal file path. What this module guarantees:

- a journal whose last record was cut short (disk full, a crash mid-append) is repaired before
  anything is appended: the partial record is dropped, a backup of the file is kept, and a
  warning names the file and the bytes dropped; every finished record before it is kept;
- a journal with a damaged record elsewhere, a corrupt SQLite file, an SQLite path in a missing
  folder or an unreachable database stops with one line naming the (masked) file or URL;
- reading a study (``open_existing``) never creates an empty storage by mistake.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import optuna

from sweep.common.secrets import mask

log = logging.getLogger(__name__)


class StorageError(ValueError):
    """The study storage cannot be opened or read; the message names the file or masked URL."""


def is_url(storage: str) -> bool:
    return "://" in str(storage)


def default_journal(search_cfg) -> Path:
    """``<storage_dir>/<study_name>/journal.log``."""
    return Path(search_cfg.storage_dir).expanduser() / search_cfg.study_name / "journal.log"


def make_storage(search_cfg, create: bool = True) -> optuna.storages.BaseStorage | str:
    """The study storage: a journal file per study by default, else the configured URL or path.

    ``create=False`` (rebuilding reports) refuses a journal or SQLite file that does not exist.
    """
    url = search_cfg.get("storage")
    if not url:
        return journal_storage(default_journal(search_cfg), create=create)
    url = str(url)
    if not is_url(url):
        return journal_storage(Path(url).expanduser(), create=create)
    if url.startswith("sqlite:///"):
        check_sqlite(url, create=create)
    if not create:
        return url  # loaded by optuna.load_study; errors caught in study.load_study
    return database_storage(url)


def database_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's storage of a database URL (sqlite, postgresql, mysql), its tables made.

    On a fresh database two processes that open it at once race to make Optuna's tables (one
    gets ``IntegrityError: UNIQUE constraint failed: alembic_version.version_num``, or on
    PostgreSQL a duplicate table or type; optuna issues 1092 and 4621): the loser tries again,
    and finds them made. (``search.workers`` makes them in the parent before any worker starts,
    so only processes started by hand or by a cluster's launcher meet here.) Any other failure
    is one line naming ``search.storage`` (``StorageError``)."""
    from sqlalchemy import exc

    attempt = 1
    while True:
        try:
            return optuna.storages.RDBStorage(url)
        except (exc.IntegrityError, exc.ProgrammingError) as error:
            if attempt == attempts:
                raise storage_failure(mask(url), error) from None
            log.debug("storage %s: made by another process at once (%s); again", mask(url),
                      type(error).__name__)  # fmt: skip
        except ImportError:
            raise StorageError(
                f"search.storage={mask(url)}: the database driver for this URL is not installed "
                '(PostgreSQL: pip install -e ".[postgres]")'
            ) from None
        except storage_errors() as error:  # server down, bad credentials, a corrupt file
            raise storage_failure(mask(url), error) from None
        time.sleep(0.2 * attempt)
        attempt += 1


def check_storage(search_cfg) -> None:
    """What can be checked of ``search.storage`` before any work, without opening it: a path
    that exists is a journal (a user's own file is refused, untouched), an SQLite file's
    folder exists. A database server is reached only when the study opens."""
    url = search_cfg.get("storage")
    if not url:
        return
    url = str(url)
    if url.startswith("sqlite:///"):
        check_sqlite(url, create=True)
    elif not is_url(url):
        path = Path(url).expanduser()
        if path.is_dir():
            raise StorageError(f"search.storage={url!r} is a folder; a journal storage is one file")
        if path.is_file():
            check_journal_file(path)


def describe_storage(search_cfg) -> str:
    """Where the study lives, for logs and reports (passwords masked)."""
    url = search_cfg.get("storage")
    return mask(str(url)) if url else str(default_journal(search_cfg))


def check_sqlite(url: str, create: bool) -> None:
    """An SQLite file's folder must exist; with ``create=False`` so must the file."""
    path = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).expanduser()
    if url.startswith("sqlite:///:memory:"):
        return
    if not path.parent.is_dir():
        raise StorageError(
            f"search.storage={mask(url)}: the folder {str(path.parent)!r} does not exist; create "
            "it or point the URL at an existing folder"
        )
    if not create and not path.is_file():
        raise StorageError(f"storage {mask(url)}: no file {str(path)!r}; check the path")


def journal_storage(path: Path, create: bool = True) -> optuna.storages.JournalStorage:
    """A journal file storage, repaired and checked first (see the module docstring)."""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = Path(path)
    if path.is_dir():
        raise StorageError(f"storage {str(path)!r} is a folder; a journal storage is one file")
    if not path.is_file():
        if not create:
            raise StorageError(f"storage {str(path)!r} does not exist; check the path")
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        check_journal_file(path)  # a user's own file is never repaired (truncated) as a journal
    lock = JournalFileOpenLock(str(path))
    if path.is_file():
        lock.acquire()  # the lock writers hold: no append is half done while we look
        try:
            repair_journal(path)
        finally:
            lock.release()
    backend = JournalFileBackend(str(path), lock_obj=lock)
    try:
        return optuna.storages.JournalStorage(backend)
    except (ValueError, KeyError, TypeError) as error:  # records that are JSON but not Optuna's
        raise StorageError(
            f"storage {str(path)!r} is not an Optuna journal ({type(error).__name__}: {error}); "
            "point search.storage elsewhere or move the file away"
        ) from error


def check_journal_file(path: Path) -> None:
    """Refuse an existing file that is not an Optuna journal (a CSV, a database, anything a
    user typed the path of by mistake), before anything opens it for writing: its first record,
    even a torn one, is a JSON object with an ``op_code``. An empty file is a new journal."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head:
        return
    first = head.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
        looks = isinstance(record, dict) and "op_code" in record
    except ValueError:  # a first record cut short (a crash while the journal was new)
        looks = b"\n" not in head and head.lstrip().startswith(b'{"op_code"')
    if not looks:
        raise StorageError(
            f"search.storage: {str(path)!r} exists and is not an Optuna journal (it starts with "
            f"{head[:40]!r}); nothing was changed. Point search.storage at a new file, an "
            "existing journal or a database URL"
        )


def repair_journal(path: Path) -> int:
    """Drop a torn last record of a journal file; return the bytes dropped (0: nothing to do).

    Every complete record must be a JSON line; a damaged one before the end is not a torn tail
    (nothing safe to drop), so it stops with the file and line number.
    """
    data = path.read_bytes()
    if not data:
        return 0
    end = data.rfind(b"\n") + 1  # everything after the last newline is a partial record
    for number, line in enumerate(data[:end].splitlines(), start=1):
        try:
            json.loads(line)
        except ValueError:
            raise StorageError(
                f"storage {str(path)!r}: line {number} is not a journal record (damaged file); "
                "restore it from a backup, delete that line, or start over with another "
                "search.study_name"
            ) from None
    dropped = len(data) - end
    if dropped:
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        shutil.copy2(path, backup)
        with path.open("r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
        log.warning(
            "storage %s: its last record was cut short (a crash or a full disk while writing): "
            "dropped its %d bytes, kept the %d complete records before it; the file as it was "
            "is saved as %s",
            path,
            dropped,
            data[:end].count(b"\n"),
            backup,
        )
    return dropped


def storage_errors() -> tuple[type[BaseException], ...]:
    """Exception types a storage raises when it cannot be reached or read (SQLAlchemy's)."""
    types: list[type[BaseException]] = [OSError]
    try:
        import sqlalchemy.exc

        types.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:
        pass
    return tuple(types)


def storage_failure(storage_text: str, error: BaseException) -> StorageError:
    """One line for a storage that cannot be opened: the masked URL and the first error line."""
    first = mask(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    return StorageError(
        f"cannot open the study storage {storage_text} ({type(error).__name__}: {first[:300]}); "
        "check that the server is up, the URL (search.storage) and the credentials, or that the "
        "file is an Optuna storage"
    )
