"""MirrorAlignd (configs/clot_readings.json): on a patient whose two vessel trees are not mirror images, the aligned
mirror meets the patient's own vessels, so the open hemisphere no longer reads as occluded, and the occluded
hemisphere is turned to the box's first half whichever side it is on."""

from __future__ import annotations

import datetime as dt

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts import BundleInputError
from scripts.data.anatomy import load_anatomy
from scripts.data.mirror_align import MirrorAlignd, enhancement_maps, resample
from scripts.demo.generator import draw_patient, draw_scan, render
from tests.test_vessel_input import _parser

WINDOWS = ((0.0, 100.0), (0.0, 400.0))


@pytest.fixture(scope="module")
def asymmetric(tmp_path_factory):
    """One M1 occlusion on the right, its right vessel tree turned 4 degrees and shifted 2 mm against the left one;
    the vessel box before alignment (configs/experiments/vessel.json) and the patient's item."""
    anatomy = load_anatomy(2.0)
    patient = draw_patient(np.random.default_rng([1, 2]), 2, dt.date(2020, 1, 1), 10)
    patient.update(location="M1", side="R")
    scan = draw_scan(np.random.default_rng(0), 60.0, "uniform")
    scan["courses"] = {"R": (np.deg2rad([0.0, 0.0, 4.0]), np.array([0.0, 2.0, -2.0]))}
    images = render(anatomy, patient, np.random.default_rng(7), ["ct"], scan=scan)
    folder = tmp_path_factory.mktemp("asymmetric")
    item = {"patient_id": "asym", **{k: patient[k] for k in ("location", "side", "age", "ivt", "nihss")}}
    for seq in ("ncct", "cta"):
        item[seq] = str(folder / f"asym_{seq}.nii.gz")
        nib.save(nib.Nifti1Image(images[seq].astype(np.float32), anatomy.affine), item[seq])
    plain = _parser(["inference.json", "clot_readings.json"])
    plain["shape_transforms"] = "$@channel_transforms + @mirror_transforms + @resize_transforms"
    return plain.get_parsed_content("preprocessing")(dict(item))["image"], item


def _false_occlusion(box: torch.Tensor, half: slice) -> float:
    """Share of the mirror's vessel voxels in ``half`` (along H) where the patient's own enhancement is under 0.4
    of the mirror's: in the open hemisphere, vessels that a voxel-to-voxel comparison would call occluded."""
    own, mirror, soft, arterial = enhancement_maps(box[None].float(), WINDOWS, 0.95, 0.999)
    vessel = (mirror[0] > 0.6 * arterial[0]) & soft[0]
    vessel[: half.start or 0] = False
    vessel[half.stop :] = False
    low = own[0] < 0.4 * mirror[0]
    return float((vessel & low).sum() / vessel.sum().clamp_min(1))


def test_the_aligned_mirror_meets_the_open_hemispheres_vessels(asymmetric):
    box, item = asymmetric
    aligned = MirrorAlignd("image", WINDOWS)({"image": box, "side": "L"})["image"]  # "L": not turned, same halves
    h = box.shape[1]
    open_half = slice(0, h // 2)  # the patient's left: its own tree, against the turned right one
    before, after = _false_occlusion(box, open_half), _false_occlusion(aligned, open_half)
    assert before > 0.5, before  # 4 degrees and 2 mm put most of the mirror's vessels beside the patient's own
    assert after < 0.2, (before, after)  # measured 0.87 -> 0.08
    assert torch.equal(aligned[:2], box[:2].to(aligned.dtype))  # the patient's own channels are not moved


def test_the_occluded_side_is_turned_to_the_first_half(asymmetric):
    box, item = asymmetric
    turned = MirrorAlignd("image", WINDOWS)({"image": box, "side": "R"})["image"]
    kept = MirrorAlignd("image", WINDOWS)({"image": box, "side": "L"})["image"]
    assert torch.allclose(turned, kept.flip(1))  # the right hemisphere (the occlusion) now comes first
    parsed = _parser(["inference.json", "clot_readings.json"])
    assert torch.allclose(parsed.get_parsed_content("preprocessing")(dict(item))["image"], turned, atol=1e-5)


def test_the_moved_mirror_keeps_its_vessels_enhancement(asymmetric):
    """The mirror moved half a voxel along every axis and back: with MirrorAlignd's cubic B-spline a vessel keeps most
    of its enhancement; trilinear resampling averages it with the tissue around it (what the clot readings lost)."""
    box, _ = asymmetric
    shape = box.shape[1:]
    everywhere = torch.nonzero(torch.ones(shape, dtype=torch.bool)).float()
    there, centre = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5, 0.5]), torch.zeros(3)
    _, mirror, soft, arterial = enhancement_maps(box[None].float(), WINDOWS, 0.95, 0.999)
    vessel = (mirror[0] > 0.6 * arterial[0]) & soft[0]
    kept = {}
    for order in (1, 3):
        moved = box.clone().float()
        for c in (2, 3):
            once = resample(box[c], everywhere, there, centre, order).view(shape)
            moved[c] = resample(once, everywhere, -there, centre, order).view(shape)
        back = enhancement_maps(moved[None], WINDOWS, 0.95, 0.999)[1][0]
        kept[order] = float((back[vessel] / mirror[0][vessel]).median())
        assert moved[2:].min() >= box[2:].min() and moved[2:].max() <= box[2:].max()  # no overshoot past the image
    assert kept[3] > 0.75 and kept[1] < 0.6, kept  # measured 0.83 and 0.50


def test_a_patient_without_a_side_is_refused_in_one_line(asymmetric):
    box, _ = asymmetric
    with pytest.raises(BundleInputError, match="patient p7: side 'None': the occluded side must be L or R"):
        MirrorAlignd("image", WINDOWS)({"image": box, "patient_id": "p7"})
