"""Explanations: saliency lands in the planted lesion's territory (and follows it to the other side), files in the
input grid, slice importance from the volume head."""

from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from scripts.data.anatomy import DEFAULT_ATLAS_DIR, TERRITORIES, grid_maps
from scripts.inference.explain import explain_item, territory_mass
from scripts.networks import MNTDL
from tests.conftest import NO_MODELS, ROOT


class BrightSpotDetector(torch.nn.Module):
    """A fixed network whose logit grows with window-saturating tissue inside the brain: an honest stand-in for a
    trained lesion detector whose decisive region is known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        core = x[:, :1, 6:-6, 6:-6, 2:-2]  # leave the skull ring at the border of the field of view out
        return (torch.relu(core - 0.8).flatten(1).sum(dim=1, keepdim=True) - 1.0) * 0.5


def _preprocessing(spatial, slices=25):
    os.chdir(ROOT)
    parser = ConfigParser()
    parser.read_config([os.path.join("configs", "inference.json")])
    parser["ckpt_dir"] = NO_MODELS
    parser["image_keys"], parser["in_channels"] = ["ncct"], 1
    parser["spatial_size"], parser["num_slices"] = spatial, slices
    return parser.get_parsed_content("preprocessing")


@pytest.fixture(scope="module")
def lesion_cases(demo_cohort, tmp_path_factory):
    """The first demo patient's NCCT with a hyperdense (90 HU) lesion planted in the left or right MCA territory."""
    base = tmp_path_factory.mktemp("lesion")
    row = next(iter(csv.DictReader(open(demo_cohort))))
    img = nib.load(os.path.join(os.path.dirname(demo_cohort), row["ncct"]))
    data = np.asarray(img.dataobj).astype(np.int16)
    brain, territories = grid_maps(data.shape, img.affine.astype(np.float64).tobytes(), DEFAULT_ATLAS_DIR)
    paths = {}
    for side in ("L", "R"):
        region = (territories == TERRITORIES[f"MCA_{side}"]) & brain
        centre = np.argwhere(region).mean(axis=0).round().astype(int)
        lesion = np.zeros(data.shape, bool)
        lesion[tuple(slice(c - 2, c + 3) for c in centre)] = True
        planted = np.where(lesion & region, 90, data).astype(np.int16)
        paths[side] = str(base / f"lesion_{side}.nii.gz")
        nib.save(nib.Nifti1Image(planted, img.affine), paths[side])
    return paths


@pytest.mark.parametrize("side", ["L", "R"])
def test_saliency_mass_follows_the_planted_lesion(lesion_cases, side, tmp_path):
    preprocessing = _preprocessing([32, 32])
    item = {"patient_id": f"p{side}", "ncct": lesion_cases[side]}
    out = explain_item([BrightSpotDetector], preprocessing, item, str(tmp_path), "cpu", mask_size=(6, 6, 5))
    shares = out["territory_saliency_share"]
    other = "R" if side == "L" else "L"
    assert shares[f"MCA_{side}"] > 2 * shares[f"MCA_{other}"], shares
    saved = nib.load(str(tmp_path / f"p{side}_saliency.nii.gz"))
    source = nib.load(lesion_cases[side])
    assert saved.shape == source.shape and np.allclose(saved.affine, source.affine, atol=1e-4)  # the input grid
    assert territory_mass(np.asarray(saved.dataobj), saved.affine) == pytest.approx(shares)
    written = json.load(open(tmp_path / f"p{side}_explanation.json"))
    assert written["territory_saliency_share"] == pytest.approx(shares)
    assert (tmp_path / f"p{side}_saliency.png").stat().st_size > 1000


def test_slice_importance_comes_from_the_volume_head(lesion_cases, tmp_path):
    torch.manual_seed(0)
    network = MNTDL(in_channels=1, num_slices=10, widths=(4, 8, 8, 16), num_heads=2, dropout=0.0)
    out = explain_item(
        [lambda: network],
        _preprocessing([24, 24], 10),
        {"patient_id": "p", "ncct": lesion_cases["L"]},
        str(tmp_path),
        "cpu",
        mask_size=(8, 8, 5),
    )
    weights = np.asarray(out["slice_importance"])
    assert weights.shape == (10,) and weights.min() >= 0 and weights.sum() == pytest.approx(1, abs=1e-4)
    assert (tmp_path / "p_slices.png").is_file() and "clinical_attributions" not in out


def test_clinical_attributions_measure_each_variable_against_missing():
    """A network that reads only age: age gets the whole attribution (value vs the training mean), sex none."""
    from scripts.inference.explain import clinical_attributions
    from scripts.networks.tabular import TabularEncoder

    class AgeOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tabular = TabularEncoder({"age": "numeric", "sex": ["M", "F"]}).fit(np.array([[60.0, 0], [80, 1]]))

        def forward(self, x, clinical):
            return self.tabular(clinical)[:, :1]  # the standardised age

    out = clinical_attributions(AgeOnly(), torch.zeros(1, 1, 4, 4, 2), torch.tensor([[90.0, 1.0]]), ["age", "sex"])
    assert out["age"] == pytest.approx(float(torch.sigmoid(torch.tensor(2.0)) - 0.5)) and out["sex"] == 0
