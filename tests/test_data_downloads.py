"""Downloads: checksum-verified, atomic, and a clear error within seconds when offline. Never the real network."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import socket
import tarfile
import time

import numpy as np
import pytest

from cnnkit import datasets
from cnnkit.data import catalog, downloads
from cnnkit.data.downloads import RemoteFile, extract_archive, fetch
from cnnkit.errors import DataError
from official_formats import write_mnist


class _Response(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Answer downloads from ``files`` (URL -> bytes) instead of the network; returns the URLs asked for."""
    asked = []

    def fake_open(url, timeout):
        asked.append(url)
        if url not in files:
            raise OSError(f"{url}: connection refused")
        return _Response(files[url])

    monkeypatch.setattr(downloads, "_open", fake_open)
    return asked


def test_download_verifies_the_checksum_then_loads(tmp_path, monkeypatch):
    """An empty cache: MNIST's four files come from the (fake) mirror, are checked, and load."""
    source = tmp_path / "published"
    write_mnist(source)
    info = datasets.get_dataset_info("mnist")
    published = {r.urls[0]: (source / r.path).read_bytes() for r in info.files}
    # The registry holds the real MNIST's MD5s; these files have their own.
    files = tuple(dataclasses.replace(r, md5=hashlib.md5(published[r.urls[0]]).hexdigest()) for r in info.files)
    monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(info, files=files))
    asked = _serve(monkeypatch, published)
    cache = tmp_path / "cache"
    (x, y), _ = datasets.load_data("mnist", data_dir=cache)
    assert x.shape == (40, 28, 28, 1) and len(asked) == 4
    assert not list(cache.rglob("*.part"))  # no temporary file left behind
    datasets.load_data("mnist", data_dir=cache)
    assert len(asked) == 4  # cached: downloaded once


def test_a_download_with_the_wrong_checksum_is_not_kept(tmp_path, monkeypatch):
    remote = RemoteFile("x/data.bin", ("https://a.example/data.bin", "https://b.example/data.bin"), md5="0" * 32)
    _serve(monkeypatch, {"https://a.example/data.bin": b"tampered", "https://b.example/data.bin": b"also wrong"})
    with pytest.raises(DataError, match="md5 is .* not the published 0000") as err:
        fetch("thing", [remote], tmp_path, progress=False)
    assert "b.example" in str(err.value)  # the mirror was tried too
    assert not (tmp_path / "x" / "data.bin").exists() and not list((tmp_path / "x").iterdir())
    good = gzip.compress(b"payload")
    ok = RemoteFile("x/data.bin", ("https://a.example/data.bin", "https://b.example/data.bin"),
                    sha256=hashlib.sha256(good).hexdigest())  # fmt: skip
    _serve(monkeypatch, {"https://b.example/data.bin": good})  # first mirror down, second fine
    fetch("thing", [ok], tmp_path, progress=True)
    assert (tmp_path / "x" / "data.bin").read_bytes() == good


def _offline_message(err: pytest.ExceptionInfo, cache) -> str:
    message = str(err.value)
    assert "\n" not in message  # one line for the CLI
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com"):
        assert name in message
    assert str(cache / "MNIST" / "raw") in message
    return message


def test_offline_is_a_clear_error_within_seconds(tmp_path, monkeypatch):
    """Connection refused (a closed port) and a server that never answers both fail fast."""
    info = datasets.get_dataset_info("mnist")
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()  # nothing listens there now: connections are refused at once
    real_open = downloads._open
    monkeypatch.setattr(downloads, "_open", lambda url, timeout: real_open(f"http://127.0.0.1:{port}/x", timeout))
    started = time.perf_counter()
    with pytest.raises(DataError, match="cannot be downloaded") as err:
        datasets.load_data("mnist", data_dir=tmp_path)
    assert time.perf_counter() - started < 5
    assert "refused" in _offline_message(err, tmp_path).lower()
    assert not info.is_cached(tmp_path)

    silent = socket.socket()  # accepts connections (backlog) but never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        host, port = silent.getsockname()
        monkeypatch.setattr(downloads, "_open", lambda url, timeout: real_open(f"http://{host}:{port}/x", 0.5))
        started = time.perf_counter()
        with pytest.raises(DataError, match="cannot be downloaded"):
            datasets.load_data("mnist", data_dir=tmp_path)
        assert time.perf_counter() - started < 5
    finally:
        silent.close()


def test_cnnkit_offline_never_touches_the_network(tmp_path, monkeypatch, capsys):
    from cnnkit.cli import main

    monkeypatch.setattr(downloads, "_open", lambda url, timeout: pytest.fail(f"network used: {url}"))
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    with pytest.raises(DataError, match="CNNKIT_OFFLINE is set") as err:
        datasets.load_data("mnist", data_dir=tmp_path)
    _offline_message(err, tmp_path)
    # the CLI: one line, no traceback, exit 1
    assert main(["train", "--data", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("cnnkit: error: cifar10 is not in the data cache") and "\n" not in line
    assert "cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in line
    # placed by hand: used as it is, no network
    write_mnist(tmp_path)
    (x, _), _ = datasets.load_data("mnist", data_dir=tmp_path)
    assert len(x) == 40


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    assert downloads.data_root() == downloads.Path.home() / ".cache" / "cnnkit"
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "env"))
    assert downloads.data_root() == tmp_path / "env"
    assert downloads.data_root(tmp_path / "flag") == tmp_path / "flag"


def test_extraction_stays_inside_the_folder(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("ok/inside.txt", "../outside.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="damaged or incomplete archive"):
        extract_archive(archive, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "into" / "ok").exists()  # all or nothing: the staging folder is gone too
    assert not list((tmp_path / "into").iterdir())
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataError, match="cut.tar.gz: damaged"):
        extract_archive(tmp_path / "cut.tar.gz", tmp_path / "into")
    assert np.all([not p.name.startswith(".extract") for p in (tmp_path / "into").iterdir()])
