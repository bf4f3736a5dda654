"""Named data sets end to end against a loopback server: fixture files in each source's layout
are downloaded, verified, converted once, and loaded as a corpus with the right classes."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import pytest
from conftest import compose_config

from sweep.data.corpus import load_corpus
from sweep.data.download import DownloadError


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zhang_csv(rows) -> bytes:
    return "".join(",".join(f'"{f}"' for f in row) + "\n" for row in rows).encode()


def fixtures(n: int = 30) -> dict[str, dict[str, bytes]]:
    """Per data set: source file key -> bytes, in the real source's layout, n docs per split."""
    docs = {split: range(n) for split in ("train", "test")}
    sst = {
        s: "sentence\tlabel\n" + "".join(f"{s} sentence {i} good\t{i % 2}\n" for i in docs[s])
        for s in docs
    }
    sst_zip = io.BytesIO()
    with zipfile.ZipFile(sst_zip, "w") as archive:
        archive.writestr("SST-2/train.tsv", sst["train"])
        archive.writestr("SST-2/dev.tsv", sst["test"])
        archive.writestr("SST-2/test.tsv", "index\tsentence\n0\tunlabelled\n")
    return {
        "trec": {
            s: "".join(
                f"{['HUM:ind', 'LOC:city', 'NUM:date'][i % 3]} What is {s} question {i} ?\n"
                for i in docs[s]
            ).encode("latin-1")
            + b"DESC:def What is a sister\xf0city ?\n"
            for s in docs
        },
        "ag_news": {
            s: zhang_csv((i % 4 + 1, f"Title {i}", f"{s} news body {i}\\nmore") for i in docs[s])
            for s in docs
        },
        "dbpedia": {
            "archive": tar_gz(
                {
                    "dbpedia_csv/classes.txt": b"Company\nArtist\n",
                    "dbpedia_csv/readme.txt": b"readme",
                    **{
                        f"dbpedia_csv/{s}.csv": zhang_csv(
                            (i % 2 + 1, f"Name {i}", f"{s} abstract {i}") for i in docs[s]
                        )
                        for s in docs
                    },
                }
            )
        },
        "yelp_polarity": {
            "archive": tar_gz(
                {
                    f"yelp_review_polarity_csv/{s}.csv": zhang_csv(
                        (i % 2 + 1, f"{s} review {i} \\n second line") for i in docs[s]
                    )
                    for s in docs
                }
            )
        },
        "imdb": {
            "archive": tar_gz(
                {
                    f"aclImdb/{s}/{['neg', 'pos'][i % 2]}/{i}_7.txt": (
                        f"{s} review {i}<br />great film".encode()
                    )
                    for s in docs
                    for i in docs[s]
                }
                | {"aclImdb/train/unsup/0_0.txt": b"unlabelled", "aclImdb/README": b"x"}
            )
        },
        "20newsgroups": {
            "archive": tar_gz(
                {
                    f"20news-bydate-{s}/{['sci.space', 'rec.autos'][i % 2]}/{1000 + i}": (
                        f"From: a@b\n\n{s} post {i} caf\xe9".encode("latin-1")
                    )
                    for s in docs
                    for i in docs[s]
                }
            )
        },
        "sst2": {"archive": sst_zip.getvalue()},
    }


EXPECTED_CLASSES = {
    "trec": ["DESC", "HUM", "LOC", "NUM"],
    "ag_news": ["Business", "Sci/Tech", "Sports", "World"],
    "dbpedia": ["Artist", "Company"],
    "yelp_polarity": ["negative", "positive"],
    "imdb": ["negative", "positive"],
    "20newsgroups": ["rec.autos", "sci.space"],
    "sst2": ["negative", "positive"],
}


def serve(file_server, tmp_path, name: str, files: dict[str, bytes], corrupt: str = ""):
    overrides = [f"data={name}", f"data.root={tmp_path / 'datasets'}", "data.download_retries=0"]
    for key, data in files.items():
        path = f"/{name}/{key}.bin"
        served = data if key != corrupt else data[:-10] + b"corrupted!"
        file_server.files[path] = served
        overrides += [
            f"data.files.{key}.url={file_server.url}{path}",
            f"data.files.{key}.checksum=sha256:{hashlib.sha256(data).hexdigest()}",
        ]
    return compose_config(overrides).data


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_named_data_set_downloads_converts_and_loads(file_server, tmp_path, name):
    files = fixtures()[name]
    cfg = serve(file_server, tmp_path, name, files)
    corpus = load_corpus(cfg, seed=0)
    assert corpus.label_names == EXPECTED_CLASSES[name]
    texts = [t for s in corpus.texts for t in corpus.texts[s]]
    assert len(texts) >= 60 and all(t.strip() for t in texts)
    assert any("test" in t for t in corpus.texts["test"])
    assert not any("test" in t for t in corpus.texts["train"])  # the source's split is kept
    requests = len(file_server.requests)
    again = load_corpus(cfg, seed=0)  # converted once: no download, same corpus
    assert len(file_server.requests) == requests
    assert again.texts == corpus.texts and again.fingerprint == corpus.fingerprint


def test_converters_decode_and_clean_the_raw_text(file_server, tmp_path):
    data = fixtures()
    trec = load_corpus(serve(file_server, tmp_path, "trec", data["trec"]), seed=0)
    every = [t for s in trec.texts for t in trec.texts[s]]
    assert "What is a sister\xf0city ?" in every  # TREC's stray Latin-1 byte, decoded
    imdb = load_corpus(serve(file_server, tmp_path, "imdb", data["imdb"]), seed=0)
    assert not any("<br />" in t for s in imdb.texts for t in imdb.texts[s])
    assert not any("unlabelled" in t for s in imdb.texts for t in imdb.texts[s])
    news = load_corpus(serve(file_server, tmp_path, "20newsgroups", data["20newsgroups"]), seed=0)
    assert any(t.endswith("caf\xe9") for t in news.texts["train"])


def test_trec_fine_labels_option(file_server, tmp_path):
    cfg = serve(file_server, tmp_path, "trec", fixtures()["trec"])
    cfg.options.labels = "fine"
    assert load_corpus(cfg, seed=0).label_names == ["DESC:def", "HUM:ind", "LOC:city", "NUM:date"]


def test_corrupted_source_fails_before_anything_is_converted(file_server, tmp_path):
    cfg = serve(file_server, tmp_path, "sst2", fixtures()["sst2"], corrupt="archive")
    with pytest.raises(DownloadError, match="expected"):
        load_corpus(cfg, seed=0)
    root = tmp_path / "datasets" / "sst2"
    assert [p.name for p in root.iterdir()] == ["raw"]  # nothing converted
    assert not any(p.suffix != ".lock" for p in (root / "raw").iterdir())


def test_every_named_config_has_a_checked_source():
    for name in EXPECTED_CLASSES:
        cfg = compose_config([f"data={name}"]).data
        assert cfg.source == "named" and cfg.dataset == name
        for spec in cfg.files.values():
            assert spec.url.startswith(("https://", "http://"))
            algorithm, _, digest = spec.checksum.partition(":")
            assert algorithm in ("sha256", "md5")
            assert len(digest) == {"sha256": 64, "md5": 32}[algorithm]
            int(digest, 16)
