"""`--download`: fetch the official files that are missing from the data folder.

Every file is written to a temporary name in its target folder and renamed only once it is
complete, so an interrupted download never leaves a half file that looks like a real one.
"""

from __future__ import annotations

import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from training.data.base import DatasetError
from training.data.cifar import BATCH_FILES, CIFAR_FOLDER, META_FILE
from training.data.idx import IDX_FILES, missing_in_folder

MNIST_BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR10_BASE_URL = "https://www.cs.toronto.edu/~kriz/"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URL = CIFAR10_BASE_URL + CIFAR10_ARCHIVE

IDX_BASE_URLS: dict[str, str] = {
    "mnist": MNIST_BASE_URL,
    "fashion-mnist": FASHION_MNIST_BASE_URL,
}

TIMEOUT_S = 30.0
_CHUNK = 1 << 16


def download_idx(name: str, folder: Path, *, mirror: str | None = None) -> list[Path]:
    """Fetch the `.gz` IDX files of `name` that `folder` lacks; return the paths written.

    `mirror` replaces the official base URL (a folder URL holding the four `.gz` files).
    """
    if name not in IDX_BASE_URLS:
        raise DatasetError(
            f"{name}: no download location known (known: {', '.join(IDX_BASE_URLS)})"
        )
    base = _as_folder_url(mirror or IDX_BASE_URLS[name])
    files = ", ".join(f"{base_name}.gz" for base_name in IDX_FILES)
    hint = (
        f"To set it up offline, put these files in {folder}: {files} "
        f"(or the same names uncompressed, without .gz), from {IDX_BASE_URLS[name]}."
    )
    _make_folder(folder, name, hint)
    written = []
    for base_name in missing_in_folder(folder):
        dest = folder / f"{base_name}.gz"
        _fetch(base + dest.name, dest, dataset=name, hint=hint)
        written.append(dest)
    return written


def download_cifar10(data_dir: Path, *, mirror: str | None = None) -> Path:
    """Fetch cifar-10-python.tar.gz into `data_dir` unless it is there, and extract it.

    Returns the batch folder, `data_dir/cifar-10-batches-py`. The archive is kept so that a
    damaged extraction can be redone without the network.
    """
    url = _as_folder_url(mirror or CIFAR10_BASE_URL) + CIFAR10_ARCHIVE
    hint = (
        f"To set it up offline, download {CIFAR10_ARCHIVE} (the python version) from "
        f"{CIFAR10_URL} and extract it into {data_dir}, giving "
        f"{data_dir / CIFAR_FOLDER} with {', '.join(BATCH_FILES)} and {META_FILE}."
    )
    _make_folder(data_dir, "cifar10", hint)
    archive = data_dir / CIFAR10_ARCHIVE
    if not archive.is_file():
        _fetch(url, archive, dataset="cifar10", hint=hint)
    return _extract_cifar(archive, data_dir)


def _as_folder_url(base: str) -> str:
    return base if base.endswith("/") else base + "/"


def _make_folder(folder: Path, dataset: str, hint: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"{dataset}: cannot create the data folder {folder} ({exc}). {hint}"
        ) from exc


def _fetch(url: str, dest: Path, *, dataset: str, hint: str) -> None:
    """Download `url` to `dest` through a temporary file in the same folder."""
    tmp: Path | None = None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{dest.name}.", suffix=".part", dir=dest.parent
            )
            tmp = Path(tmp_name)
            received = 0
            with (
                os.fdopen(fd, "wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    file=sys.stderr,
                ) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise ConnectionError(f"connection closed after {received} of {total} bytes")
        tmp.replace(dest)
        tmp = None
    except urllib.error.HTTPError as exc:
        exc.close()  # an HTTPError holds the open response (and its socket)
        raise DatasetError(
            f"{dataset}: download of {url} failed (HTTP {exc.code} {exc.reason}). {hint}"
        ) from exc
    except urllib.error.URLError as exc:
        raise DatasetError(f"{dataset}: download of {url} failed ({exc.reason}). {hint}") from exc
    # TimeoutError and ConnectionError are OSErrors; ValueError is urllib's "unknown url type".
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise DatasetError(f"{dataset}: download of {url} failed ({reason}). {hint}") from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _extract_cifar(archive: Path, data_dir: Path) -> Path:
    """Safely extract `archive` and move its batch folder into `data_dir`.

    Extraction goes to a temporary folder first so that an interrupted run cannot leave a
    truncated batch under the real name.
    """
    dest = data_dir / CIFAR_FOLDER
    failure = (
        f"delete {archive} and run again with --download, or extract the official "
        f"{CIFAR10_ARCHIVE} by hand into {data_dir}"
    )
    if not hasattr(tarfile, "data_filter"):  # extraction filters arrived in Python 3.11.4
        raise DatasetError(
            f"cifar10: safe extraction needs Python >= 3.11.4; extract {archive} by hand "
            f"into {data_dir}"
        )
    tmp_dir = Path(tempfile.mkdtemp(prefix=".cifar-extract-", dir=data_dir))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                # filter="data" refuses absolute paths, `..`, links out of the folder, devices.
                tar.extractall(tmp_dir, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"cifar10: cannot extract {archive} ({exc}); {failure}") from exc
        extracted = tmp_dir / CIFAR_FOLDER
        if not extracted.is_dir():
            raise DatasetError(
                f"cifar10: {archive} has no {CIFAR_FOLDER}/ folder; it is not the python "
                f"version of CIFAR-10; {failure}"
            )
        if dest.is_dir():
            # A partial earlier copy: replace its files one by one with the fresh ones.
            for item in extracted.iterdir():
                item.replace(dest / item.name)
        else:
            extracted.replace(dest)
    except OSError as exc:
        raise DatasetError(f"cifar10: cannot move the extracted files to {dest} ({exc})") from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return dest
