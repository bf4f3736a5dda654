"""Stage 1a, readers: read one data file, local or remote, into a DataFrame.

Formats: CSV, TSV, JSONL and Parquet, optionally gzip/bz2/xz/zstd/zip compressed. Paths with a
protocol (``s3://``, ``gs://``, ``hf://``, ``http(s)://``, any fsspec protocol) are copied once
into ``<data.cache_dir>/remote/`` under a key made of the URL and the remote file's size and
version tag (ETag, checksum or modification time), so a rerun reads the local copy and a changed
remote file is fetched again (always, when the server gives no version tag). Every error is a ``DataError`` naming the config key and the file.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import tempfile
from pathlib import Path

import pandas as pd

from sweep.common.atomic import replacing

log = logging.getLogger(__name__)

_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}
_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}
# Which pip package brings each fsspec protocol (fsspec's own import errors name the module).
_PROTOCOL_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "hf": "huggingface_hub",
    "http": "aiohttp",
    "https": "aiohttp",
    "az": "adlfs",
    "abfs": "adlfs",
}


class DataError(ValueError):
    """Bad input data or data config; the message names the key or file and what to do."""


def shorten(value, limit: int = 80) -> str:
    """``repr``-free text of a value from the data, cut to ``limit`` characters for messages
    (a headerless file's first line can be a megabyte long)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text):,} characters)"


def is_url(path_text: str) -> bool:
    """True for ``protocol://...`` paths (``file://`` included), which fsspec reads."""
    return "://" in str(path_text)


def table_format(name: str, fmt: str) -> tuple[str, str | None]:
    """Return (format, compression) of a file name; ``fmt`` other than 'auto' wins."""
    suffixes = [s.lower() for s in Path(name.split("?")[0]).suffixes]
    compression = None
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        compression = _COMPRESSIONS[suffixes.pop()]
    if fmt != "auto":
        if fmt not in set(_FORMATS.values()):
            raise DataError(f"data.format={fmt!r} is unknown: use csv, tsv, jsonl or parquet")
        return fmt, compression
    if suffixes and suffixes[-1] in _FORMATS:
        return _FORMATS[suffixes[-1]], compression
    raise DataError(
        f"{name}: cannot tell the format from the file name; name it .csv, .tsv, .jsonl or "
        ".parquet (optionally .gz), or set data.format=csv|tsv|jsonl|parquet"
    )


def local_path(split: str, path_text: str, cache_dir: str | None) -> Path:
    """The local file to read for ``data.<split>``: the path itself, or a cached remote copy."""
    if not is_url(path_text) or str(path_text).startswith("file://"):
        path = Path(str(path_text).removeprefix("file://")).expanduser()
        if path.is_dir():
            raise DataError(
                f"data.{split}: {str(path)!r} is a folder; pass one file (CSV, TSV, JSONL or "
                "Parquet) in it"
            )
        if not path.is_file():
            raise DataError(f"data.{split}: file {str(path)!r} not found; pass an existing path")
        return path
    return fetch_remote(split, str(path_text), cache_dir)


def fetch_remote(split: str, url: str, cache_dir: str | None) -> Path:
    """Copy a remote file into the cache once (atomically); return the local copy."""
    import fsspec

    try:
        fs, remote = fsspec.core.url_to_fs(url)
        info = fs.info(remote)
    except ImportError as error:
        protocol = url.split("://", 1)[0]
        package = _PROTOCOL_PACKAGES.get(protocol, f"the fsspec backend for {protocol}://")
        raise DataError(
            f"data.{split}={url!r}: reading {protocol}:// needs {package}; install it "
            f"(pip install {package}) or the remote extra (pip install "
            f"'embedding-sweep[remote]'), or download the file and pass its local path"
        ) from error
    except FileNotFoundError as error:
        raise DataError(f"data.{split}: {url!r} does not exist; check the URL") from error
    except ValueError as error:
        if "Protocol not known" not in str(error):
            raise
        raise DataError(
            f"data.{split}={url!r}: fsspec knows no protocol {url.split('://', 1)[0]!r}; use "
            "a local path or s3://, gs://, hf://, http(s)://, ..."
        ) from error
    except Exception as error:  # fsspec backends raise their own types (auth, network, ...)
        raise DataError(
            f"data.{split}: cannot reach {url!r} ({type(error).__name__}: {error}); check "
            "the URL, your credentials and the network, or download the file and pass its "
            "local path"
        ) from error
    if info.get("type") == "directory":
        raise DataError(f"data.{split}: {url!r} is a folder; pass one file")
    version = next(
        (info[k] for k in ("ETag", "etag", "md5", "sha256", "mtime", "LastModified") if k in info),
        None,
    )
    key = hashlib.sha256(repr((url, info.get("size"), str(version))).encode()).hexdigest()[:16]
    root = Path(cache_dir or Path(tempfile.gettempdir()) / "embedding-sweep").expanduser()
    name = Path(remote.split("?")[0]).name or "data"
    target = root / "remote" / key / name
    # Without a version tag (some HTTP servers send none) a same-sized new file would look
    # unchanged: fetch it again rather than trust the copy.
    if target.is_file() and version is not None:
        log.info("data.%s: using the cached copy %s of %s", split, target, url)
        return target
    log.info("data.%s: downloading %s to %s", split, url, target)
    try:
        with replacing(target, suffix=".part") as tmp:  # a half-copied file is never read
            fs.get_file(remote, tmp)
    except Exception as error:
        raise DataError(f"data.{split}: copying {url!r} failed ({error}); try again") from error
    return target


def read_table(split: str, path: Path, fmt: str, encoding: str = "utf-8") -> pd.DataFrame:
    """Read one local data file; errors name ``data.<split>``, the file and, for bytes that
    are not in ``encoding``, the line."""
    kind, compression = table_format(path.name, fmt)
    try:
        codecs.lookup(encoding)
    except LookupError as error:
        raise DataError(
            f"data.encoding={encoding!r} is not a known text encoding: use utf-8, latin-1, "
            "cp1252, ..."
        ) from error
    try:
        if kind in ("csv", "tsv"):
            return read_delimited(split, path, kind, encoding, compression)
        if kind == "jsonl":
            return pd.read_json(
                path, lines=True, dtype=False, encoding=encoding, compression=compression
            )
        return pd.read_parquet(path)
    except UnicodeDecodeError as error:
        line = first_bad_line(path, compression, encoding)
        raise DataError(
            f"data.{split}: {str(path)!r} is not valid {encoding} ({line}: {error.reason}); "
            "set data.encoding to the file's encoding "
            "(e.g. data.encoding=latin-1) or re-save it as UTF-8"
        ) from error
    except DataError:
        raise
    except ImportError as error:  # pandas' optional readers: zstandard for .zst, ...
        raise DataError(
            f"data.{split}: reading {str(path)!r} needs a package that is not installed "
            f"({error}); install it with pip, or store the file uncompressed or gzipped"
        ) from error
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"data.{split}: cannot read {str(path)!r} as {kind}: {error}") from error


def read_delimited(
    split: str, path: Path, kind: str, encoding: str, compression: str | None
) -> pd.DataFrame:
    """A CSV or TSV file, every row with as many fields as its header. pandas would take a
    first row with one field too many as a sign that the file has an index column and shift
    every column by one (texts read as labels, most rows then dropped or "one class"); here
    such a row stops the read with a ``DataError`` naming the file and the line."""
    import csv
    import warnings

    tsv = kind == "tsv"
    options = {"sep": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(path, keep_default_na=False, dtype=str, encoding=encoding,
                               compression=compression, index_col=False, **options)  # fmt: skip
        except pd.errors.ParserWarning:
            pass  # a row longer than the header: find it for the message
        except pd.errors.ParserError as error:
            if "Expected" not in str(error):
                raise
    header, line = field_count_mismatch(path, compression, encoding, tsv)
    raise DataError(
        f"data.{split}: {str(path)!r} line {line} has more fields than its header's {header}: "
        + ("a text may hold no tab in a TSV file" if tsv
           else 'a text holding a comma must be quoted ("like, this")')
        + "; fix that row, or store the data as JSONL or Parquet"
    )  # fmt: skip


def field_count_mismatch(
    path: Path, compression: str | None, encoding: str, tsv: bool
) -> tuple[int, int | str]:
    """(the header's field count, the first line of a row with more fields) of a CSV/TSV."""
    import csv

    with pd.io.common.get_handle(str(path), "r", encoding=encoding,
                                 compression=compression) as handles:  # fmt: skip
        reader = csv.reader(handles.handle, **({"delimiter": "\t", "quoting": csv.QUOTE_NONE}
                                                if tsv else {}))  # fmt: skip
        header = len(next(reader, []))
        for row in reader:
            if len(row) > header:
                return header, reader.line_num
    return header, "?"


def first_bad_line(path: Path, compression: str | None, encoding: str) -> str:
    """Where the first undecodable bytes are, as ``line N, byte B`` (1-based) for messages."""
    import bz2
    import gzip
    import lzma

    openers = {None: open, "gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
    opener = openers.get(compression)
    if opener is None:
        return "line ?"
    decoder = codecs.getincrementaldecoder(encoding)()
    with opener(path, "rb") as handle:
        for number, raw in enumerate(io.BufferedReader(handle), start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as error:
                return f"line {number}, byte {error.start + 1}"
    return "line ?"
