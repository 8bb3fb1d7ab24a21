"""Model-zoo checks: metadata against the schema, network input/output, style, bundle files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from scripts import verify_bundle
from tests.conftest import ROOT, SHARED

SCHEMA = os.path.join(SHARED, "monai", "meta_schema_20240725.json")


@pytest.mark.skipif(not os.path.isfile(SCHEMA), reason="../shared/data/monai/meta_schema_20240725.json is absent")
def test_verify_bundle_passes():
    result = subprocess.run(
        [sys.executable, "-m", "scripts.verify_bundle", "--schema", SCHEMA], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    names = ["verify_metadata", "verify_net_in_out", "isort", "black", "flake8", "bundle files"]
    assert lines == [f"ok   {n}" for n in names]


def test_file_checks_catch_problems(tmp_path, monkeypatch):
    optional = (
        "requirements-tracking.txt",
        "requirements-monailabel.txt",
        "requirements-deploy.txt",
        "requirements-cluster.txt",
    )
    for name in ("LICENSE", "requirements.txt", *optional, "configs", "docs", "models"):
        src = os.path.join(ROOT, name)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, tmp_path / name)
    monkeypatch.setattr(verify_bundle, "ROOT", str(tmp_path))
    assert verify_bundle.check_files() == (True, "")
    meta = json.load(open(tmp_path / "configs" / "metadata.json"))
    meta["version"] = "9.9.9"
    meta["numpy_version"] = "1.0.0"
    json.dump(meta, open(tmp_path / "configs" / "metadata.json", "w"))
    os.remove(tmp_path / "docs" / "data_license.txt")
    ok, detail = verify_bundle.check_files()
    assert not ok
    assert "docs/data_license.txt missing" in detail and "no entry for version 9.9.9" in detail
    assert "('numpy', '1.0.0')" in detail
    with open(tmp_path / "requirements-deploy.txt", "a") as f:
        f.write("extra-package==1.0\n")
    assert "optional requirements files and metadata" in verify_bundle.check_files()[1]
