"""ClotReadingNet (configs/clot_readings.json, the main job's model): its fixed readings follow the clot and the
collaterals drawn into a demo patient, and the configuration trains, evaluates and infers through monai.bundle."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.data.anatomy import load_anatomy
from scripts.data.split import load_datalist
from scripts.demo.generator import draw_patient, render
from scripts.inference.measurements import percentile, read_reference
from scripts.networks.clot_readings import ClotReadingNet, clot_readings, reader_readings
from tests.test_vessel_input import _parser, evaluated_and_inferred
from tests.test_workflow import train_recording_losses


def _readings(anatomy, patient, tmp_path, name: str) -> tuple:
    """Render ``patient`` at 2 mm (same noise every call) and read it through the main job's vessel-box input:
    (the eight readings: the rules' four, then the learned reader's; the measurements in physical units, the key
    image, the clot length reading at a fixed cut)."""
    images = render(anatomy, patient, np.random.default_rng(7), ["ct"])
    item = {"patient_id": name, **{k: patient[k] for k in ("location", "side", "age", "ivt", "nihss")}}
    for seq in ("ncct", "cta"):
        item[seq] = str(tmp_path / f"{name}_{seq}.nii.gz")
        nib.save(nib.Nifti1Image(images[seq].astype(np.float32), anatomy.affine), item[seq])
    parser = _parser(["inference.json", "clot_readings.json"])
    image = parser.get_parsed_content("preprocessing")(item)["image"]
    assert image.shape == (4, 67, 46, 43)  # the crop's own grid, not resampled
    network = parser.get_parsed_content("network_def")  # the main job's settings: aligned mirror, relative levels
    x = image[None]
    read, measured, view = network.measurements(x)[0].numpy(), network.clinical_measurements(x)[0], network.key_views(x)
    fixed = reader_readings(x, {**network.reader_settings, "distal_cut": 0.0})[0, 0]
    return read, measured, view[0].numpy(), float(fixed)


@pytest.mark.parametrize("site, side", [("M1", "L"), ("ICA", "R")])
def test_readings_follow_the_clot_length_density_perviousness_and_the_collaterals(site, side, tmp_path):
    anatomy = load_anatomy(2.0)
    base = draw_patient(np.random.default_rng([1, 2]), 2, dt.date(2020, 1, 1), 10)
    base.update(location=site, side=side)
    base["_truth"].update(clot_length_mm=10.0, clot_density_hu=55.0, clot_perviousness=0.3, collaterals=1)
    changes = {
        "long": ("clot_length_mm", 30.0),
        "dense": ("clot_density_hu", 80.0),
        "pervious": ("clot_perviousness", 0.9),
        "collateralised": ("collaterals", 3),
        "no collaterals": ("collaterals", 0),
    }
    read, measured, fixed = {}, {}, {}
    read["base"], measured["base"], view, fixed["base"] = _readings(anatomy, base, tmp_path, "base")
    for name, (key, value) in changes.items():
        patient = copy.deepcopy(base)
        patient["_truth"][key] = value
        read[name], measured[name], _, fixed[name] = _readings(anatomy, patient, tmp_path, name)
    assert read["base"][0] > np.log1p(5)  # a clot is found
    # each reading moves with its own property (length: log voxel count; density: NCCT asymmetry in the clot, HU;
    # perviousness: the clot's CTA - NCCT as a share of the patient's arterial enhancement; collaterals: enhancement
    # ratio of the vessels beyond it), by about half of what the main job's settings read here or more
    assert read["long"][0] > read["base"][0] + np.log(2), (read["long"], read["base"])  # 3 x the length
    assert read["dense"][1] > read["base"][1] + 10, (read["dense"], read["base"])  # +25 HU, partial volume
    assert read["pervious"][2] > read["base"][2] + 0.1, (read["pervious"], read["base"])  # +36 HU of ~308
    assert read["collateralised"][3] > read["base"][3] + 0.06, (read["collateralised"], read["base"])
    assert read["no collaterals"][3] < read["base"][3] - 0.03, (read["no collaterals"], read["base"])
    # and little with the others': the vessels beyond the clot fill at 0.5-0.95 of their mirror with the collateral
    # grade, so a fixed cut reads poorly filled ones as clot (the grades moved the length reading by 0.5-1.0 here, 3 x
    # the length by 1.0-1.7); the cut at 0.55 of the patient's own distal filling (``distal_cut``) keeps them apart
    grades = ("base", "collateralised", "no collaterals")
    spread = np.ptp([read[g][0] for g in grades])
    assert spread < 0.25 * (read["long"][0] - read["base"][0]), ({g: read[g] for g in grades}, read["long"])
    assert np.ptp([fixed[g] for g in grades]) > 0.35 * (fixed["long"] - fixed["base"]), fixed  # what it buys
    assert abs(read["dense"][3] - read["base"][3]) < 0.05
    # the learned reader (models/reading_net/model.pt, trained on other generated patients) on patients it never saw:
    # the clot length in mm (10 and 30 drawn) and the collateral grade (1, 3, 0), the length unmoved by the grade
    learned_mm = {name: np.exp(read[name][4]) for name in read}
    assert 6.0 <= learned_mm["base"] <= 18.0 and 18.0 <= learned_mm["long"] <= 45.0, learned_mm
    assert np.ptp([read[g][4] for g in grades]) < 0.3 * (read["long"][4] - read["base"][4]), read
    assert read["collateralised"][7] > read["base"][7] + 1.0 and read["no collaterals"][7] < read["base"][7] - 0.4
    # and the density: +25 HU in the clot reads higher than every other patient here (+6.4 and +6.8 HU measured;
    # partial volume and the net's regression to the mean take most of it)
    assert read["dense"][5] > read["base"][5] + 3.0 and read["dense"][5] == max(read[g][5] for g in read), read
    # the same in physical units, as a reader would check them on the CTA: a 10 mm clot reads 4-20 mm (2 mm voxels,
    # its ends partial-volume), 30 mm at least 10 mm longer; +25 HU density and +0.6 perviousness (+36 HU of
    # contrast inside the clot at this bolus) show in HU, partial volume taking part of each
    base = measured["base"]
    assert 4.0 <= base["clot_length_mm"] <= 20.0, base
    assert measured["long"]["clot_length_mm"] > base["clot_length_mm"] + 10, (measured["long"], base)
    assert measured["dense"]["clot_ncct_hu"] > base["clot_ncct_hu"] + 8, (measured["dense"], base)
    assert measured["pervious"]["clot_perviousness_hu"] > base["clot_perviousness_hu"] + 10, (
        measured["pervious"],
        base,
    )
    assert base["distal_filling_ratio"] == pytest.approx(float(read["base"][3]), abs=1e-3)  # the collateral reading
    # the key image: the occluded half's iodine (left) beside its mirror's (right), the clot in red on the left only
    red = (view[..., 0] - view[..., 1]) > 0.5
    half = view.shape[1] // 2
    assert view.shape == (46, 66, 3) and red[:, :half].sum() >= 2 and red[:, half:].sum() == 0


def test_network_is_a_linear_head_on_the_readings_and_refuses_a_wrong_input():
    net = ClotReadingNet(clinical_columns={"age": "numeric"}).eval()
    x = torch.rand(3, 4, 12, 10, 8)
    clinical = torch.tensor([[60.0], [70.0], [float("nan")]])
    features = torch.cat([net.measurements(x), net.tabular(clinical)], 1)
    assert torch.allclose(net(x, clinical), net.head(features))
    with pytest.raises(ValueError, match="pass the clinical values"):
        net(x)
    with pytest.raises(ValueError, match=r"expected input \(B, 4, H, W, D\)"):
        net(x[:, :2], clinical)
    # no clot anywhere (the image equals its mirror): length, density and perviousness read 0, collaterals 1
    same = torch.full((1, 4, 6, 6, 6), 0.8)
    assert clot_readings(same)[0].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_midline_band_reads_no_vessel_and_leaves_the_lateral_clot():
    """A vessel beside the midline that the mirror shows and the own side lacks (the midline's own vessels, their own
    mirrors after alignment) reads as clot without the band; with it only the lateral clot counts, voxel for voxel."""
    x = torch.zeros(1, 4, 21, 10, 10)
    x[:, 0], x[:, 2] = 0.3, 0.3  # NCCT and its mirror: 30 HU of [0, 100]
    x[:, 1], x[:, 3] = 0.1, 0.1  # CTA and its mirror: 40 HU of [0, 400] (10 HU of enhancement)
    x[:, 3, 3, 2:8, 5] = 0.75  # the mirror's vessels (300 HU): a lateral one and one beside the midline (index 10)
    x[:, 3, 9, 2:8, 5] = 0.75
    x[:, 1, 12:, 2:8, 5] = 0.75  # the other half's own vessels: the patient's arterial enhancement
    settings = {"relative": True, "vessel_level": 0.6, "vessel_width": 0.25, "cut": 0.4, "occluded_half": True}
    without = clot_readings(x, **settings)[0, 0]
    with_band = clot_readings(x, **settings, midline=2)[0, 0]
    assert without == pytest.approx(np.log1p(12), abs=0.01) and with_band == pytest.approx(np.log1p(6), abs=0.01)
    net = ClotReadingNet(**settings, midline_mm=4.0, voxel_mm=2.0)
    assert net.settings["midline"] == 2 and net.measurements(x)[0, 0] == pytest.approx(float(with_band))


def test_density_reading_holds_when_the_mirror_lies_two_voxels_beside_the_clot():
    """The main job's density reading (``density_mm3``: the hyperdense artery sign, the densest voxels near the
    mirror's arteries against the mirror's densest) reads a clot's NCCT density the same whether the aligned mirror's
    artery lies on the patient's own or two voxels (4 mm) beside it (18 HU of +30 both times: smoothing spreads part
    of it into the brain); the clot's mean asymmetry (``density_top`` 0) loses more than half of it there, reading the
    brain beside the clot with it."""
    parser = _parser(["train.json", "clot_readings.json"])
    settings = parser.get_parsed_content("network_def").reader_settings
    assert settings["density_top"] == 5 and settings["density_reach"] == 2  # 40 mm3 and 4 mm at 2 mm voxels

    def box(density: float, offset: int) -> torch.Tensor:
        x = torch.zeros(1, 4, 30, 16, 12)
        x[:, 0], x[:, 2] = 0.3, 0.3  # NCCT and its mirror: 30 HU of [0, 100]
        x[:, 1], x[:, 3] = 0.1, 0.1  # CTA: 40 HU of [0, 400]
        own, mirror, depth = slice(4, 6), slice(4 + offset, 6 + offset), slice(5, 7)  # arteries 2 voxels wide
        x[:, 0, own, 2:14, depth], x[:, 2, mirror, 2:14, depth] = 0.42, 0.42  # blood (42 HU)
        x[:, 1, own, 2:14, depth], x[:, 3, mirror, 2:14, depth] = 0.85, 0.85  # both enhanced (340 HU)
        x[:, 0, own, 5:10, depth] = density / 100  # the clot: its density on NCCT, no contrast on CTA
        x[:, 1, own, 5:10, depth] = density / 400
        x[:, 1, 24:26, 2:14, depth] = 0.85  # the other hemisphere's artery
        return x

    def effect(options: dict, offset: int) -> float:  # the reading's change for +30 HU of clot density
        dense, light = (float(reader_readings(box(d, offset), options)[0, 1]) for d in (80.0, 50.0))
        return dense - light

    plain = {**settings, "density_top": 0}
    aligned, beside = effect(settings, 0), effect(settings, 2)
    assert aligned > 15 and beside > 15 and abs(beside - aligned) < 0.2 * aligned, (aligned, beside)
    assert effect(plain, 2) < 0.5 * effect(plain, 0), (effect(plain, 0), effect(plain, 2))  # 11.5 HU of 30


# the main job's configuration on the 6 mm side_datalist cohort (a fit test: the readings cannot see a clot there)
TINY = {"vessel_spacing": 6.0, "num_slices": 10, "max_epochs": 40}
CONFIGS = ["train.json", "clot_readings.json"]


def test_clot_readings_configuration_lowers_the_loss_keeps_the_last_epoch_and_is_evaluated_and_inferred(
    side_datalist, demo_cohort, tmp_path
):
    ckpt = str(tmp_path / "models")
    losses = train_recording_losses(CONFIGS, side_datalist, ckpt, {0: TINY, 1: TINY})
    for fold in (0, 1):
        assert len(losses[fold]) == 40
        assert losses[fold][-1] < 0.8 * losses[fold][0], np.round(losses[fold], 3).tolist()
        done = json.load(open(os.path.join(ckpt, f"fold{fold}", "done.json")))
        assert done["best_epoch"] == 40  # a convex model trained to convergence: the last epoch is kept
    args = [f"--{k}={json.dumps(v).replace(' ', '')}" for k, v in TINY.items()]
    evaluated, pred = evaluated_and_inferred(
        ["configs/clot_readings.json"],
        side_datalist,
        demo_cohort,
        ckpt,
        tmp_path,
        args,
    )
    # the same patient, images and clinical values, through evaluation and single-patient inference
    assert float(pred["probability"]) == pytest.approx(evaluated, abs=1e-5)
    # beside it the measurements, the side and site they were read on, and each one's percentile among the
    # development patients, whose values evaluation wrote to the model folder
    reference = read_reference(ckpt)
    assert len(reference["arterial_enhancement_hu"]) == len(load_datalist(side_datalist)["training"])
    assert pred["side"] in ("L", "R") and pred["location"]
    value = float(pred["arterial_enhancement_hu"])
    key = plt.imread(os.path.join(tmp_path, "infer", "key_images", "P1.png"))  # 4 pixels a voxel, own | mirror
    assert key.shape[:2] == (4 * 16, 4 * 22)  # the 6 mm box: 23 x 16 voxels, 11 a half
    assert float(pred["arterial_enhancement_hu_pct"]) == pytest.approx(
        percentile(reference["arterial_enhancement_hu"], value), abs=0.1
    )
