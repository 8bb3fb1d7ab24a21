"""A tiny training run through monai.bundle that lowers the loss, then evaluation and inference on it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from scripts import BundleInputError
from tests.conftest import ROOT
from tests.helpers import BUNDLE, config_list

TINY = {
    "spatial_size": [24, 24],
    "num_slices": 10,
    "widths": [4, 8, 8, 16],
    "num_heads": 2,
    "dropout": 0.0,
    "batch_size": 4,
    "learning_rate": 0.003,
    "patience": 50,
    "elastic_prob": 0.0,
    "cta_window": [0, 150],  # the parenchymal window: the side_datalist task (occlusion side) shows as hypoperfusion
}
# for the loss-lowering check: a higher learning rate and no augmentation, so 12 patients are fitted quickly
FIT = {"learning_rate": 0.003, **{f"train#random_transforms#{i}#prob": 0.0 for i in (0, 2, 3)}}


def _workflow(run_id: str, config_files, **override) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=[os.path.join("configs", f) for f in config_files],
        meta_file="configs/metadata.json",
        logging_file="configs/logging.conf",
        workflow_type="train",
        run_id=run_id,
        **override,
    )


def train_recording_losses(config_files, datalist, ckpt, fold_overrides) -> dict:
    """Train the folds in ``fold_overrides`` ({fold: overrides}) in-process (run id ``train_fold``); return the mean
    training loss per epoch of each fold."""
    os.chdir(ROOT)
    losses = {}
    for fold, override in fold_overrides.items():
        wf = _workflow("train_fold", config_files, datalist_file=datalist, ckpt_dir=ckpt, fold=fold, **override)
        wf.initialize()
        trainer = wf.parser.get_parsed_content("train#trainer")
        epoch_losses: list = []
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epoch_losses.append([]))
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED, lambda e: epoch_losses[-1].append(float(e.state.output[0]["loss"]))
        )
        wf.run()
        wf.finalize()
        losses[fold] = [float(np.mean(x)) for x in epoch_losses]
    return losses


@pytest.fixture(scope="module")
def trained(side_datalist, tmp_path_factory):
    """Train both folds in-process (run id ``train_fold``); record the training losses per epoch."""
    ckpt = str(tmp_path_factory.mktemp("models"))
    overrides = {0: {**TINY, **FIT, "max_epochs": 30}, 1: {**TINY, "max_epochs": 2}}
    return ckpt, train_recording_losses(["train.json"], side_datalist, ckpt, overrides)


def test_training_lowers_the_loss_and_records_the_fold(trained):
    ckpt, losses = trained
    assert len(losses[0]) == 30
    assert np.mean(losses[0][-3:]) < 0.8 * np.mean(losses[0][:3])
    for fold in (0, 1):
        done = json.load(open(os.path.join(ckpt, f"fold{fold}", "done.json")))
        assert 0.0 <= done["best_inner_val_metric"] <= 1.0 and 1 <= done["best_epoch"] <= done["epochs"]
        assert os.path.isfile(os.path.join(ckpt, f"fold{fold}", "model.pt"))
        assert not [f for f in os.listdir(os.path.join(ckpt, f"fold{fold}")) if f.startswith("resume_")]


def test_evaluate_uses_inner_validation_cutoffs(trained, side_datalist, tmp_path):
    datalist_2fold = side_datalist
    ckpt, _ = trained
    out = str(tmp_path / "eval")
    wf = _workflow(
        "run",
        ["train.json", "evaluate.json"],
        datalist_file=datalist_2fold,
        ckpt_dir=ckpt,
        output_dir=out,
        fold=0,
        **TINY,
    )
    wf.initialize()
    wf.run()
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    rows = list(csv.DictReader(open(os.path.join(out, "predictions.csv"))))
    data = json.load(open(datalist_2fold))
    cv = [r for r in rows if r["set"] == "cv"]
    assert sorted(r["patient_id"] for r in cv) == sorted(d["patient_id"] for d in data["training"])
    for r in cv:  # each patient predicted once, by the model of the fold that held it out
        item = next(d for d in data["training"] if d["patient_id"] == r["patient_id"])
        assert int(r["fold"]) == item["fold"] and int(r["label"]) == item["label"]
        assert float(r["cutoff"]) == pytest.approx(metrics["cutoffs"][r["fold"]], abs=1e-6)
    from monai.data import Dataset

    from scripts.data.split import fold_data
    from scripts.evaluation.evaluate import youden_cutoff
    from scripts.inference.predict import predict
    from scripts.training.kfold import load_weights

    # fold 0's cut-off is Youden's on its own model's inner-validation predictions, never on the outer fold
    network = load_weights(wf.parser.get_parsed_content("network"), os.path.join(ckpt, "fold0", "model.pt"))
    inner = fold_data(data, 0, "inner_val")
    p_inner = predict(network, Dataset(inner, wf.parser.get_parsed_content("validate#preprocessing")), "cpu")
    assert metrics["cutoffs"]["0"] == pytest.approx(youden_cutoff([d["label"] for d in inner], p_inner), abs=1e-5)
    assert set(metrics["cv"]["summary"]) == {"roc_auc", "accuracy", "precision", "sensitivity", "specificity", "f1"}
    ens = [r for r in rows if r["fold"] == "ensemble"]
    assert len(ens) == len(data["test"])
    per_fold = {(r["patient_id"], r["fold"]): float(r["probability"]) for r in rows if r["set"] == "test"}
    for r in ens:
        mean = (per_fold[(r["patient_id"], "0")] + per_fold[(r["patient_id"], "1")]) / 2
        assert float(r["probability"]) == pytest.approx(mean, abs=1e-5)
    assert json.load(open(os.path.join(ckpt, "cutoffs.json"))) == metrics["cutoffs"]
    assert youden_cutoff([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8)


def test_disk_cache_trains_and_evaluates_like_ram(trained, side_datalist, tmp_path):
    """``dataset_cache: disk`` (MONAI PersistentDataset): fold 1 retrained from the disk cache has the same loss at
    every epoch as with the RAM cache, and evaluation from the disk cache writes the same predictions."""
    ckpt, losses = trained
    cache = str(tmp_path / "cache")
    fold1 = {1: {**TINY, "max_epochs": 2, "dataset_cache": "disk", "cache_dir": cache}}
    disk = train_recording_losses(["train.json"], side_datalist, str(tmp_path / "models"), fold1)
    assert disk[1] == pytest.approx(losses[1], abs=1e-6)
    data = json.load(open(side_datalist))
    n_fold1 = sum(1 for d in data["training"] if d["fold"] != 1)  # its training and inner-validation patients
    assert n_fold1 - 4 < len(os.listdir(cache)) <= n_fold1  # drop_last may leave a few never loaded
    outputs = {}
    for mode in ("ram", "disk"):
        out = str(tmp_path / f"eval_{mode}")
        wf = _workflow(
            "run",
            ["train.json", "evaluate.json"],
            datalist_file=side_datalist,
            ckpt_dir=ckpt,
            output_dir=out,
            dataset_cache=mode,
            cache_dir=cache,
            **TINY,
        )
        wf.initialize()
        wf.run()
        outputs[mode] = list(csv.DictReader(open(os.path.join(out, "predictions.csv"))))
    assert outputs["disk"] == outputs["ram"]
    assert len(os.listdir(cache)) == len(data["training"]) + len(data["test"])  # evaluation reused fold 1's files


def test_inference_one_patient_and_cohort(trained, demo_cohort, tmp_path):
    ckpt, _ = trained
    rows = list(csv.DictReader(open(demo_cohort)))
    base = os.path.dirname(demo_cohort)
    out1, out2 = str(tmp_path / "one"), str(tmp_path / "all")
    shape = [f"--{k}={json.dumps(TINY[k])}" for k in ("spatial_size", "num_slices", "widths", "num_heads", "dropout")]
    cmd = [*BUNDLE, "--config_file", "configs/inference.json"]
    cmd += ["--ckpt_dir", ckpt, "--device", "cpu", *shape]
    first = ["--patient_id", rows[0]["patient_id"], "--ncct", os.path.join(base, rows[0]["ncct"])]
    first += ["--cta", os.path.join(base, rows[0]["cta"])]
    one = subprocess.run(cmd + ["--output_dir", out1, *first], cwd=ROOT, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    many = subprocess.run(
        cmd + ["--output_dir", out2, "--cohort", demo_cohort], cwd=ROOT, capture_output=True, text=True
    )
    assert many.returncode == 0, many.stderr[-2000:]
    single = list(csv.DictReader(open(os.path.join(out1, "predictions.csv"))))
    cohort = list(csv.DictReader(open(os.path.join(out2, "predictions.csv"))))
    assert list(single[0]) == ["patient_id", "probability", "probability_sd", "prediction", "warning"]
    assert len(cohort) == len(rows) and cohort[0]["patient_id"] == single[0]["patient_id"]
    assert float(cohort[0]["probability"]) == pytest.approx(float(single[0]["probability"]), abs=1e-5)
    cutoff = json.load(open(os.path.join(ckpt, "cutoffs.json")))["ensemble"]
    for r in cohort:
        p = float(r["probability"])
        assert 0 <= p <= 1 and float(r["probability_sd"]) >= 0 and int(r["prediction"]) == int(p >= cutoff)
    # the same patient given as DICOM series directories predicts the same probability
    from tests.dicom_series import write_ct_series

    dicom = ["--patient_id", rows[0]["patient_id"]]
    for seq in ("ncct", "cta"):
        dicom += [f"--{seq}", write_ct_series(os.path.join(base, rows[0][seq]), str(tmp_path / "dicom" / seq))]
    out3 = str(tmp_path / "dicom_out")
    from_dicom = subprocess.run(cmd + ["--output_dir", out3, *dicom], cwd=ROOT, capture_output=True, text=True)
    assert from_dicom.returncode == 0, from_dicom.stderr[-2000:]
    via_dicom = list(csv.DictReader(open(os.path.join(out3, "predictions.csv"))))
    assert float(via_dicom[0]["probability"]) == pytest.approx(float(single[0]["probability"]), abs=1e-4)
    absent = ["--ncct", "/nonexistent.nii.gz", "--cta", "/nonexistent2.nii.gz"]
    missing = subprocess.run(cmd + ["--output_dir", out1, *absent], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "--ncct /nonexistent.nii.gz: file not found" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_inference_on_raw_scans(trained, tmp_path):
    """configs/inference_raw.json: raw scanner-space NCCT + CTA are preprocessed (case folder kept) into the fold
    models' grid, then predicted exactly as `monai.bundle run` inference on the preprocessed files."""
    from scripts.demo.generator import generate

    ckpt, _ = trained
    raw_csv = generate(
        str(tmp_path / "raw"), patients=20, seed=9, modalities="ct", spacing=4.0, native=True, world="uniform"
    )
    row = next(iter(csv.DictReader(open(raw_csv))))
    base = os.path.dirname(raw_csv)
    shape = [f"--{k}={json.dumps(TINY[k])}" for k in ("spatial_size", "num_slices", "widths", "num_heads", "dropout")]
    common = ["--ckpt_dir", ckpt, "--device", "cpu", *shape, "--patient_id", row["patient_id"]]
    scans = ["--ncct", os.path.join(base, row["ncct"]), "--cta", os.path.join(base, row["cta"])]
    raw = config_list("configs/inference.json", "configs/inference_raw.json")
    raw_cmd = [*BUNDLE, "--config_file", raw, *common, *scans, "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(raw_cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    case = tmp_path / "out" / "preprocessed" / row["patient_id"] / "ct"
    # preprocessed into the grid the fold models were trained on (grid.json beside them: the 6 mm demo grid)
    assert nib.load(str(case / "ncct.nii.gz")).shape == (31, 37, 31) and (case / "qc.json").is_file()
    scans = ["--ncct", str(case / "ncct.nii.gz"), "--cta", str(case / "cta.nii.gz")]
    direct = [
        *BUNDLE,
        "--config_file",
        "configs/inference.json",
        *common,
        *scans,
        "--output_dir",
        str(tmp_path / "direct"),
    ]
    assert subprocess.run(direct, cwd=ROOT, capture_output=True, text=True).returncode == 0
    # the same case through the quick entry (preprocessing started in a child before MONAI is imported)
    quick = [
        sys.executable,
        "-m",
        "scripts.inference.quick",
        *raw_cmd[raw_cmd.index("--ckpt_dir") : -1],
        str(tmp_path / "quick"),
    ]
    assert subprocess.run(quick, cwd=ROOT, capture_output=True, text=True).returncode == 0
    quick_case = tmp_path / "quick" / "preprocessed" / row["patient_id"] / "ct"
    assert json.load(open(quick_case / "qc.json"))["scans_sha256"] == json.load(open(case / "qc.json"))["scans_sha256"]
    via_raw, via_files, via_quick = (
        list(csv.DictReader(open(tmp_path / d / "predictions.csv"))) for d in ("out", "direct", "quick")
    )
    assert via_raw[0]["patient_id"] == row["patient_id"] == via_quick[0]["patient_id"]
    assert float(via_raw[0]["probability"]) == pytest.approx(float(via_files[0]["probability"]), abs=1e-6)
    assert float(via_quick[0]["probability"]) == pytest.approx(float(via_raw[0]["probability"]), abs=1e-4)


def test_monailabel_infer_task(trained, demo_cohort, tmp_path):
    """The MONAI Label task returns {label, score} equal to `monai.bundle run` inference on the same patient."""
    pytest.importorskip("monailabel", reason="pip install --no-deps -r requirements-monailabel.txt")
    from scripts.monailabel_app.outcome_task import OutcomeInferTask

    ckpt, _ = trained
    row = list(csv.DictReader(open(demo_cohort)))[1]
    ncct = os.path.join(os.path.dirname(demo_cohort), row["ncct"])
    shape = {k: TINY[k] for k in ("spatial_size", "num_slices", "widths", "num_heads", "dropout")}
    task = OutcomeInferTask(ROOT, ckpt_dir=ckpt, overrides=shape)
    assert task.is_valid() and task.info()["type"] == "classification"
    result_file, result = task({"image": ncct, "patient_id": row["patient_id"]})  # CTA found beside the NCCT
    cmd = [*BUNDLE, "--config_file", "configs/inference.json", "--ckpt_dir", ckpt]
    cmd += [f"--{k}={json.dumps(v)}" for k, v in shape.items()] + ["--output_dir", str(tmp_path), "--ncct", ncct]
    cmd += ["--cta", ncct.replace("ncct", "cta"), "--patient_id", row["patient_id"]]
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    expected = list(csv.DictReader(open(tmp_path / "predictions.csv")))[0]
    assert result_file is None and result["score"] == pytest.approx(float(expected["probability"]), abs=1e-5)
    assert result["label"] == int(expected["prediction"]) == int(result["score"] >= result["cutoff"])
    lonely = tmp_path / "lonely_ncct.nii.gz"
    lonely.write_bytes(open(ncct, "rb").read())
    with pytest.raises(BundleInputError, match="no cta image"):
        task({"image": str(lonely)})
    assert not OutcomeInferTask(ROOT, ckpt_dir=str(tmp_path), overrides=shape).is_valid()


def test_monai_deploy_app(trained, demo_cohort, tmp_path):
    """Export the folds for MONAI Deploy, run the Holoscan-based app on NCCT (NIfTI) + CTA (DICOM series) and
    get the probability that `monai.bundle run` inference gives from the NIfTI files."""
    pytest.importorskip("monai.deploy.core", reason="pip install -r requirements-deploy.txt")
    import torch

    from scripts.deploy_app.export import export
    from tests.dicom_series import write_ct_series

    ckpt, _ = trained
    row = list(csv.DictReader(open(demo_cohort)))[2]
    base = os.path.dirname(demo_cohort)
    shape = {k: TINY[k] for k in ("spatial_size", "num_slices", "widths", "num_heads", "dropout")}
    models = str(tmp_path / "deploy_models")
    written = export(ckpt_dir=ckpt, out=models, **shape)
    assert [os.path.relpath(p, models) for p in written] == ["fold0/model.ts", "fold1/model.ts"]
    extra = {"cutoffs.json": "", "metadata.json": ""}
    torch.jit.load(written[0], _extra_files=extra)
    assert json.loads(extra["cutoffs.json"]) == json.load(open(os.path.join(ckpt, "cutoffs.json")))
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "ncct.nii.gz").write_bytes(open(os.path.join(base, row["ncct"]), "rb").read())
    write_ct_series(os.path.join(base, row["cta"]), str(inputs / "cta"))
    out = tmp_path / "output"
    cmd = [sys.executable, "-m", "scripts.deploy_app", "-i", str(inputs), "-o", str(out), "-m", models]
    app = subprocess.run(cmd + ["-w", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True)
    assert app.returncode == 0, app.stderr[-3000:]
    result = json.load(open(out / "prediction.json"))
    cli = [*BUNDLE, "--config_file", "configs/inference.json", "--ckpt_dir", ckpt]
    cli += [f"--{k}={json.dumps(v)}" for k, v in shape.items()] + ["--output_dir", str(tmp_path / "cli")]
    cli += ["--ncct", os.path.join(base, row["ncct"]), "--cta", os.path.join(base, row["cta"])]
    assert subprocess.run(cli, cwd=ROOT, capture_output=True).returncode == 0
    expected = list(csv.DictReader(open(tmp_path / "cli" / "predictions.csv")))[0]
    assert result["folds"] == 2 and result["probability"] == pytest.approx(float(expected["probability"]), abs=1e-4)
    assert result["prediction"] == int(result["probability"] >= result["cutoff"])


PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-424242",
    "PatientBirthDate": "19470203",
    "AccessionNumber": "ACC-9911",
    "InstitutionName": "St Elsewhere Stroke Unit",
}


@pytest.fixture(scope="module")
def dicom_study(demo_cohort, tmp_path_factory):
    """The third demo patient as a shuffled 6-series study (scout, thick and thin NCCT, CTA, CTA MIP, dose report)
    with identifiers in every file, and series rules whose thickness limits fit the 6 mm demo grid (a site's own
    rules file)."""
    from tests.dicom_series import site_rules, write_study

    row = list(csv.DictReader(open(demo_cohort)))[2]
    base = os.path.dirname(demo_cohort)
    folder = tmp_path_factory.mktemp("study")
    nifti = {k: os.path.join(base, row[k]) for k in ("ncct", "cta")}
    truth = write_study(nifti["ncct"], nifti["cta"], str(folder / "study"), seed=2, patient=PHI)
    rules = site_rules(str(folder / "rules.json"), 40.0)
    return {**truth, "dir": str(folder / "study"), "rules": rules, "nifti": nifti, "row": row}


def _no_identifiers(*texts: str | bytes) -> None:
    for text in texts:
        data = text if isinstance(text, bytes) else text.encode()
        assert not any(value.encode() in data for value in PHI.values()), data[:300]


def test_inference_on_a_dicom_study(trained, dicom_study, tmp_path):
    """`--study DIR`: the rules pick the thin NCCT and the CTA from the mixed folder, the probability equals the
    NIfTI files', the choice is recorded, and no identifier reaches an output."""
    ckpt, _ = trained
    shape = [f"--{k}={json.dumps(TINY[k])}" for k in ("spatial_size", "num_slices", "widths", "num_heads", "dropout")]
    cmd = [*BUNDLE, "--config_file", "configs/inference.json", "--ckpt_dir", ckpt, *shape]
    args = [
        "--study",
        dicom_study["dir"],
        "--series_rules",
        dicom_study["rules"],
        "--output_dir",
        str(tmp_path / "study"),
    ]
    study = subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True)
    assert study.returncode == 0, study.stderr[-2000:]
    files = [f"--{k}={v}" for k, v in dicom_study["nifti"].items()]
    nifti = subprocess.run(cmd + [*files, "--output_dir", str(tmp_path / "nifti")], cwd=ROOT, capture_output=True)
    assert nifti.returncode == 0
    a, b = (list(csv.DictReader(open(tmp_path / d / "predictions.csv")))[0] for d in ("study", "nifti"))
    assert float(a["probability"]) == pytest.approx(float(b["probability"]), abs=1e-6)
    record = json.load(open(tmp_path / "study" / "series_selection.json"))
    assert (
        record["ncct"]["series_number"] == dicom_study["ncct"] and record["cta"]["series_number"] == dicom_study["cta"]
    )
    assert "thinnest of 2" in record["ncct"]["reason"]
    outputs = [open(os.path.join(r, f), "rb").read() for r, _, fs in os.walk(tmp_path / "study") for f in fs]
    _no_identifiers(study.stdout.encode(), study.stderr.encode(), *outputs)
    # the answer as a DICOM object of the study (an MNT-DL model measures no clot: the outcome SR only)
    from pydicom import dcmread

    (answer,) = os.listdir(tmp_path / "study" / "dicom" / a["patient_id"])
    report = dcmread(str(tmp_path / "study" / "dicom" / a["patient_id"] / answer))
    assert answer == "outcome_sr.dcm" and report.StudyInstanceUID == dicom_study["study"]


def test_monailabel_task_on_a_dicom_study(trained, dicom_study):
    """The MONAI Label task takes the whole study (``{"study": DIR}``, or as ``image``) and scores it as the NIfTI
    files of the series the rules choose."""
    pytest.importorskip("monailabel", reason="pip install --no-deps -r requirements-monailabel.txt")
    from scripts.monailabel_app.outcome_task import OutcomeInferTask

    ckpt, _ = trained
    shape = {k: TINY[k] for k in ("spatial_size", "num_slices", "widths", "num_heads", "dropout")}
    task = OutcomeInferTask(ROOT, ckpt_dir=ckpt, overrides=shape)
    _, files = task({"image": dicom_study["nifti"]["ncct"], "cta": dicom_study["nifti"]["cta"]})
    for request in ({"study": dicom_study["dir"]}, {"image": dicom_study["dir"]}):
        _, result = task({**request, "series_rules": dicom_study["rules"]})
        assert result["score"] == pytest.approx(files["score"], abs=1e-6) and result["label"] == files["label"]
        assert result["series"]["cta"]["series_number"] == dicom_study["cta"] and "series" not in files


def test_monai_deploy_app_on_a_dicom_study(trained, dicom_study, tmp_path):
    """The Deploy app as MONAI Deploy apps are built (DICOM loader -> series selector -> series to volume ->
    inference -> SR): the probability of the NIfTI path, and a Structured Report that reads back with pydicom."""
    pytest.importorskip("monai.deploy.core", reason="pip install -r requirements-deploy.txt")
    from pydicom import dcmread

    from scripts.deploy_app.export import export
    from scripts.inference.dicom_report import DISCLAIMER, read_report

    ckpt, _ = trained
    shape = {k: TINY[k] for k in ("spatial_size", "num_slices", "widths", "num_heads", "dropout")}
    models = str(tmp_path / "deploy_models")
    export(ckpt_dir=ckpt, out=models, **shape)
    out = tmp_path / "output"
    cmd = [
        sys.executable,
        "-m",
        "scripts.deploy_app",
        "-i",
        dicom_study["dir"],
        "-o",
        str(out),
        "-m",
        models,
        "--rules",
        dicom_study["rules"],
        "-w",
        str(tmp_path / "work"),
    ]
    app = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert app.returncode == 0, app.stderr[-3000:]
    result = json.load(open(out / "prediction.json"))
    cli = [*BUNDLE, "--config_file", "configs/inference.json", "--ckpt_dir", ckpt]
    cli += [f"--{k}={json.dumps(v)}" for k, v in shape.items()] + ["--output_dir", str(tmp_path / "cli")]
    cli += [f"--{k}={v}" for k, v in dicom_study["nifti"].items()]
    assert subprocess.run(cli, cwd=ROOT, capture_output=True).returncode == 0
    expected = list(csv.DictReader(open(tmp_path / "cli" / "predictions.csv")))[0]
    assert result["probability"] == pytest.approx(float(expected["probability"]), abs=1e-4)
    sr = read_report(str(out / "outcome_sr.dcm"))
    assert sr["Outcome probability"] == pytest.approx(result["probability"], abs=1e-6)
    assert sr["Decision cut-off"] == pytest.approx(result["cutoff"], abs=1e-6)
    assert sr["Outcome prediction at the cut-off"].startswith(
        "First-pass effect: " + ("yes" if result["prediction"] else "no")
    )
    assert sr["Algorithm Version"] == json.load(open(os.path.join(ROOT, "configs", "metadata.json")))["version"]
    assert sr["Comment"] == DISCLAIMER
    series = {}
    for name in os.listdir(dicom_study["dir"]):
        ds = dcmread(os.path.join(dicom_study["dir"], name), stop_before_pixels=True)
        series[int(ds.SeriesNumber)] = ds.SeriesInstanceUID
    assert sr["referenced_series"] == sorted([series[dicom_study["ncct"]], series[dicom_study["cta"]]])
    report = dcmread(str(out / "outcome_sr.dcm"))
    assert report.PatientName == "" and report.PatientID == "" and report.StudyInstanceUID == dicom_study["study"]
    assert "InstitutionName" not in report  # the patient and study modules only
    record = json.load(open(out / "series_selection.json"))
    assert record["cta"]["series_number"] == dicom_study["cta"]
    outputs = [open(os.path.join(out, f), "rb").read() for f in os.listdir(out)]
    _no_identifiers(app.stdout, app.stderr, *outputs)
    # a PACS that files results by patient ID: the SR carries the study's patient
    again = [str(tmp_path / "kept") if part == str(out) else part for part in cmd] + ["--keep_identifiers"]
    kept = subprocess.run(again, cwd=ROOT, capture_output=True)
    assert kept.returncode == 0 and dcmread(str(tmp_path / "kept" / "outcome_sr.dcm")).PatientID == PHI["PatientID"]


def test_interrupted_fold_resumes(datalist_2fold, tmp_path):
    ckpt = str(tmp_path / "models")
    os.chdir(ROOT)

    def run(max_epochs: int, fail_at: int = 0) -> list:
        wf = _workflow(
            "train_fold",
            ["train.json"],
            datalist_file=datalist_2fold,
            ckpt_dir=ckpt,
            fold=1,
            max_epochs=max_epochs,
            **TINY,
        )
        wf.initialize()
        trainer = wf.parser.get_parsed_content("train#trainer")
        started: list = []
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: started.append(e.state.epoch))

        def interrupt(engine):
            if engine.state.epoch == fail_at:
                raise KeyboardInterrupt("simulated interruption")

        trainer.add_event_handler(Events.EPOCH_COMPLETED, interrupt)
        try:
            wf.run()
        except (KeyboardInterrupt, RuntimeError) as err:
            if fail_at == 0:
                raise AssertionError("the resumed run failed") from err
        return started

    assert run(4, fail_at=3) == [1, 2, 3]
    fold_dir = os.path.join(ckpt, "fold1")
    assert not os.path.exists(os.path.join(fold_dir, "done.json"))
    assert sorted(f for f in os.listdir(fold_dir) if f.startswith("resume_")) == ["resume_checkpoint_epoch=2.pt"]
    best_before = json.load(open(os.path.join(fold_dir, "best.json")))["metric"]
    assert run(4) == [3, 4]  # continues after the last saved epoch instead of starting over
    done = json.load(open(os.path.join(fold_dir, "done.json")))
    assert done["epochs"] == 4 and done["best_inner_val_metric"] >= best_before
    assert not os.path.exists(os.path.join(fold_dir, "best.json"))


def test_training_id_runs_every_fold_and_skips_finished_ones(side_datalist, tmp_path):
    """``monai.bundle run training`` without --fold trains each fold in its own process, once."""
    ckpt = str(tmp_path / "models")
    args = ["--config_file", "configs/train.json", "--datalist_file", side_datalist, "--ckpt_dir", ckpt]
    args += ["--max_epochs", "1", "--device", "cpu", "--spatial_size", "[24, 24]", "--num_slices", "10"]
    args += ["--widths", "[4, 8, 8, 16]", "--num_heads", "2"]
    cmd = [*BUNDLE, "training", *args]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    for fold in (0, 1):
        assert json.load(open(os.path.join(ckpt, f"fold{fold}", "done.json")))["epochs"] == 1
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("already trained") == 2
    one = subprocess.run(cmd + ["--fold", "5"], cwd=ROOT, capture_output=True, text=True)
    assert one.returncode == 2 and "--fold 5: the datalist has folds 0..1" in one.stderr


def test_binary_metrics_by_hand():
    from scripts.evaluation.evaluate import binary_metrics

    m = binary_metrics([1, 1, 1, 0, 0], [0.9, 0.6, 0.2, 0.7, 0.1], cutoff=0.5)
    # at 0.5: TP 2, FN 1, FP 1, TN 1
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 / 3) and m["roc_auc"] == pytest.approx(
        4 / 6
    )  # 4 of 6 positive-negative pairs ordered


def test_torchscript_export_matches_eager(trained, tmp_path):
    """``monai.bundle ckpt_export`` scripts a fold model; the TorchScript output equals the eager one."""
    import torch

    from scripts.networks import MNTDL
    from scripts.training.kfold import load_weights

    ckpt, _ = trained
    ts_path = str(tmp_path / "model.ts")
    args = [
        "ckpt_export",
        "--net_id",
        "network_def",
        "--filepath",
        ts_path,
        "--ckpt_file",
        os.path.join(ckpt, "fold0", "model.pt"),
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.json",
    ]
    args += [f"--{k}={json.dumps(TINY[k])}" for k in ("spatial_size", "num_slices", "widths", "num_heads", "dropout")]
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(ts_path, _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.load(open("configs/metadata.json"))["version"]
    eager = MNTDL(in_channels=2, num_slices=10, widths=TINY["widths"], num_heads=2, dropout=0.0)
    load_weights(eager, os.path.join(ckpt, "fold0", "model.pt")).eval()
    x = torch.rand(2, 2, 24, 24, 10)
    assert torch.allclose(scripted(x), eager(x), atol=1e-5)


def test_fold_killed_mid_epoch_resumes_to_the_same_model(datalist_2fold, tmp_path):
    """SIGKILL during epoch 3 of a 4-epoch fold; the rerun resumes from the epoch-2 checkpoint and ends with the
    same best model (every weight equal) and the same done.json as an uninterrupted run (CPU, same seed)."""
    import signal
    import time

    import torch

    args = [f"--{k}={json.dumps(v).replace(' ', '')}" for k, v in TINY.items()]  # augmentation on: random

    def command(ckpt: str) -> list:
        data = ["--datalist_file", datalist_2fold, "--ckpt_dir", ckpt]
        return [
            *BUNDLE,
            "train_fold",
            "--config_file",
            "configs/train.json",
            *data,
            "--fold",
            "0",
            "--max_epochs",
            "4",
            *args,
        ]

    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    assert subprocess.run(command(whole), cwd=ROOT, capture_output=True).returncode == 0
    process = subprocess.Popen(command(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume = os.path.join(killed, "fold0", "resume_checkpoint_epoch=2.pt")
    deadline = time.time() + 300
    while not os.path.exists(resume) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the fold finished before it could be killed"
    process.send_signal(signal.SIGKILL)  # during epoch 3
    process.wait()
    assert not os.path.exists(os.path.join(killed, "fold0", "done.json"))
    rerun = subprocess.run(command(killed), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not [f for f in os.listdir(os.path.join(killed, "fold0")) if f.startswith(".tmp-")]  # no partial file
    done = [json.load(open(os.path.join(d, "fold0", "done.json"))) for d in (whole, killed)]
    assert done[0] == done[1]
    for name in ("model.pt",):
        a, b = (torch.load(os.path.join(d, "fold0", name), map_location="cpu") for d in (whole, killed))
        a, b = a.get("model", a), b.get("model", b)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_resumed_fold_keeps_its_early_stopping_state(datalist_2fold, tmp_path):
    """The early-stopping counter and best score are in the resume checkpoint: a fold interrupted after epoch 2
    starts epoch 3 with the state the interrupted run had there (without it, patience restarts from zero)."""

    class Interrupted(Exception):
        pass

    def state_at_epoch_3() -> dict:
        wf = _workflow(
            "train_fold",
            ["train.json"],
            datalist_file=datalist_2fold,
            ckpt_dir=str(tmp_path),
            fold=0,
            max_epochs=4,
            **TINY,
        )
        wf.initialize()
        stopper, seen = wf.parser.get_parsed_content("validate#handlers#0"), {}

        def _stop(engine) -> None:
            seen.update(stopper._handler.state_dict())
            raise Interrupted

        wf.parser.get_parsed_content("train#trainer").add_event_handler(Events.EPOCH_STARTED(once=3), _stop)
        with pytest.raises(RuntimeError) as raised:  # monai.bundle wraps the expression's exception
            wf.run()
        assert isinstance(raised.value.__cause__, Interrupted)
        return seen

    first = state_at_epoch_3()
    assert first["best_score"] is not None  # validated at epochs 1 and 2
    assert os.path.isfile(tmp_path / "fold0" / "resume_checkpoint_epoch=2.pt")
    assert state_at_epoch_3() == first


@pytest.fixture(scope="module")
def side_mnt_dl(side_datalist, tmp_path_factory) -> str:
    """A fold-model folder: one tiny MNT-DL trained on the occlusion side for 30 epochs (validated, so checkpointed,
    at the last epoch only), cut-offs at 0.5."""
    ckpt = str(tmp_path_factory.mktemp("side_mnt_dl") / "models")
    train_recording_losses(
        ["train.json"], side_datalist, ckpt, {0: {**TINY, **FIT, "max_epochs": 30, "val_interval": 30}}
    )
    shutil.rmtree(os.path.join(ckpt, "fold0", "tensorboard"))
    with open(os.path.join(ckpt, "cutoffs.json"), "w") as f:
        json.dump({"0": 0.5, "ensemble": 0.5}, f)
    return ckpt


def _side_predictions(ckpt: str, cohort: str, out: str, runs: dict) -> tuple:
    """Run the inference CLI on ``cohort`` once per option list of ``runs``; return (labels = occlusion side R,
    {run: probabilities}) in patient order."""
    keys = ("spatial_size", "num_slices", "widths", "num_heads", "dropout", "cta_window")
    shape = [f"--{k}={json.dumps(TINY[k]).replace(' ', '')}" for k in keys]
    cmd = [*BUNDLE, "--config_file", "configs/inference.json", "--ckpt_dir", ckpt]
    cmd += ["--device", "cpu", "--cohort", cohort, *shape]
    probabilities = {}
    for name, options in runs.items():
        done = subprocess.run(cmd + ["--output_dir", os.path.join(out, name), *options], cwd=ROOT, capture_output=True)
        assert done.returncode == 0, done.stderr[-2000:]
        rows = list(csv.DictReader(open(os.path.join(out, name, "predictions.csv"))))
        probabilities[name] = {r["patient_id"]: float(r["probability"]) for r in rows}
    ids = sorted(probabilities[next(iter(runs))])
    side = {r["patient_id"]: int(r["side"] == "R") for r in csv.DictReader(open(cohort))}
    return [side[i] for i in ids], {k: np.array([p[i] for i in ids]) for k, p in probabilities.items()}


@pytest.fixture(scope="module")
def plain_fp32(side_mnt_dl, demo_cohort, tmp_path_factory) -> tuple:
    """(labels, probabilities) of ``side_mnt_dl`` on the demo cohort in plain fp32 (``--channels_last false
    --fold_batch_norm false``): the reference of the agreement tests."""
    plain = ["--channels_last", "false", "--fold_batch_norm", "false"]
    y, p = _side_predictions(side_mnt_dl, demo_cohort, str(tmp_path_factory.mktemp("plain")), {"plain": plain})
    return y, p["plain"]


def test_fast_inference_agrees_with_plain_fp32(side_mnt_dl, plain_fp32, demo_cohort, tmp_path):
    """Issue 13's agreement check through the inference CLI on the demo cohort (``side_mnt_dl``'s model). The default
    path (fp32, channels-last weights, BatchNorm folded into the convolutions) against plain fp32: probabilities
    within 0.01 and ROC-AUC within 0.005, as the issue asks (measured: equal to the 6 decimals of predictions.csv).
    ``--precision bf16`` moves this MNT-DL by up to 0.032 in probability (0.019 without folding;
    docs/performance.md), so it is only guarded at 0.05 / 0.03 and stays an option to check on one's own models."""
    from sklearn.metrics import roc_auc_score

    y, exact = plain_fp32
    _, p = _side_predictions(side_mnt_dl, demo_cohort, str(tmp_path), {"default": [], "bf16": ["--precision", "bf16"]})
    assert exact.std() > 0.05 and roc_auc_score(y, exact) > 0.7  # a model that ranks: the AUC check means something
    assert np.abs(exact - p["default"]).max() < 0.01
    assert abs(roc_auc_score(y, exact) - roc_auc_score(y, p["default"])) < 0.005
    assert 0 < np.abs(exact - p["bf16"]).max() < 0.05  # bf16 did run (not bit-equal), near fp32
    assert abs(roc_auc_score(y, exact) - roc_auc_score(y, p["bf16"])) < 0.03


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="--compile true needs a C++ compiler for Inductor on CPU (none on PATH)",
)
def test_compiled_inference_agrees_with_plain_fp32(side_mnt_dl, plain_fp32, demo_cohort, tmp_path):
    """``--compile true`` (torch.compile, Inductor with freezing) against plain fp32: within 0.01 / 0.005 (measured:
    equal to the 6 decimals of predictions.csv)."""
    from sklearn.metrics import roc_auc_score

    y, exact = plain_fp32
    _, p = _side_predictions(side_mnt_dl, demo_cohort, str(tmp_path), {"compiled": ["--compile", "true"]})
    assert exact.std() > 0.05
    assert np.abs(exact - p["compiled"]).max() < 0.01
    assert abs(roc_auc_score(y, exact) - roc_auc_score(y, p["compiled"])) < 0.005
