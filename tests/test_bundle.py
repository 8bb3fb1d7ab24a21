"""Model-zoo checks: metadata against the schema, network input/output, pins agree with the requirements."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED

SCHEMA = os.path.join(SHARED, "monai", "meta_schema_20240725.json")


def _bundle(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=ROOT, capture_output=True, text=True, env=env
    )


@pytest.mark.skipif(not os.path.isfile(SCHEMA), reason="../shared/data/monai/meta_schema_20240725.json is absent")
def test_verify_metadata():
    result = _bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", SCHEMA)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_verify_net_in_out():
    result = _bundle(
        "verify_net_in_out", "--net_id", "network_def", "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.json", "--widths", "[8, 16, 32, 64]",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_pins_agree():
    meta = json.load(open(os.path.join(ROOT, "configs", "metadata.json")))
    pins = {}
    for line in open(os.path.join(ROOT, "requirements.txt")):
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    expected = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    expected.update(meta["required_packages_version"])
    assert pins == expected
    assert meta["version"] in meta["changelog"]
