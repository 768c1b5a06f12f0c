"""Real digits as people send them: a corpus made from mnist-5k's 1,000 held-out digits.

Each kind is one way an MNIST digit reaches the service in real life:

- `as-is`: the 28 x 28 grey PNG, white ink on black, as MNIST stores it;
- `paper`: the same digit as dark ink on white paper;
- `scan`: a large RGB scan: 10x the size, blue-black ink on off-white paper, a little blur;
- `canvas`: a small digit somewhere on a large white canvas (a drawing app, a form field);
- `photo`: a phone photo of paper: JPEG, a paper tint, uneven light, a slight turn, noise.

Everything is seeded per digit, so the corpus is the same on every machine. Only numpy and
Pillow: the serving side's tests and the bench import this too.

`python -m training.variants OUT` writes the corpus (images and labels.csv) to OUT;
`python -m training.variants --examples examples/mnist` writes the README's examples: one
held-out digit of each class as MNIST stores it, and one 7 in every other kind;
`python -m training.variants --zip loadtest/mnist-test-png.zip` the load test's images: every
held-out digit as a PNG named `<index>_<label>.png`.
"""

from __future__ import annotations

import argparse
import csv
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

KINDS: tuple[str, ...] = ("as-is", "paper", "scan", "canvas", "photo")
SEED = 14


@dataclass(frozen=True)
class Variant:
    kind: str
    index: int  # the digit's position in the held-out split
    label: int
    data: bytes  # the file as it would be uploaded
    suffix: str  # .png or .jpg


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def ink_on_paper(
    digit: NDArray[np.uint8], ink: tuple[int, int, int], paper: tuple[int, int, int]
) -> NDArray[np.float32]:
    """(H, W) white-on-black grey -> (H, W, 3) float RGB: `ink` where the digit is, `paper`
    elsewhere, blended by the digit's grey level."""
    alpha = digit.astype(np.float32)[:, :, None] / 255
    rgb = np.asarray(paper, np.float32) * (1 - alpha) + np.asarray(ink, np.float32) * alpha
    return rgb.astype(np.float32)  # already float32: this only tells the type checker


def to_image(rgb: NDArray[np.float32]) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mode="RGB")


def as_is(digit: NDArray[np.uint8], rng: np.random.Generator) -> tuple[bytes, str]:
    return png(Image.fromarray(digit, mode="L")), ".png"


def paper(digit: NDArray[np.uint8], rng: np.random.Generator) -> tuple[bytes, str]:
    return png(Image.fromarray(255 - digit, mode="L")), ".png"


def scan(digit: NDArray[np.uint8], rng: np.random.Generator) -> tuple[bytes, str]:
    big = np.asarray(Image.fromarray(digit, mode="L").resize((280, 280), Image.Resampling.BICUBIC))
    sheet = to_image(ink_on_paper(big, ink=(20, 25, 60), paper=(246, 244, 238)))
    return png(sheet.filter(ImageFilter.GaussianBlur(1.2))), ".png"


def canvas(digit: NDArray[np.uint8], rng: np.random.Generator) -> tuple[bytes, str]:
    width, height = 640, 480
    side = int(rng.integers(48, 112))  # the 28 px frame drawn at this size
    small = np.asarray(
        Image.fromarray(digit, mode="L").resize((side, side), Image.Resampling.BICUBIC)
    )
    plane = np.zeros((height, width), np.uint8)
    top = int(rng.integers(0, height - side))
    left = int(rng.integers(0, width - side))
    plane[top : top + side, left : left + side] = small
    return png(Image.fromarray(255 - plane, mode="L")), ".png"


def photo(digit: NDArray[np.uint8], rng: np.random.Generator) -> tuple[bytes, str]:
    width, height = 640, 480
    side = int(rng.integers(200, 320))
    big = Image.fromarray(digit, mode="L").resize((side, side), Image.Resampling.BICUBIC)
    big = big.rotate(float(rng.uniform(-6, 6)), resample=Image.Resampling.BILINEAR)
    plane = np.zeros((height, width), np.uint8)
    top = int(rng.integers(20, height - side - 20))
    left = int(rng.integers(40, width - side - 40))
    plane[top : top + side, left : left + side] = np.asarray(big)
    tint = tuple(int(v) for v in rng.integers((225, 215, 185), (250, 245, 230)))
    rgb = ink_on_paper(plane, ink=(40, 38, 45), paper=tint)  # type: ignore[arg-type]
    # Uneven light: brighter on one side, darker in the corners.
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    tilt = rng.uniform(-0.18, 0.18, size=2)
    light = 1 + tilt[0] * (rows / height - 0.5) + tilt[1] * (cols / width - 0.5)
    light -= 0.25 * (((rows / height - 0.5) ** 2 + (cols / width - 0.5) ** 2) / 0.5)
    rgb = rgb * light[:, :, None] + rng.normal(0, 6, size=rgb.shape)
    image = to_image(rgb).filter(ImageFilter.GaussianBlur(1.0))
    return jpeg(image, quality=int(rng.integers(60, 85))), ".jpg"


MAKERS: dict[str, Callable[[NDArray[np.uint8], np.random.Generator], tuple[bytes, str]]] = {
    "as-is": as_is,
    "paper": paper,
    "scan": scan,
    "canvas": canvas,
    "photo": photo,
}


def make(kind: str, index: int, digit: NDArray[np.uint8], label: int) -> Variant:
    """One variant of one (H, W) or (H, W, 1) digit, seeded by its kind and index."""
    pixels = digit[:, :, 0] if digit.ndim == 3 else digit
    rng = np.random.default_rng([SEED, KINDS.index(kind), index])
    data, suffix = MAKERS[kind](np.ascontiguousarray(pixels), rng)
    return Variant(kind=kind, index=index, label=int(label), data=data, suffix=suffix)


def corpus(
    images: NDArray[np.uint8], labels: NDArray[np.int64], kinds: tuple[str, ...] = KINDS
) -> Iterator[Variant]:
    """Every kind of every digit, kind by kind."""
    for kind in kinds:
        for index, (digit, label) in enumerate(zip(images, labels, strict=True)):
            yield make(kind, index, digit, int(label))


def held_out() -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """mnist-5k's 1,000 held-out digits and their labels."""
    from training.data import load_dataset

    dataset = load_dataset("mnist-5k")
    return dataset.test_images, dataset.test_labels


def write_examples(out: Path, images: NDArray[np.uint8], labels: NDArray[np.int64]) -> None:
    """The first held-out digit of each class as `<label>.png`, and the first 7 as
    `7-<kind>.<png|jpg>` in every other kind."""
    out.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        index = int(np.flatnonzero(labels == digit)[0])
        variant = make("as-is", index, images[index], digit)
        (out / f"{digit}.png").write_bytes(variant.data)
        if digit == 7:
            for kind in KINDS[1:]:
                variant = make(kind, index, images[index], digit)
                (out / f"7-{kind}{variant.suffix}").write_bytes(variant.data)
    print(f"wrote the examples to {out}")


def write_zip(path: Path, images: NDArray[np.uint8], labels: NDArray[np.int64]) -> None:
    """Every held-out digit as MNIST stores it, a PNG per digit, in a zip (fixed timestamps,
    so the file is the same byte for byte each time)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for index, (digit, label) in enumerate(zip(images, labels, strict=True)):
            info = zipfile.ZipInfo(f"{index:04d}_{int(label)}.png", date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, make("as-is", index, digit, int(label)).data)
    print(f"wrote {len(images)} PNGs to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.variants",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="folder to write to")
    parser.add_argument("--examples", action="store_true", help="the README's examples only")
    parser.add_argument("--zip", action="store_true", help="OUT is the load test's zip of PNGs")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset")
    parser.add_argument("--limit", type=int, help="only the first N held-out digits")
    args = parser.parse_args(argv)
    if args.examples:
        write_examples(args.out, *held_out())
        return 0
    if args.zip:
        write_zip(args.out, *held_out())
        return 0
    kinds = tuple(args.kinds.split(","))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    images, labels = held_out()
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "kind", "label"])
        for v in corpus(images, labels, kinds):
            name = f"{v.kind}/{v.index:04d}-{v.label}{v.suffix}"
            (args.out / v.kind).mkdir(exist_ok=True)
            (args.out / name).write_bytes(v.data)
            writer.writerow([name, v.kind, v.label])
    print(f"wrote {len(images) * len(kinds)} images of {len(kinds)} kinds to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
