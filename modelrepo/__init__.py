"""The contract between training and serving: the model repository's layout, its manifest
schema and the preprocessing that the manifest describes (images: `preprocess`, text: `text`).

This package imports neither torch nor bentoml, so both sides can depend on it.
"""

from modelrepo.manifest import (
    MANIFEST_FORMAT_VERSION,
    ExportProvenance,
    ImagePreprocessing,
    InputSpec,
    Manifest,
    ManifestError,
    TextPreprocessing,
    TrainingProvenance,
)

__all__ = [
    "MANIFEST_FORMAT_VERSION",
    "ExportProvenance",
    "ImagePreprocessing",
    "InputSpec",
    "Manifest",
    "ManifestError",
    "TextPreprocessing",
    "TrainingProvenance",
]
