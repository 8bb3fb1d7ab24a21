"""A model folder describes its model: training records its configuration, and inference with only ``--ckpt_dir``
gives the same probabilities as with the overlays and overrides it was trained with."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from scripts import BundleInputError
from scripts.training.model_record import RECORD, command_line_config, record_model, recorded_parser
from tests.conftest import ROOT

CLOT = (
    ["configs/select_log_loss.json", "configs/vessel.json", "configs/clot_readings.json"],
    {"vessel_spacing": 6.0, "num_slices": 10, "max_epochs": 5},
)
MNT_DL = (
    ["configs/demo.json"],
    {
        "spatial_size": [24, 24],
        "num_slices": 10,
        "widths": [4, 8, 8, 16],
        "num_heads": 2,
        "max_epochs": 2,
        "cta_window": [0, 150],
    },
)


def _arguments(overrides: dict) -> list:
    return [f"--{k}={json.dumps(v).replace(' ', '')}" for k, v in overrides.items()]


def _bundle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args], cwd=ROOT, capture_output=True, text=True
    )


def _infer(config_file: str, ckpt: str, row: dict, base: str, out: str, extra: list) -> subprocess.CompletedProcess:
    clinical = json.dumps({"age": float(row["age"]), "ivt": int(row["ivt"]), "nihss": int(row["nihss"])})
    return _bundle(
        "--config_file",
        config_file,
        "--ckpt_dir",
        ckpt,
        "--ncct",
        os.path.join(base, row["ncct"]),
        "--cta",
        os.path.join(base, row["cta"]),
        "--patient_id",
        "P1",
        "--location",
        row["location"],
        "--side",
        row["side"],
        "--clinical",
        clinical.replace(" ", ""),
        "--output_dir",
        out,
        *extra,
    )


@pytest.mark.parametrize("overlays, overrides", [CLOT, MNT_DL], ids=["clot_readings", "mnt_dl"])
def test_inference_with_only_the_model_folder_gives_the_trained_configuration_s_answer(
    overlays, overrides, side_datalist, demo_cohort, tmp_path
):
    ckpt = str(tmp_path / "models")
    listed = ",".join(f"'{o}'" for o in ["configs/train.json", *overlays])
    trained = _bundle(
        "training",
        "--config_file",
        f"[{listed}]",
        "--datalist_file",
        side_datalist,
        "--ckpt_dir",
        ckpt,
        "--dataset_dir",
        os.path.dirname(demo_cohort),
        *_arguments(overrides),
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    record = json.load(open(os.path.join(ckpt, RECORD)))
    assert record["overlays"] == [os.path.basename(o) for o in overlays]
    assert record["overrides"] == overrides  # data folders and the datalist are not part of the model
    evaluate = ",".join(f"'{o}'" for o in ["configs/train.json", *overlays, "configs/evaluate.json"])
    evaluated = _bundle(
        "--config_file",
        f"[{evaluate}]",
        "--datalist_file",
        side_datalist,
        "--ckpt_dir",
        ckpt,
        "--output_dir",
        str(tmp_path / "eval"),
        *_arguments(overrides),
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]

    row = next(csv.DictReader(open(demo_cohort)))
    base = os.path.dirname(demo_cohort)
    given = ",".join(f"'{o}'" for o in ["configs/inference.json", *overlays[-2:]])
    with_overlays = _infer(f"[{given}]", ckpt, row, base, str(tmp_path / "a"), _arguments(overrides))
    assert with_overlays.returncode == 0, with_overlays.stderr[-2000:]
    folder_only = _infer("configs/inference.json", ckpt, row, base, str(tmp_path / "b"), [])
    assert folder_only.returncode == 0, folder_only.stderr[-2000:]
    (a,) = csv.DictReader(open(tmp_path / "a" / "predictions.csv"))
    (b,) = csv.DictReader(open(tmp_path / "b" / "predictions.csv"))
    assert float(b["probability"]) == pytest.approx(float(a["probability"]), abs=1e-6)

    # without its record the folder is refused by the plain configuration: the record is what made it work
    os.remove(os.path.join(ckpt, RECORD))
    plain = _infer("configs/inference.json", ckpt, row, base, str(tmp_path / "c"), [])
    assert plain.returncode == 2 and "does not fit the configured network" in plain.stderr


def test_record_keeps_the_overlays_and_model_overrides_and_refuses_another_model_in_the_folder(tmp_path):
    args = [
        "--config_file",
        "['configs/train.json','configs/vessel.json']",
        "--dataset_dir",
        "/data",
        "--fold=2",
        "--num_slices",
        "12",
        "--cta_window=[0,150]",
        "--ckpt_dir",
        str(tmp_path),
    ]
    files, overrides = command_line_config(args)
    assert files == ["configs/train.json", "configs/vessel.json"]
    assert overrides == {
        "dataset_dir": "/data",
        "fold": 2,
        "num_slices": 12,
        "cta_window": [0, 150],
        "ckpt_dir": str(tmp_path),
    }
    os.chdir(ROOT)
    record_model(str(tmp_path), args)
    parser = recorded_parser(str(tmp_path), ["configs/inference.json"], {"ckpt_dir": str(tmp_path)})
    assert parser.get_parsed_content("num_slices") == 12 and parser.get_parsed_content("vessel_spacing") == 2.0
    assert parser.get_parsed_content("cta_window") == [0, 150]
    record_model(str(tmp_path), args)  # the same configuration again: resumed, accepted
    other = ["--config_file", "['configs/train.json','configs/mri.json']", "--ckpt_dir", str(tmp_path)]
    with pytest.raises(BundleInputError, match=r"configured with \['vessel.json'\].*choose another --ckpt_dir"):
        record_model(str(tmp_path), other)
    assert recorded_parser(str(tmp_path / "none"), ["configs/inference.json"], {}) is None
