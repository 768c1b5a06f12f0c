"""The modalities the service serves, by the manifest's `preprocessing.kind`. A new modality is
a class in a file of its own, listed here."""

from __future__ import annotations

from typing import Any

from modelrepo.manifest import Manifest
from service.core.image import ImageInput
from service.core.modality import Modality
from service.core.text import TextInput

MODALITIES: dict[str, type[Modality[Any]]] = {cls.kind: cls for cls in (ImageInput, TextInput)}


def input_of(manifest: Manifest) -> Modality[Any]:
    """The input of the model version the manifest describes."""
    return MODALITIES[manifest.preprocessing.kind](manifest)
