"""--download against a local HTTP server on 127.0.0.1: never the internet."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.unit.datafiles import cifar_tar_gz, random_idx_arrays, small_cifar_set, write_idx_set
from training.data import DatasetError, load_dataset
from training.data.download import CIFAR10_ARCHIVE
from training.data.idx import IDX_FILES, TRAIN_LABELS


@dataclass
class LocalServer:
    url: str
    requests: list[str] = field(default_factory=list)
    # Paths answered with a short body under a longer Content-Length (a dropped connection).
    truncate: set[str] = field(default_factory=set)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment would carry the loopback requests off this machine.
    for var in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """The folder the local server serves."""
    folder = tmp_path / "served"
    folder.mkdir()
    return folder


@pytest.fixture
def server(served: Path) -> Iterator[LocalServer]:
    state = LocalServer(url="")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path in state.truncate:
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"\x1f\x8b" + b"\x00" * 100)
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL that nothing listens on: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_download_from_mirror(
    tmp_path: Path, served: Path, server: LocalServer, name: str
) -> None:
    train_x, train_y, test_x, test_y = random_idx_arrays(5, 3, seed=7)
    write_idx_set(served, train_x, train_y, test_x, test_y, gz=True)
    data_dir = tmp_path / "data"

    ds = load_dataset(name, data_dir, download=True, mirror=server.url)

    # Into the data set's own folder: MNIST and Fashion-MNIST share file names.
    for base in IDX_FILES:
        arrived = data_dir / name / f"{base}.gz"
        assert arrived.read_bytes() == (served / f"{base}.gz").read_bytes()
    assert sorted(server.requests) == sorted(f"/{base}.gz" for base in IDX_FILES)
    np.testing.assert_array_equal(ds.train_images[..., 0], train_x)
    np.testing.assert_array_equal(ds.test_labels, test_y)
    assert _leftovers(data_dir) == []

    # Second call: everything is there, so nothing is fetched again.
    load_dataset(name, data_dir, download=True, mirror=server.url)
    assert len(server.requests) == len(IDX_FILES)


def test_idx_download_fetches_only_missing_files(
    tmp_path: Path, served: Path, server: LocalServer
) -> None:
    arrays = random_idx_arrays(5, 3, seed=8)
    write_idx_set(served, *arrays, gz=True)
    data_dir = tmp_path / "data"
    local = write_idx_set(data_dir / "mnist", *arrays, gz=False)
    local[TRAIN_LABELS].unlink()

    ds = load_dataset("mnist", data_dir, download=True, mirror=server.url)

    assert server.requests == [f"/{TRAIN_LABELS}.gz"]
    np.testing.assert_array_equal(ds.train_labels, arrays[1])


def test_idx_download_not_needed_when_files_present(tmp_path: Path, closed_port_url: str) -> None:
    write_idx_set(tmp_path, *random_idx_arrays())
    # The mirror is unreachable: this passes only if no download is attempted.
    ds = load_dataset("mnist", tmp_path, download=True, mirror=closed_port_url)
    assert len(ds.train_labels) == 5


def test_offline_failure_names_files_and_folder(tmp_path: Path, closed_port_url: str) -> None:
    data_dir = tmp_path / "data"

    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", data_dir, download=True, mirror=closed_port_url)

    message = str(err.value)
    assert "download of" in message
    assert "failed" in message
    assert "refused" in message.lower()  # why it failed
    assert str(data_dir / "mnist") in message  # where to put the files
    for base in IDX_FILES:
        assert f"{base}.gz" in message
    assert not any((data_dir / "mnist").iterdir())  # no half files


def test_http_error_is_reported(tmp_path: Path, server: LocalServer) -> None:
    data_dir = tmp_path / "data"  # the served folder is empty: every file is a 404

    with pytest.raises(DatasetError, match="HTTP 404") as err:
        load_dataset("fashion-mnist", data_dir, download=True, mirror=server.url)

    assert str(data_dir / "fashion-mnist") in str(err.value)
    assert not any((data_dir / "fashion-mnist").iterdir())


def test_dropped_connection_leaves_no_half_file(
    tmp_path: Path, served: Path, server: LocalServer
) -> None:
    write_idx_set(served, *random_idx_arrays(), gz=True)
    server.truncate.add(f"/{IDX_FILES[0]}.gz")
    data_dir = tmp_path / "data"

    with pytest.raises(DatasetError, match=r"download of .* failed"):
        load_dataset("mnist", data_dir, download=True, mirror=server.url)

    assert not (data_dir / "mnist" / f"{IDX_FILES[0]}.gz").exists()
    assert _leftovers(data_dir) == []


def test_mirror_without_trailing_slash(tmp_path: Path, served: Path, server: LocalServer) -> None:
    write_idx_set(served, *random_idx_arrays(), gz=True)
    ds = load_dataset("mnist", tmp_path / "data", download=True, mirror=server.url.rstrip("/"))
    assert len(ds.test_labels) == 3


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def test_cifar_archive_download_and_extract(
    tmp_path: Path, served: Path, server: LocalServer
) -> None:
    train, test = small_cifar_set(tmp_path / "batches", per_batch=2, n_test=2)
    cifar_tar_gz(tmp_path / "batches", served / CIFAR10_ARCHIVE)
    data_dir = tmp_path / "data"

    ds = load_dataset("cifar10", data_dir, download=True, mirror=server.url)

    assert server.requests == [f"/{CIFAR10_ARCHIVE}"]
    assert (data_dir / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert (data_dir / CIFAR10_ARCHIVE).is_file()  # kept, to re-extract offline
    assert ds.train_images.shape == (10, 32, 32, 3)
    expected = test[0].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ds.test_images, expected)
    np.testing.assert_array_equal(ds.train_labels, [label for _, ls in train for label in ls])
    assert _leftovers(data_dir) == []


def test_cifar_existing_archive_is_extracted_without_network(
    tmp_path: Path, closed_port_url: str
) -> None:
    small_cifar_set(tmp_path / "batches", per_batch=1, n_test=1)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cifar_tar_gz(tmp_path / "batches", data_dir / CIFAR10_ARCHIVE)

    ds = load_dataset("cifar10", data_dir, download=True, mirror=closed_port_url)

    assert len(ds.train_labels) == 5


def test_cifar_offline_failure(tmp_path: Path, closed_port_url: str) -> None:
    data_dir = tmp_path / "data"

    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir, download=True, mirror=closed_port_url)

    message = str(err.value)
    assert "download of" in message
    assert CIFAR10_ARCHIVE in message
    assert str(data_dir) in message
    assert "data_batch_1" in message
    assert not (data_dir / CIFAR10_ARCHIVE).exists()


def test_cifar_unsafe_archive_is_refused(tmp_path: Path, served: Path, server: LocalServer) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        payload = b"escaped"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    (served / CIFAR10_ARCHIVE).write_bytes(buffer.getvalue())
    data_dir = tmp_path / "data"

    with pytest.raises(DatasetError, match="cannot extract"):
        load_dataset("cifar10", data_dir, download=True, mirror=server.url)

    assert not (tmp_path / "escaped.txt").exists()
    assert not (data_dir / "escaped.txt").exists()
    assert _leftovers(data_dir) == []


def test_cifar_corrupt_archive(tmp_path: Path, closed_port_url: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / CIFAR10_ARCHIVE).write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 50)

    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir, download=True, mirror=closed_port_url)

    message = str(err.value)
    assert "cannot extract" in message
    assert f"delete {data_dir / CIFAR10_ARCHIVE}" in message
