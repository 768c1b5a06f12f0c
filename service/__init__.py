"""The serving side: BentoML + onnxruntime over the model repository. Never imports torch."""
