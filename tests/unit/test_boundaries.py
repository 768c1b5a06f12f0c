"""The architecture's boundaries: the shared contract and the service never load torch."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "module",
    [
        "modelrepo",
        "modelrepo.manifest",
        "modelrepo.layout",
        "modelrepo.preprocess",
        "modelrepo.text",
    ],
)
def test_contract_modules_do_not_import_torch_or_bentoml(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in ('torch', 'bentoml', 'training') if m in sys.modules); "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("module", ["training.data.text", "training.data.topics"])
def test_text_data_modules_do_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_service_sources_never_import_torch_or_training() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "service").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith(
            ("import torch", "from torch", "import training", "from training")
        )
    ]
    assert offending == []
