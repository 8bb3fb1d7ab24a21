"""scripts.inference.quick: which command lines start the preprocessing early, and with which case folder and
settings (the end-to-end run, same answer as monai.bundle run: tests/test_workflow.py::test_inference_on_raw_scans)."""

from __future__ import annotations

import json
import os

import pytest

from scripts.inference.quick import bundle_arguments, early_job
from tests.conftest import ROOT


@pytest.fixture()
def scans(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs are found relative to the bundle root, as in every command
    for name in ("ncct", "cta"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"x")
    models = tmp_path / "models"
    models.mkdir()
    affine = [[2.0, 0, 0, -90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]]
    (models / "grid.json").write_text(json.dumps({"shape": [91, 109, 91], "affine": affine}))
    return ["--ncct", str(tmp_path / "ncct.nii.gz"), "--cta", str(tmp_path / "cta.nii.gz"), "--ckpt_dir", str(models)]


RAW = ["--config_file", "['configs/inference.json','configs/inference_raw.json']"]


def test_one_raw_case_starts_early_with_the_workflows_folder_and_settings(scans, tmp_path):
    job = early_job(RAW + scans + ["--patient_id", "P1", "--output_dir", str(tmp_path / "out")])
    assert job["out"] == os.path.join(str(tmp_path / "out"), "preprocessed", "P1", "ct")  # inference_raw.json's
    assert job["modality"] == "ct" and job["row"]["ncct"].endswith("ncct.nii.gz") and job["row"]["patient_id"] == "P1"
    assert job["settings"] == {"spacing": 2.0, "transform": "Affine", "histogram_reference": None, "vessels": False}
    # the configs' defaults: patient_id "patient", output_dir <bundle_root>/eval; vessel maps for a vessels channel
    vessels = ["--image_keys", "['ncct', 'cta', 'vessels']", "--preprocessed_dir", str(tmp_path / "pre")]
    job = early_job(RAW + scans + vessels)
    assert job["out"] == os.path.join(str(tmp_path / "pre"), "patient", "ct") and job["settings"]["vessels"] is True
    assert early_job(RAW + scans)["out"] == os.path.join(".", "eval", "preprocessed", "patient", "ct")


def test_other_command_lines_run_as_the_bundle_would(scans, tmp_path):
    assert early_job(["--config_file", "configs/inference.json"] + scans) is None  # preprocessed files: nothing to do
    assert early_job(RAW + scans + ["--cohort", "cohort.csv"]) is None  # a cohort: the Dask cluster's job
    assert early_job(RAW + scans[2:]) is None  # no NCCT given: the workflow names what is missing
    assert early_job(RAW + ["--ncct", str(tmp_path / "absent.nii.gz")] + scans[2:]) is None
    assert early_job(RAW + scans + ["--image_keys", "$@other"]) is None  # an expression: not guessed


def test_bundle_arguments_reads_fire_style_pairs():
    args = bundle_arguments(["--a", "1", "--b=x y", "--flag", "--c-d", "[1, 2]"])
    assert args == {"a": "1", "b": "x y", "flag": "True", "c_d": "[1, 2]"}
