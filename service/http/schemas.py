"""Request and response bodies. Field descriptions and examples make the OpenAPI page."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.core.postprocess import Prediction


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictResponse(_Body):
    model: str = Field(description="model that answered", examples=["mnist-cnn"])
    version: int = Field(description="version that answered", examples=[1])
    predictions: list[Prediction] = Field(description="top_k classes, most probable first")
    latency_ms: float = Field(description="server time for this request", examples=[2.1])


class ImageResult(_Body):
    index: int = Field(description="position of the image in the request", examples=[0])
    filename: str | None = Field(None, description="the part's filename", examples=["7.png"])
    predictions: list[Prediction]


class BatchPredictResponse(_Body):
    model: str = Field(examples=["mnist-cnn"])
    version: int = Field(examples=[1])
    results: list[ImageResult] = Field(description="one result per image, in request order")
    latency_ms: float = Field(examples=[4.2])


class JsonPredictRequest(_Body):
    image_base64: str = Field(
        min_length=1,
        description="the image file (PNG, JPEG, GIF, BMP or WebP), base64-encoded",
        examples=[
            # examples/mnist/7.png: the documented example is a real MNIST digit the models read
            "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAhklEQVR4nNXRwQ3DIAwFUEfqGp4jIXMkHoQ9sgjq"
            "HJA5HPb4uSA1bfo59FZfMHrCNiDyTzFcNzbqVOuzHDe0ZZVSRSaVubwVCACCttzzR/nNXnlCZ46cuEUYNb21vHZH"
            "oGbYOpaVWYBzc1BT57dQR6TDZG7aMQPok3b7pW/nHm3dhX/FD3ECSXQyd9+ILxEAAAAASUVORK5CYII="
        ],
    )
    model: str | None = Field(
        None,
        max_length=64,  # as in the forms: an unknown name is echoed in the 404 and the log
        description="model name; default: the default model",
        examples=["mnist-cnn"],
    )
    version: int | None = Field(
        None, ge=1, description="model version; default: the highest", examples=[1]
    )
    top_k: int = Field(3, ge=1, description="how many classes to return (1..classes)", examples=[3])


class InputInfo(_Body):
    name: str = Field(examples=["input"])
    dtype: str = Field(examples=["float32"])
    shape: list[int] = Field(
        description="-1 marks the dynamic batch axis", examples=[[-1, 1, 8, 8]]
    )
    layout: str = Field(examples=["NCHW"])


class ModelInfo(_Body):
    name: str = Field(examples=["mnist-cnn"])
    version: int = Field(examples=[1])
    default: bool = Field(description="answers requests that name no model", examples=[True])
    latest: bool = Field(description="answers requests that name no version", examples=[True])
    task: str = Field(examples=["image-classification"])
    arch: str = Field(examples=["mnist-cnn"])
    input: InputInfo
    preprocessing: dict[str, Any] = Field(description="how an image becomes the input tensor")
    labels: list[str] = Field(examples=[["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]])
    dataset: str = Field(examples=["mnist-5k"])
    test_accuracy: float = Field(examples=[0.9861])
    provider: str = Field(
        description="onnxruntime execution provider in use", examples=["CPUExecutionProvider"]
    )
    sha256: str = Field(description="sha256 of model.onnx", examples=["f9b1...7337"])


class ModelsResponse(_Body):
    default_model: str = Field(examples=["mnist-cnn"])
    models: list[ModelInfo]


class ErrorResponse(_Body):
    error: str = Field(description="what went wrong, for people", examples=["not found"])
    detail: Any = Field(
        None,
        description="machine-readable specifics, e.g. the field at fault",
        examples=[{"model": "nope", "available": ["mnist-cnn"]}],
    )


class HealthResponse(_Body):
    status: str = Field(examples=["ok"])


class ReadyResponse(_Body):
    ready: bool = Field(examples=[True])
    models: list[str] = Field(
        description="loaded and warmed name:version pairs",
        examples=[["mnist-cnn:1", "mnist-lstm:1"]],
    )


class TextPredictRequest(_Body):
    text: str = Field(
        min_length=1,
        max_length=100_000,  # the model's own limit (max_text_chars in its manifest) is lower
        description="the text to classify (the model's max_text_chars at most)",
        examples=["the striker scored twice in the second half"],
    )
    text_pair: str | None = Field(
        None,
        min_length=1,
        max_length=100_000,
        description="the second text, for text-pair models (e.g. duplicate questions)",
        examples=[None],
    )
    model: str | None = Field(
        None,
        max_length=64,
        description="model name; default: the first text model loaded",
        examples=["text-topics"],
    )
    version: int | None = Field(
        None, ge=1, description="model version; default: the highest", examples=[1]
    )
    top_k: int = Field(3, ge=1, description="how many classes to return (1..classes)", examples=[3])


class ActivationPicture(_Body):
    layer: str = Field(
        description="the convolution block's activation module", examples=["features.1"]
    )
    shape: list[int] = Field(description="(channels, height, width)", examples=[[32, 28, 28]])
    png: str = Field(description="base64 PNG: a grid of the channel maps, each scaled to 0-255")


class OcclusionPicture(_Body):
    png: str = Field(
        description="base64 PNG over the input: red where masking a patch lowered the top "
        "class's probability, blue where it raised it"
    )
    grid: list[list[float]] = Field(
        description="the top class's probability drop per patch position, row by row"
    )
    patch: int = Field(description="the masked square's side, in input pixels", examples=[7])
    stride: int = Field(description="the step between patch positions", examples=[3])


class ExplainResponse(_Body):
    model: str = Field(examples=["mnist-cnn"])
    version: int = Field(examples=[2])
    predictions: list[Prediction] = Field(description="top_k classes, as /predict gives them")
    input_png: str = Field(
        description="base64 PNG of exactly the tensor the model saw (after canonicalisation), "
        "de-normalised to 0-255"
    )
    activations: list[ActivationPicture] = Field(
        description="one per convolution block, in model order; empty for a model without "
        "convolutions or whose manifest lists no explain outputs"
    )
    filters_png: str | None = Field(
        description="base64 PNG grid of the first convolution's weights; null when none"
    )
    occlusion: OcclusionPicture
    latency_ms: float = Field(examples=[12.5])


class TokenDropInfo(_Body):
    token: str = Field(examples=["striker"])
    part: str = Field(description="text or text_pair", examples=["text"])
    drop: float = Field(
        description="how much the top class's probability drops without this token",
        examples=[0.41],
    )


class TextExplainResponse(_Body):
    model: str = Field(examples=["text-topics"])
    version: int = Field(examples=[1])
    predictions: list[Prediction]
    tokens: list[TokenDropInfo] = Field(
        description="each token the model saw (cut to its max_length), in order"
    )
    latency_ms: float = Field(examples=[6.0])
