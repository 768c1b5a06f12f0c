"""The models committed in exports/ are intact, accurate, and served by what the manifest says.

They are checked with onnxruntime alone, starting from PNG bytes (or raw text), exactly as the
service sees them.
"""

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from modelrepo.layout import list_models, list_versions, open_version
from modelrepo.preprocess import image_to_pixels, pixels_to_image, pixels_to_input
from modelrepo.text import encode_batch
from training.data import load_dataset, load_text_dataset

EXPORTS = Path(__file__).resolve().parents[2] / "exports"
BUNDLED = ["digits-cnn", "digits-lstm"]
BUNDLED_TEXT = ["text-topics"]


def every_version(names: list[str]) -> list[tuple[str, int]]:
    """Each (name, version) committed in exports/: every version is served, not only the last."""
    return [(name, v) for name in names for v in list_versions(EXPORTS, name)]


def test_bundled_models_are_present() -> None:
    assert set(BUNDLED + BUNDLED_TEXT) <= set(list_models(EXPORTS))


@pytest.mark.parametrize(("name", "number"), every_version(BUNDLED))
def test_bundled_model_predicts_its_recorded_accuracy_from_png_bytes(
    name: str, number: int
) -> None:
    version = open_version(EXPORTS, name, number)  # checks sha256
    manifest = version.manifest
    assert manifest.training.dataset == "digits"
    assert manifest.export.parity_max_abs_diff <= 1e-4 and manifest.export.parity_argmax_equal
    data = load_dataset("digits")
    assert manifest.training.test_samples == len(data.test_labels)

    pixels = []
    for image in data.test_images:
        buffer = io.BytesIO()
        pixels_to_image(image).save(buffer, format="PNG")
        with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
            pixels.append(image_to_pixels(decoded, manifest.image_preprocessing))
    x = pixels_to_input(np.stack(pixels), manifest.image_preprocessing)
    session = ort.InferenceSession(str(version.model_path), providers=["CPUExecutionProvider"])
    logits = session.run([manifest.output_name], {manifest.input.name: x})[0]
    accuracy = float((logits.argmax(1) == data.test_labels).mean())
    # torch and onnxruntime agree to 1e-4, so they classify the whole split identically.
    assert accuracy == pytest.approx(manifest.training.test_accuracy, abs=1e-6)


@pytest.mark.parametrize(("name", "number"), every_version(["digits-cnn"]))
def test_bundled_cnn_reaches_097(name: str, number: int) -> None:
    assert open_version(EXPORTS, name, number).manifest.training.test_accuracy >= 0.97


@pytest.mark.parametrize(("name", "number"), every_version(list_models(EXPORTS)))
def test_bundled_explain_outputs_are_the_graphs(name: str, number: int) -> None:
    """Where a manifest lists explain outputs the graph gives them, after the logits, with
    their shapes; without them the graph has the logits alone."""
    version = open_version(EXPORTS, name, number)
    manifest = version.manifest
    session = ort.InferenceSession(str(version.model_path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    explain = manifest.explain
    if explain is None:
        assert outputs == [manifest.output_name]
        return
    assert explain.filters is not None
    expected = [manifest.output_name, *(a.name for a in explain.activations), explain.filters.name]
    assert outputs == expected
    x = np.zeros((2, *manifest.input.shape[1:]), np.float32)
    *activations, filters = session.run(expected[1:], {manifest.input.name: x})
    assert [a.shape for a in activations] == [(2, *a.shape) for a in explain.activations]
    assert list(filters.shape) == explain.filters.shape


@pytest.mark.parametrize(("name", "number"), every_version(BUNDLED_TEXT))
def test_bundled_text_model_reads_int64_token_ids_of_any_length(name: str, number: int) -> None:
    version = open_version(EXPORTS, name, number)  # checks sha256
    manifest = version.manifest
    assert manifest.task == "text-classification" and manifest.arch == "bilstm-text"
    assert (manifest.input.dtype, manifest.input.layout, manifest.input.shape) == (
        "int64", "NT", [-1, -1]
    )  # fmt: skip
    value = onnx.load(str(version.model_path)).graph.input[0]
    assert value.name == manifest.input.name
    assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = value.type.tensor_type.shape.dim
    assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims)
    spec = manifest.text_preprocessing
    assert manifest.export.parity_sequence_lengths == [1, 7, spec.max_length]
    assert manifest.export.parity_max_abs_diff <= 1e-4 and manifest.export.parity_argmax_equal
    session = ort.InferenceSession(str(version.model_path), providers=["CPUExecutionProvider"])
    for shape in [(1, 1), (3, 5), (2, spec.max_length)]:
        logits = session.run(None, {value.name: np.ones(shape, np.int64)})[0]
        assert logits.shape == (shape[0], len(manifest.labels))


@pytest.mark.parametrize(("name", "number"), every_version(BUNDLED_TEXT))
def test_bundled_text_model_predicts_its_recorded_accuracy_from_raw_text(
    name: str, number: int
) -> None:
    manifest = open_version(EXPORTS, name, number).manifest
    assert manifest.training.dataset.startswith("text-topics: synthetic")
    data = load_text_dataset("text-topics")
    assert manifest.training.test_samples == len(data.test_texts)
    assert tuple(manifest.labels) == data.labels
    x = encode_batch(data.test_texts, manifest.text_preprocessing)
    path = EXPORTS / name / str(manifest.version) / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run([manifest.output_name], {manifest.input.name: x})[0]
    accuracy = float((logits.argmax(1) == data.test_labels).mean())
    assert accuracy == pytest.approx(manifest.training.test_accuracy, abs=1e-6)
    assert accuracy > 0.8  # four topics: chance is 0.25


@pytest.mark.parametrize("name", BUNDLED + BUNDLED_TEXT)
def test_bundled_models_stay_small(name: str) -> None:
    for version in list_versions(EXPORTS, name):
        assert (EXPORTS / name / str(version) / "model.onnx").stat().st_size < 2_000_000
