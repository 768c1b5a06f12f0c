"""Training and export: PyTorch classifiers -> checkpoints -> the ONNX model repository."""
