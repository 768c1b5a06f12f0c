"""The README's curl examples, run as written against a real server."""

import json
import re
import shutil
import subprocess

import pytest

from tests.helpers import ROOT, Server

MARKER = "<!-- readme-curl-examples -->"


def readme_curl_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(re.escape(MARKER) + r"\s*```bash\n(.*?)```", text, re.DOTALL)
    assert block, f"README.md lost its {MARKER} block"
    return [line for line in block[1].splitlines() if line.startswith("curl ")]


def test_readme_has_examples_for_every_endpoint() -> None:
    joined = "\n".join(readme_curl_lines())
    paths = ("/predict ", "/predict/batch", "/predict/json", "/models", "/readyz", "/text")
    for path in (*paths, "/explain"):
        assert path.strip() in joined, path


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples_work(server: Server) -> None:
    answers = []
    for line in readme_curl_lines():
        command = line.replace("http://127.0.0.1:3000", server.url)
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, (line, result.stderr)
        answers.append(json.loads(result.stdout))
    *images, batch, as_json, models, ready, text, explained = answers
    for line, answer in zip(readme_curl_lines(), images, strict=False):
        assert answer["predictions"][0]["label"] == "7", (line, answer)  # every kind of 7
        expected_model = "mnist-lstm" if "model=mnist-lstm" in line else "mnist-cnn"
        assert answer["model"] == expected_model, line
    assert len(images[0]["predictions"]) == 3 and len(images[-1]["predictions"]) == 1
    assert [r["predictions"][0]["label"] for r in batch["results"]] == ["3", "8"]
    assert as_json["predictions"][0]["label"] == "7"
    assert models["default_model"] == "mnist-cnn"
    assert {m["name"] for m in models["models"]} == {
        "mnist-cnn",
        "mnist-lstm",
        "digits-cnn",
        "digits-lstm",
        "text-topics",
    }
    assert ready["ready"] is True
    assert text["model"] == "text-topics" and text["predictions"][0]["label"] == "sports"
    assert explained["predictions"][0]["label"] == "7" and explained["occlusion"]["grid"]
