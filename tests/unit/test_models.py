"""Every architecture builds for the input sizes of every data set and gives (B, classes)."""

import pytest
import torch

from training.models import architectures, build_model, get_architecture
from training.models.bilstm_text import BiLSTMText

SHAPES = [(1, (8, 8)), (1, (28, 28)), (3, (32, 32))]
IMAGE_ARCHS = ["cifar-vgg", "fashion-cnn", "mnist-cnn", "row-lstm"]


def test_registry_lists_the_five_families() -> None:
    assert architectures() == ["bilstm-text", "cifar-vgg", "fashion-cnn", "mnist-cnn", "row-lstm"]
    assert [get_architecture(a).modality for a in architectures()] == ["text"] + ["image"] * 4


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_forward_shape(arch: str, channels: int, size: tuple[int, int]) -> None:
    model = build_model(arch, in_channels=channels, image_size=size, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(3, channels, *size))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="mnist-cnn"):
        build_model("resnet-9000", in_channels=1, image_size=(8, 8), num_classes=10)


def test_too_small_images_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="at least 8x8"):
        build_model("cifar-vgg", in_channels=3, image_size=(4, 4), num_classes=10)


def test_row_lstm_reads_rows_as_time_steps() -> None:
    model = build_model("row-lstm", in_channels=1, image_size=(8, 6), num_classes=3)
    assert isinstance(model.lstm, torch.nn.LSTM)
    assert model.lstm.input_size == 6  # one row of 6 pixels per step


@pytest.mark.parametrize("tokens", [1, 7, 40])
def test_bilstm_text_reads_token_ids_of_any_length(tokens: int) -> None:
    model = build_model("bilstm-text", vocab_size=50, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 50, (4, tokens)))
    assert out.shape == (4, 3)
    assert torch.isfinite(out).all()


def test_bilstm_text_layers() -> None:
    model = build_model("bilstm-text", vocab_size=50, num_classes=3)
    assert isinstance(model, BiLSTMText)
    assert model.embedding.padding_idx == 0
    assert (model.lstm1.hidden_size, model.lstm1.bidirectional) == (64, True)
    assert (model.lstm2.input_size, model.lstm2.hidden_size, model.lstm2.bidirectional) == (
        128, 32, True
    )  # fmt: skip
    first_dense = model.head[0]  # reads both directions' final states of the second LSTM
    assert isinstance(first_dense, torch.nn.Linear) and first_dense.in_features == 64
