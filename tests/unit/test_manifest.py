"""The manifest schema accepts what the exporter writes and rejects broken manifests clearly."""

import json
from typing import Any

import pytest

from modelrepo.manifest import (
    DEFAULT_TOKEN_PATTERN,
    Manifest,
    ManifestError,
    TextPreprocessing,
    is_valid_model_name,
)


def good() -> dict[str, Any]:
    return {
        "format_version": 1,
        "name": "digits-cnn",
        "version": 3,
        "task": "image-classification",
        "arch": "mnist-cnn",
        "input": {"name": "input", "dtype": "float32", "shape": [-1, 1, 8, 8], "layout": "NCHW"},
        "preprocessing": {
            "kind": "image",
            "color": "L",
            "size": [8, 8],
            "resize": "bilinear",
            "scale": 1 / 255,
            "mean": [0.3],
            "std": [0.4],
            "invert": False,
        },
        "labels": [str(i) for i in range(10)],
        "output_name": "logits",
        "training": {
            "dataset": "digits",
            "samples": 1437,
            "epochs": 30,
            "seed": 0,
            "test_accuracy": 0.98,
            "test_samples": 360,
            "date": "2026-11-24T10:00:00+00:00",
        },
        "export": {
            "exporter": "torch.onnx.export (dynamo)",
            "opset": 20,
            "torch_version": "2.13.0",
            "parity_batch_size": 32,
            "parity_max_abs_diff": 1e-6,
            "parity_argmax_equal": True,
            "date": "2026-11-24T10:01:00+00:00",
        },
        "sha256": "a" * 64,
    }


def parse(data: dict[str, Any]) -> Manifest:
    return Manifest.from_json(json.dumps(data), source="model.json")


def test_good_manifest_round_trips() -> None:
    manifest = parse(good())
    assert manifest.image_preprocessing.channels == 1
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_scale_survives_json_exactly() -> None:
    # Training and serving must compute the same floats, so the numbers must not drift.
    assert parse(good()).image_preprocessing.scale == 1 / 255


def _with(path: str, value: Any) -> dict[str, Any]:
    data = good()
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[leaf]
    else:
        node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("preprocessing.mean", [0.1, 0.2, 0.3], "need 1 value"),
        ("preprocessing.std", [0.0], "std values must be positive"),
        ("preprocessing.color", "CMYK", "preprocessing.color"),
        ("input.shape", [1, 1, 8, 8], "batch axis must be dynamic"),
        ("input.shape", [-1, 3, 8, 8], "does not match preprocessing"),
        ("sha256", "xyz", "sha256"),
        ("name", "../etc", "name"),
        ("version", 0, "version"),
        ("task", "object-detection", "task"),
        ("labels", ["a", "a"], "labels must be unique"),
        ("labels", ["only-one"], "labels"),
        ("training.test_accuracy", 1.5, "test_accuracy"),
        ("training", KeyError, "training"),
        ("surprise", 1, "surprise"),
    ],
)
def test_bad_manifests_are_rejected_naming_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        parse(_with(path, value))
    assert str(info.value).startswith("model.json: invalid manifest")


def test_not_json_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.from_json("{nope", source="x/model.json")


@pytest.mark.parametrize("name", ["digits-cnn", "a", "m.v2_x"])
def test_valid_names(name: str) -> None:
    assert is_valid_model_name(name)


@pytest.mark.parametrize("name", ["", "..", "../x", "A", "a/b", "-x", ".hidden", "x" * 65, "é"])
def test_invalid_names(name: str) -> None:
    assert not is_valid_model_name(name)


# ---------------------------------------------------------------------------------------------
# Text models


def good_text(task: str = "text-classification") -> dict[str, Any]:
    data = good()
    data.update(
        name="text-topics",
        task=task,
        arch="bilstm-text",
        input={"name": "input", "dtype": "int64", "shape": [-1, -1], "layout": "NT"},
        preprocessing={
            "kind": "text",
            "lowercase": True,
            "token_pattern": DEFAULT_TOKEN_PATTERN,
            "max_length": 32,
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "sep_token": "<sep>",
            "vocabulary": ["<pad>", "<unk>", "<sep>", "the", "cat"],
            "max_text_chars": 2000,
        },
        labels=["business", "food", "science", "sports"],
    )
    data["export"]["parity_sequence_lengths"] = [1, 7, 32]
    return data


@pytest.mark.parametrize("task", ["text-classification", "text-pair-classification"])
def test_good_text_manifest_round_trips(task: str) -> None:
    manifest = parse(good_text(task))
    spec = manifest.text_preprocessing
    assert isinstance(spec, TextPreprocessing)
    assert (spec.pad_id, spec.unk_id, spec.sep_id) == (0, 1, 2)
    assert Manifest.from_json(manifest.to_json()) == manifest
    with pytest.raises(TypeError, match="not an image model"):
        _ = manifest.image_preprocessing


def test_image_manifest_is_not_a_text_one() -> None:
    with pytest.raises(TypeError, match="not a text model"):
        _ = parse(good()).text_preprocessing


def test_old_image_manifests_still_validate_unchanged() -> None:
    data = good()
    assert "parity_sequence_lengths" not in data["export"]
    manifest = parse(data)
    assert manifest.format_version == 1 and manifest.export.parity_sequence_lengths is None


def _text_with(path: str, value: Any) -> dict[str, Any]:
    data = good_text()
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("input.dtype", "float32", "NT int64 input, but the input is NT float32"),
        ("input.layout", "NCHW", "an NCHW shape has 4 dimensions"),
        ("input.shape", [-1, 32], "an NT shape is \\[-1, -1\\]"),
        ("input.shape", [-1, -1, -1], "an NT shape is \\[-1, -1\\]"),
        ("input.dtype", "int32", "input.dtype"),
        ("task", "image-classification", "needs a text task"),
        ("preprocessing.kind", "audio", "preprocessing"),
        ("preprocessing.max_length", 1, "max_length"),
        ("preprocessing.max_text_chars", 0, "max_text_chars"),
        ("preprocessing.vocabulary", ["<unk>", "<pad>", "<sep>", "a"], "must start with"),
        ("preprocessing.vocabulary", ["<pad>", "<unk>", "<sep>", "a", "a"], "unique"),
        ("preprocessing.vocabulary", ["<pad>", "<unk>", "<sep>"], "vocabulary"),
        ("preprocessing.sep_token", "<pad>", "must differ"),
        ("preprocessing.token_pattern", "(\\w+)", "capturing groups"),
        ("preprocessing.token_pattern", "\\w*", "empty string"),
        ("preprocessing.token_pattern", "[a-", "not a valid regular expression"),
        ("preprocessing.surprise", 1, "surprise"),
    ],
)
def test_bad_text_manifests_are_rejected(path: str, value: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse(_text_with(path, value))


def test_image_preprocessing_needs_an_nchw_float32_image_model() -> None:
    data = good()
    data["input"] = {"name": "input", "dtype": "int64", "shape": [-1, 1, 8, 8], "layout": "NCHW"}
    with pytest.raises(ManifestError, match="NCHW float32 input, but the input is NCHW int64"):
        parse(data)
    data = good_text()
    data["preprocessing"] = good()["preprocessing"]
    with pytest.raises(ManifestError, match="NCHW float32 input, but the input is NT int64"):
        parse(data)
    data = good()
    data["task"] = "text-classification"
    with pytest.raises(ManifestError, match="needs task 'image-classification'"):
        parse(data)


# ---------------------------------------------------------------------------------------------
# Explain outputs (a CNN's extra graph outputs for /explain)


def good_explain() -> dict[str, Any]:
    """What the exporter writes for the mnist-cnn on 8x8 digits."""
    return {
        "activations": [
            {"name": "activation_1", "layer": "features.1", "shape": [32, 8, 8]},
            {"name": "activation_2", "layer": "features.4", "shape": [64, 4, 4]},
        ],
        "filters": {"name": "filters", "layer": "features.0", "shape": [32, 1, 5, 5]},
    }


def test_explain_outputs_round_trip_and_are_optional() -> None:
    assert parse(good()).explain is None
    manifest = parse({**good(), "explain": good_explain()})
    assert manifest.explain is not None and manifest.explain.filters is not None
    assert [a.layer for a in manifest.explain.activations] == ["features.1", "features.4"]
    assert manifest.explain.filters.shape == [32, 1, 5, 5]
    assert Manifest.from_json(manifest.to_json()) == manifest


def _explain_with(path: str, value: Any) -> dict[str, Any]:
    explain = good_explain()
    *parents, leaf = path.split(".")
    node: Any = explain
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[leaf] = value
    return {**good(), "explain": explain}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("activations.1.name", "activation_1", "explain output names must be unique"),
        ("filters.name", "activation_2", "explain output names must be unique"),
        ("activations.0.shape", [1, 32, 8, 8], "activation shapes are \\(C, H, W\\)"),
        ("filters.shape", [32, 5, 5], "the filters' shape is \\(out, in, kh, kw\\)"),
        ("activations.0.shape", [32, 8], "shape must be 3 or 4 positive dimensions"),
        ("filters.shape", [32, 0, 5, 5], "shape must be 3 or 4 positive dimensions"),
        ("filters.shape", [32, 3, 5, 5], "reads 3 channel\\(s\\), the input has 1"),
        ("activations.0.name", "logits", "must not reuse the input's or the logits' name"),
        ("filters.name", "input", "must not reuse the input's or the logits' name"),
        ("activations.0.layer", "", "explain.activations.0.layer"),
    ],
)
def test_bad_explain_outputs_are_rejected(path: str, value: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse(_explain_with(path, value))


def test_explain_outputs_on_a_text_model_are_refused() -> None:
    with pytest.raises(ManifestError, match="explain outputs are for image models"):
        parse({**good_text(), "explain": {"activations": [], "filters": None}})
