"""Downloads against a loopback HTTP server: checksums, atomic files, resume, clear failures."""

from __future__ import annotations

import hashlib
import socket

import pytest

from sweep.data.download import DownloadError, fetch

DATA = bytes(range(256)) * 4000  # 1 MB, several read chunks


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_download_verifies_and_is_not_repeated(file_server, tmp_path):
    file_server.files["/d.bin"] = DATA
    dest = tmp_path / "raw" / "d.bin"
    assert fetch(file_server.url + "/d.bin", dest, sha(DATA), progress=False) == dest
    assert dest.read_bytes() == DATA
    assert not dest.with_name("d.bin.part").exists()
    fetch(file_server.url + "/d.bin", dest, sha(DATA), progress=False)
    assert len(file_server.requests) == 1  # the verified file is reused, not fetched again


def test_md5_checksums_work_too(file_server, tmp_path):
    file_server.files["/d.bin"] = DATA
    checksum = "md5:" + hashlib.md5(DATA).hexdigest()
    assert fetch(file_server.url + "/d.bin", tmp_path / "d.bin", checksum, progress=False)


def test_corrupted_file_is_rejected_and_never_left_in_place(file_server, tmp_path):
    corrupted = bytearray(DATA)
    corrupted[500_000] ^= 0xFF
    file_server.files["/d.bin"] = bytes(corrupted)
    dest = tmp_path / "d.bin"
    with pytest.raises(DownloadError) as caught:
        fetch(file_server.url + "/d.bin", dest, sha(DATA), progress=False)
    message = str(caught.value)
    assert hashlib.sha256(DATA).hexdigest() in message and "by hand" in message
    assert str(dest) in message
    assert not dest.exists() and not dest.with_name("d.bin.part").exists()


def test_a_damaged_file_in_place_is_replaced(file_server, tmp_path):
    file_server.files["/d.bin"] = DATA
    dest = tmp_path / "d.bin"
    dest.write_bytes(DATA[:1000])  # e.g. copied by hand, but truncated
    fetch(file_server.url + "/d.bin", dest, sha(DATA), progress=False)
    assert dest.read_bytes() == DATA


def test_dropped_connection_resumes_from_the_received_bytes(file_server, tmp_path):
    file_server.files["/d.bin"] = DATA
    file_server.drop_after["/d.bin"] = [300_000]  # the first response breaks after 300 kB
    dest = tmp_path / "d.bin"
    fetch(file_server.url + "/d.bin", dest, sha(DATA), backoff=0, progress=False)
    assert dest.read_bytes() == DATA
    ranges = [r for _, r in file_server.requests]
    assert ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 300_000  # resumed, not restarted


def test_interrupted_download_keeps_its_part_and_the_next_run_resumes(file_server, tmp_path):
    file_server.files["/d.bin"] = DATA
    file_server.drop_after["/d.bin"] = [200_000, 100_000]
    dest = tmp_path / "d.bin"
    with pytest.raises(DownloadError, match="next run resumes"):
        fetch(file_server.url + "/d.bin", dest, sha(DATA), retries=1, backoff=0, progress=False)
    part = dest.with_name("d.bin.part")
    assert not dest.exists()  # a partial download is never used
    kept = part.stat().st_size
    assert 200_000 <= kept < len(DATA)
    assert part.read_bytes() == DATA[:kept]
    fetch(file_server.url + "/d.bin", dest, sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert file_server.requests[-1][1] == f"bytes={kept}-"


def test_server_without_range_support_restarts_cleanly(file_server, tmp_path):
    file_server.files["/d.bin"] = DATA
    file_server.no_range = True
    file_server.drop_after["/d.bin"] = [250_000]
    dest = tmp_path / "d.bin"
    fetch(file_server.url + "/d.bin", dest, sha(DATA), backoff=0, progress=False)
    assert dest.read_bytes() == DATA


def test_offline_error_says_where_to_put_the_file(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dest = tmp_path / "raw" / "d.bin"
    url = f"http://127.0.0.1:{port}/d.bin"
    with pytest.raises(DownloadError) as caught:
        fetch(url, dest, sha(DATA), retries=0, progress=False)
    message = str(caught.value)
    assert "Offline?" in message and url in message and str(dest) in message


def test_missing_file_names_the_url(file_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(file_server.url + "/gone.bin", tmp_path / "g.bin", sha(DATA), progress=False)
