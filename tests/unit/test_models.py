"""Every architecture builds for the input sizes of every data set and gives (B, classes)."""

import pytest
import torch

from training.models import architectures, build_model

SHAPES = [(1, (8, 8)), (1, (28, 28)), (3, (32, 32))]


def test_registry_lists_the_four_families() -> None:
    assert architectures() == ["cifar-vgg", "fashion-cnn", "mnist-cnn", "row-lstm"]


@pytest.mark.parametrize("arch", ["cifar-vgg", "fashion-cnn", "mnist-cnn", "row-lstm"])
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
