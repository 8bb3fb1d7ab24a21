"""A model folder describes its model: training records its configuration, and inference with only ``--ckpt_dir``
gives the same probabilities as with the overlays and overrides it was trained with."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from scripts import BundleInputError
from scripts.training.model_record import (
    RECORD,
    command_line_config,
    command_line_overrides,
    record_model,
    recorded_parser,
)
from tests.conftest import ROOT
from tests.helpers import config_list, patient_flags, run_bundle

CLOT = (
    ["configs/clot_readings.json"],
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


def _infer(config_file: str, ckpt: str, row: dict, base: str, out: str, extra: list) -> subprocess.CompletedProcess:
    return run_bundle(
        "--config_file", config_file, "--ckpt_dir", ckpt, *patient_flags(row, base), "--output_dir", out, *extra
    )


def _deploy_app(study: str, out: str, models: str, rules: str) -> subprocess.CompletedProcess:
    command = ["-m", "scripts.deploy_app", "-i", study, "-o", out, "-m", models, "--rules", rules, "-w", out + "_work"]
    return subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True)


_TRAINED: dict = {}


def _trained(overlays: list, overrides: dict, side_datalist: str, demo_cohort: str, factory) -> tuple:
    """A model folder trained (``monai.bundle run training``) and evaluated with ``overlays`` and ``overrides``, once
    per module."""
    key = tuple(overlays)
    if key in _TRAINED:
        return _TRAINED[key]
    ckpt = str(factory.mktemp("models"))
    data = ["--datalist_file", side_datalist, "--ckpt_dir", ckpt]
    train = config_list("configs/train.json", *overlays)
    trained = run_bundle(
        "training", "--config_file", train, *data, "--dataset_dir", os.path.dirname(demo_cohort), *_arguments(overrides)
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    evaluate = config_list("configs/train.json", *overlays, "configs/evaluate.json")
    evaluated = run_bundle(
        "--config_file", evaluate, *data, "--output_dir", os.path.join(ckpt, "eval"), *_arguments(overrides)
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    _TRAINED[key] = ckpt, overlays, overrides
    return _TRAINED[key]


@pytest.fixture(scope="module", params=[CLOT, MNT_DL], ids=["clot_readings", "mnt_dl"])
def folder(request, side_datalist, demo_cohort, tmp_path_factory) -> tuple:
    return _trained(*request.param, side_datalist, demo_cohort, tmp_path_factory)


def test_evaluation_with_only_the_model_folder_gives_the_trained_configuration_s_report(
    folder, side_datalist, tmp_path
):
    """``['configs/train.json','configs/evaluate.json']`` with ``--ckpt_dir`` alone: the recorded overlays and
    overrides build the network and preprocessing, and every prediction equals the evaluation given them."""
    ckpt, _, _ = folder
    out = str(tmp_path / "eval")
    plain = "['configs/train.json','configs/evaluate.json']"
    result = run_bundle(
        "--config_file", plain, "--datalist_file", side_datalist, "--ckpt_dir", ckpt, "--output_dir", out
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with_overlays = list(csv.DictReader(open(os.path.join(ckpt, "eval", "predictions.csv"))))
    folder_only = list(csv.DictReader(open(os.path.join(out, "predictions.csv"))))
    assert len(folder_only) == len(with_overlays) > 0
    assert [r["probability"] for r in folder_only] == [r["probability"] for r in with_overlays]
    # the main job's report shows the key images of the test patients it was most and least sure of
    report = open(os.path.join(out, "report.md")).read()
    linked = re.findall(r"\(key_images/([\w-]+)\.png\)", report)
    if folder[1] == CLOT[0]:
        test = [r for r in folder_only if r["set"] == "test" and r["fold"] == "ensemble"]
        assert "## Key images" in report and len(linked) == min(10, len(test)) == len(set(linked)) > 0
        assert all(os.path.isfile(os.path.join(out, "key_images", f"{p}.png")) for p in linked)
    else:  # a network that draws no key image
        assert "## Key images" not in report and not linked


def test_inference_with_only_the_model_folder_gives_the_trained_configuration_s_answer(folder, demo_cohort, tmp_path):
    ckpt, overlays, overrides = folder
    record = json.load(open(os.path.join(ckpt, RECORD)))
    assert record["overlays"] == [os.path.basename(o) for o in overlays]
    assert record["overrides"] == overrides  # data folders and the datalist are not part of the model

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
    os.rename(os.path.join(ckpt, RECORD), os.path.join(ckpt, "moved.json"))
    try:
        plain = _infer("configs/inference.json", ckpt, row, base, str(tmp_path / "c"), [])
    finally:
        os.rename(os.path.join(ckpt, "moved.json"), os.path.join(ckpt, RECORD))
    assert plain.returncode == 2 and "does not fit the configured network" in plain.stderr


def test_deploy_app_on_the_main_job_s_models_gives_the_study_inference_s_answer(
    side_datalist, demo_cohort, tmp_path_factory, tmp_path
):
    """Deploy export of a ClotReadingNet folder (traced: it does not script) and the Deploy app on a DICOM study with
    the case's side, site and clinical values in ``case.json``: the probability of ``--study`` inference."""
    pytest.importorskip("monai.deploy.core", reason="pip install -r requirements-deploy.txt")
    from scripts.deploy_app.export import export
    from tests.dicom_series import site_rules, write_study

    ckpt, _, _ = _trained(*CLOT, side_datalist, demo_cohort, tmp_path_factory)
    row = next(csv.DictReader(open(demo_cohort)))
    base = os.path.dirname(demo_cohort)
    study = str(tmp_path / "study")
    written = write_study(os.path.join(base, row["ncct"]), os.path.join(base, row["cta"]), study, seed=1)
    rules = site_rules(str(tmp_path / "rules.json"), 40.0)
    case = {"side": row["side"], "location": row["location"], "age": 70, "ivt": int(row["ivt"]), "nihss": 9}
    json.dump(case, open(os.path.join(study, "case.json"), "w"))
    models = str(tmp_path / "deploy")
    export(ckpt_dir=ckpt, out=models)
    app = _deploy_app(study, str(tmp_path / "out"), models, rules)
    assert app.returncode == 0, app.stderr[-3000:]
    result = json.load(open(tmp_path / "out" / "prediction.json"))
    clinical = json.dumps({k: case[k] for k in ("age", "ivt", "nihss")}).replace(" ", "")
    values = ["--side", case["side"], "--location", case["location"], "--clinical", clinical]
    study_flags = ["--study", study, "--series_rules", rules]
    cli = run_bundle(
        "--config_file",
        "configs/inference.json",
        "--ckpt_dir",
        ckpt,
        *study_flags,
        *values,
        "--output_dir",
        str(tmp_path / "cli"),
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    (expected,) = csv.DictReader(open(tmp_path / "cli" / "predictions.csv"))
    assert result["folds"] == 2 and result["probability"] == pytest.approx(float(expected["probability"]), abs=1e-4)
    # the clot measurements and their percentiles in the training cohort: prediction.json as predictions.csv
    measured = result["measurements"]
    assert measured["side"] == expected["side"] == case["side"] and "clot_length_mm_pct" in measured
    for name, value in measured.items():
        if name not in ("side", "location"):
            assert (value is None and expected[name] == "") or value == pytest.approx(float(expected[name]), abs=0.05)
    # and as a TID 1500 measurement report: the same values, in UCUM units, beside the probability
    from scripts.inference.dicom_report import MEASUREMENTS, read_measurements

    report = read_measurements(str(tmp_path / "out" / "measurements_sr.dcm"))
    for key, (concept, unit) in MEASUREMENTS.items():
        if measured[key] is not None:
            assert report[concept[2]] == (pytest.approx(measured[key], abs=1e-3), unit[0]), key
    assert report["Length"][1] == "mm" and report["Arterial enhancement"][1] == "[hnsf'U]"  # no clot at 6 mm
    (probability,) = [v for k, v in report.items() if k.startswith("Outcome probability")]
    assert probability[0] == pytest.approx(result["probability"], abs=1e-6)
    # the key image of the study, as inference writes it for a NIfTI pair: the same pixels
    from matplotlib.pyplot import imread

    key, nifti_key = (
        tmp_path / "out" / "key_image.png",
        tmp_path / "cli" / "key_images" / f"{expected['patient_id']}.png",
    )
    assert imread(str(key)).shape == imread(str(nifti_key)).shape == (4 * 16, 4 * 22, 4)
    assert abs(imread(str(key)) - imread(str(nifti_key))).max() < 0.02
    _same_dicom_answers(study, written, tmp_path / "out", tmp_path / "cli" / "dicom" / expected["patient_id"], key)

    json.dump({k: case[k] for k in ("age", "ivt", "nihss")}, open(os.path.join(study, "case.json"), "w"))
    refused = _deploy_app(study, str(tmp_path / "out2"), models, rules)  # no side and site: one line, no probability
    assert refused.returncode == 2 and not os.path.exists(tmp_path / "out2" / "prediction.json")
    last = refused.stderr.strip().splitlines()[-1]
    assert last.endswith('case.json ({"side": ..., "location": ...})') and "needs side, location:" in last


def _same_dicom_answers(study: str, written: dict, app: str, cli: str, key_png: str) -> None:
    """The Deploy app's and ``--study`` inference's DICOM answers: the same four objects of the study, the SEG on the
    CTA's frame of reference with its slices as source, the key image as a secondary capture of the PNG's pixels."""
    import highdicom as hd
    import numpy as np
    from matplotlib.pyplot import imread
    from pydicom import dcmread

    from scripts.inference.dicom_answer import MEASUREMENTS_SR_FILE, SR_FILE
    from scripts.inference.dicom_images import KEY_IMAGE_FILE, SEG_FILE
    from scripts.inference.dicom_report import read_measurements

    names = {SR_FILE, MEASUREMENTS_SR_FILE, SEG_FILE, KEY_IMAGE_FILE}
    assert names <= set(os.listdir(app)) and names == set(os.listdir(cli))
    files = [dcmread(os.path.join(study, f), stop_before_pixels=True) for f in os.listdir(study) if f != "case.json"]
    cta = [ds for ds in files if ds.get("SeriesNumber") == written["cta"]]
    ncct = [ds for ds in files if ds.get("SeriesNumber") == written["ncct"]]
    segs = [hd.seg.segread(os.path.join(folder, SEG_FILE)) for folder in (app, cli)]
    for seg in segs:
        assert seg.StudyInstanceUID == written["study"] and seg.FrameOfReferenceUID == cta[0].FrameOfReferenceUID
        assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [cta[0].SeriesInstanceUID]
        assert [d.SegmentLabel for d in seg.SegmentSequence] == ["vessel", "clot"]
    uids = [ds.SOPInstanceUID for ds in cta]
    pixels = [seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2]) for seg in segs]
    assert pixels[0].shape == (len(cta), cta[0].Rows, cta[0].Columns, 2) and (pixels[0] == pixels[1]).all()
    assert pixels[0][..., 0].any()  # the vessels the mirror shows, on the CTA's slices
    assert read_measurements(os.path.join(app, MEASUREMENTS_SR_FILE)) == pytest.approx(
        read_measurements(os.path.join(cli, MEASUREMENTS_SR_FILE)), abs=1e-4
    )
    capture = dcmread(os.path.join(app, KEY_IMAGE_FILE))
    assert capture.StudyInstanceUID == written["study"] and capture.Modality == "OT"
    referenced = {s.SeriesInstanceUID for s in capture.ReferencedSeriesSequence}
    assert referenced == {cta[0].SeriesInstanceUID, ncct[0].SeriesInstanceUID}
    png = imread(str(key_png))[..., :3]
    assert capture.pixel_array.shape == png.shape and np.abs(capture.pixel_array / 255.0 - png).max() < 0.01


def test_record_keeps_the_overlays_and_model_overrides_and_refuses_another_model_in_the_folder(tmp_path):
    args = [
        "--config_file",
        "['configs/train.json','configs/experiments/vessel.json']",
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
    assert files == ["configs/train.json", "configs/experiments/vessel.json"]
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
    # a later command line's own overrides go on top of the record (a contradicting one then meets the fold models)
    bundle = os.path.join("site-packages", "monai", "bundle", "__main__.py")
    argv = [bundle, "run", "--config_file", "configs/inference.json", "--num_slices", "14", "--ncct", "a.nii.gz"]
    assert command_line_overrides(argv) == {"num_slices": 14, "ncct": "a.nii.gz"}
    assert command_line_overrides([bundle, "run", "training", "--widths=[4,8]"]) == {"widths": [4, 8]}
    assert command_line_overrides(["/usr/bin/pytest", "--num_slices", "14"]) == {}


def test_case_values_come_from_case_json_and_the_dicom_header(tmp_path):
    pytest.importorskip("monai.deploy.core", reason="pip install -r requirements-deploy.txt")
    from pydicom.dataset import Dataset

    from scripts.deploy_app.app import case_values

    header = Dataset()
    header.PatientAge, header.PatientSex = "071Y", "F"
    (tmp_path / "case.json").write_text(json.dumps({"side": "R", "location": "M1", "nihss": 12}))
    assert case_values(str(tmp_path), header) == {"side": "R", "location": "M1", "nihss": 12, "age": 71, "sex": "F"}
    (tmp_path / "case.json").write_text(json.dumps({"age": 64}))
    assert case_values(str(tmp_path), header)["age"] == 64  # the file wins over the header
    header.PatientAge = "018M"  # months: not a year count, left out
    (tmp_path / "case.json").unlink()
    assert case_values(str(tmp_path), header) == {"sex": "F"}
    (tmp_path / "case.json").write_text("{side: L")
    with pytest.raises(BundleInputError, match="case.json: not JSON"):
        case_values(str(tmp_path))


def test_confidence_extremes_take_the_ensemble_rows_furthest_from_and_nearest_to_the_cut_off():
    from scripts.evaluation.key_images import confidence_extremes

    probabilities = [0.05, 0.5, 0.45, 0.95, 0.6, 0.29, 0.99, 0.41, 0.7, 0.2, 0.52, 0.01]
    rows = [
        {"patient_id": f"p{i}", "set": "test", "fold": "ensemble", "probability": p, "cutoff": 0.4}
        for i, p in enumerate(probabilities)
    ]
    rows += [{"patient_id": "cv", "set": "cv", "fold": 0, "probability": 1.0, "cutoff": 0.4}]  # not a test patient
    rows += [{"patient_id": "f0", "set": "test", "fold": 0, "probability": 1.0, "cutoff": 0.4}]  # one fold's row
    chosen = confidence_extremes(rows)
    assert [r["patient_id"] for r in chosen["most"]] == ["p6", "p3", "p11", "p0", "p8"]
    assert [r["patient_id"] for r in chosen["least"]] == ["p7", "p2", "p1", "p5", "p10"]
    few = confidence_extremes(rows[:3])  # three test patients: each shown once
    assert len(few["most"]) == 1 and len(few["least"]) == 2
