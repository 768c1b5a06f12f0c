"""Model families. Importing this package registers every architecture."""

from training.models import bilstm_text, cifar_vgg, fashion_cnn, mnist_cnn, row_lstm
from training.models.registry import (
    Architecture,
    architectures,
    build_model,
    get_architecture,
    register_model,
)

__all__ = [
    "Architecture",
    "architectures",
    "bilstm_text",
    "build_model",
    "cifar_vgg",
    "fashion_cnn",
    "get_architecture",
    "mnist_cnn",
    "register_model",
    "row_lstm",
]
