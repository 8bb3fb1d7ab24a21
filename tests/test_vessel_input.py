"""The vessel-resolution input (configs/experiments/vessel.json): an MNI box holding both ICA / MCA courses, mirrored;
SlabNet on it (configs/experiments/slab_net.json) trained, evaluated and used for inference through monai.bundle."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from typing import Any, Dict, Sequence, Tuple

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from sklearn.metrics import log_loss

from scripts import BundleInputError
from scripts.data.anatomy import load_anatomy
from scripts.data.mni_box import VESSEL_BOX_MM, MNIBoxd
from scripts.demo.generator import ICA, M1, M2, _mirror, draw_patient, render
from tests.conftest import ROOT
from tests.helpers import config_list, patient_flags, run_bundle
from tests.test_workflow import FIT, _workflow, train_recording_losses

# a 6 mm vessel box (the demo_cohort fixture's grid), 10 slices in 5 slabs, a small SlabNet
# (and the parenchymal CTA window, so that the side_datalist task, the occlusion side, shows as hypoperfusion)
VESSEL_TINY = {
    "vessel_spacing": 6.0,
    "num_slices": 10,
    "slab_features": 4,
    "batch_size": 4,
    "patience": 80,
    "elastic_prob": 0.0,
    "cta_window": [0, 150],
}
SLAB = ["train.json", "experiments/vessel.json", "experiments/slab_net.json"]


def _parser(files, **override) -> ConfigParser:
    os.chdir(ROOT)
    parser = ConfigParser()
    parser.read_config([os.path.join("configs", f) for f in files])
    for key, value in override.items():
        parser[key] = value
    parser.get_parsed_content("imports")
    return parser


@pytest.mark.parametrize("side", ["L", "R"])
def test_vessel_box_holds_both_carotid_and_middle_cerebral_courses(side, tmp_path):
    anatomy = load_anatomy(2.0)
    patient = draw_patient(np.random.default_rng([1, 2]), 2, dt.date(2020, 1, 1), 10)
    patient.update(location="M1", side=side)
    images = render(anatomy, patient, np.random.default_rng(3), ["ct"])
    item = {"patient_id": "p", "location": "M1", "side": side}
    for seq in ("ncct", "cta"):
        path = str(tmp_path / f"{seq}.nii.gz")
        nib.save(nib.Nifti1Image(images[seq].astype(np.float32), anatomy.affine), path)
        item[seq] = path
    # the box crop at the grid's own spacing, before windowing and resizing
    parser = _parser(["inference.json", "experiments/vessel.json"])
    crop = parser.get_parsed_content("load_transforms") + parser.get_parsed_content("mask_transforms")
    out = dict(item)
    for t in crop:
        out = t(out)
    cta = out["cta"]
    assert cta.shape[1:] == (67, 46, 43)  # 132 x 90 x 84 mm at 2 mm
    inverse = np.linalg.inv(cta.affine.numpy())
    for hemisphere in ("L", "R"):
        course = np.concatenate([_mirror(ICA, hemisphere), _mirror(M1, hemisphere), _mirror(M2, hemisphere)])
        for a, b in zip(course[:-1], course[1:]):
            for point in np.linspace(a, b, 5):
                ijk = np.round(inverse[:3, :3] @ point + inverse[:3, 3]).astype(int)
                assert (ijk >= 0).all() and (ijk < np.array(cta.shape[1:])).all(), f"{point} outside the box"
        if hemisphere != side:  # the open side: every segment enhanced (CTA > 200 HU within 2 mm of its centre)
            for point in course[1:-1]:
                ijk = np.round(inverse[:3, :3] @ point + inverse[:3, 3]).astype(int)
                assert cta[0][tuple(slice(max(i - 1, 0), i + 2) for i in ijk)].max() > 200
    # the occluded side's ICA is open below the clot
    ica = _mirror(ICA, side)[0]
    ijk = np.round(inverse[:3, :3] @ ica + inverse[:3, 3]).astype(int)
    assert cta[0][tuple(slice(max(i - 1, 0), i + 2) for i in ijk)].max() > 200
    # the network input: 2 sequences + their left-right mirror, windowed to keep vessel contrast
    image = parser.get_parsed_content("preprocessing")(dict(item))["image"]
    assert image.shape == (4, 66, 45, 20)  # vessel.json's default 20 slices
    assert torch.allclose(image[2:], torch.flip(image[:2], dims=[1]), atol=1e-5)


def test_vessel_box_refuses_a_scan_outside_the_mni_grid():
    scanner = MetaTensor(torch.zeros(1, 60, 60, 30), affine=torch.diag(torch.tensor([1.0, 1.0, 5.0, 1.0])))
    with pytest.raises(BundleInputError, match="not in the bundle's MNI grid"):
        MNIBoxd("ncct")({"ncct": scanner})
    assert VESSEL_BOX_MM[0] == (-66.0, 66.0)  # symmetric about the midline: the mirror maps hemisphere to hemisphere


@pytest.fixture(scope="module")
def vessel_trained(side_datalist, tmp_path_factory):
    ckpt = str(tmp_path_factory.mktemp("vessel_models"))
    overrides = {0: {**VESSEL_TINY, **FIT, "max_epochs": 60}, 1: {**VESSEL_TINY, "max_epochs": 2}}
    return ckpt, train_recording_losses(SLAB, side_datalist, ckpt, overrides)


def test_vessel_configuration_lowers_the_loss_and_is_evaluated_and_inferred(
    vessel_trained, side_datalist, demo_cohort, tmp_path
):
    ckpt, losses = vessel_trained
    assert len(losses[0]) == 60  # 3 batches of 4 an epoch: noisy, so compare 10-epoch means
    assert np.mean(losses[0][-10:]) < 0.8 * np.mean(losses[0][:10]), np.round(losses[0], 3).tolist()
    overrides = [f"--{k} {json.dumps(v).replace(' ', '')}" for k, v in VESSEL_TINY.items()]
    args = " ".join(overrides).split()
    overlays = ("configs/experiments/vessel.json", "configs/experiments/slab_net.json")
    evaluate = config_list("configs/train.json", *overlays, "configs/evaluate.json")
    result = run_bundle(
        "--config_file",
        evaluate,
        "--datalist_file",
        side_datalist,
        "--ckpt_dir",
        ckpt,
        "--output_dir",
        str(tmp_path / "eval"),
        *args,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    assert 0.0 <= metrics["cv"]["summary"]["roc_auc"]["mean"] <= 1.0
    row = next(iter(csv.DictReader(open(demo_cohort))))
    base = os.path.dirname(demo_cohort)
    infer = config_list("configs/inference.json", *overlays)
    patient = patient_flags(row, base, clinical=False)
    result = run_bundle(
        "--config_file", infer, "--ckpt_dir", ckpt, *patient, "--output_dir", str(tmp_path / "infer"), *args
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (pred,) = list(csv.DictReader(open(tmp_path / "infer" / "predictions.csv")))
    assert pred["patient_id"] == "P1" and 0.0 < float(pred["probability"]) < 1.0


# VesselMaskNet with the occlusion site, age, IVT and NIHSS (configs/experiments/vessel_mask.json) on the same 6 mm box
MASK_TINY = {
    "vessel_spacing": 6.0,
    "num_slices": 10,
    "batch_size": 4,
    "patience": 80,
    "elastic_prob": 0.0,
    "cta_window": [0, 150],
    "network_def#points": 256,
}
MASK = ["train.json", "experiments/vessel.json", "experiments/vessel_mask.json", "experiments/select_log_loss.json"]


def test_vessel_mask_configuration_lowers_the_loss_and_is_evaluated_and_inferred(side_datalist, demo_cohort, tmp_path):
    ckpt = str(tmp_path / "models")
    overrides = {0: {**MASK_TINY, **FIT, "max_epochs": 60}, 1: {**MASK_TINY, "max_epochs": 2}}
    losses = train_recording_losses(MASK, side_datalist, ckpt, overrides)
    assert np.mean(losses[0][-10:]) < 0.8 * np.mean(losses[0][:10]), np.round(losses[0], 3).tolist()
    state = torch.load(os.path.join(ckpt, "fold0", "model.pt"), map_location="cpu")
    assert state["tabular.fitted"].item() == 1
    # the kept checkpoint is the one with the recorded best inner-validation log loss: rerun the fold's evaluator
    # on it and compare with scikit-learn's log loss and with done.json
    done = json.load(open(os.path.join(ckpt, "fold0", "done.json")))
    assert done["best_epoch"] >= 10  # select_log_loss.json: checkpoints chosen from epoch 10 on
    wf = _workflow(
        "train_fold", MASK, datalist_file=side_datalist, ckpt_dir=str(tmp_path / "check"), fold=0, **MASK_TINY
    )
    wf.initialize()
    wf.parser.get_parsed_content("network").load_state_dict(state)
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    wf.parser.get_parsed_content("validate#handlers")[0].set_trainer(wf.parser.get_parsed_content("train#trainer"))
    outputs: list = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.extend(e.state.output))
    evaluator.run()
    probs = [float(o["pred"].reshape(-1)[0]) for o in outputs]
    labels = [int(o["label"]) for o in outputs]
    assert evaluator.state.metrics["val_bce"] == pytest.approx(log_loss(labels, probs), rel=1e-4)
    assert evaluator.state.metrics["val_bce"] == pytest.approx(done["best_inner_val_metric"], rel=1e-4)
    args = [f"--{k}={json.dumps(v).replace(' ', '')}" for k, v in MASK_TINY.items()]
    evaluated, pred = evaluated_and_inferred(
        ["configs/experiments/vessel.json", "configs/experiments/vessel_mask.json"],
        side_datalist,
        demo_cohort,
        ckpt,
        tmp_path,
        args,
    )
    assert pred["patient_id"] == "P1" and 0.0 < float(pred["probability"]) < 1.0
    # the same patient, images and clinical values, through evaluation and single-patient inference
    assert float(pred["probability"]) == pytest.approx(evaluated, abs=1e-5)


def evaluated_and_inferred(
    overlays: Sequence[str], datalist: str, cohort: str, ckpt: str, out: Any, args: Sequence[str]
) -> Tuple[float, Dict[str, str]]:
    """Evaluate ``ckpt`` (configs/train.json + ``overlays`` + configs/evaluate.json) on ``datalist``, then infer one
    of its test-set patients alone as "P1" (configs/inference.json + ``overlays``, with its location, side and
    clinical values): (the evaluation's ensemble probability of that patient, the predictions.csv row of the inference).
    """
    evaluate = config_list("configs/train.json", *overlays, "configs/evaluate.json")
    result = run_bundle(
        "--config_file",
        evaluate,
        "--datalist_file",
        datalist,
        "--ckpt_dir",
        ckpt,
        "--output_dir",
        os.path.join(out, "eval"),
        *args,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = {
        r["patient_id"]: float(r["probability"])
        for r in csv.DictReader(open(os.path.join(out, "eval", "predictions.csv")))
        if r["fold"] == "ensemble"
    }
    row = next(r for r in csv.DictReader(open(cohort)) if r["patient_id"] in evaluated)  # a test-set patient
    base = os.path.dirname(cohort)
    infer = config_list("configs/inference.json", *overlays)
    result = run_bundle(
        "--config_file",
        infer,
        "--ckpt_dir",
        ckpt,
        *patient_flags(row, base),
        "--output_dir",
        os.path.join(out, "infer"),
        *args,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (pred,) = list(csv.DictReader(open(os.path.join(out, "infer", "predictions.csv"))))
    return evaluated[row["patient_id"]], pred
