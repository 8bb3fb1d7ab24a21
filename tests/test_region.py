"""Region input mode (configs/experiments/region.json): images masked to the dilated territories of the occlusion
site."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from monai.bundle import ConfigParser
from monai.transforms import LoadImaged, Orientationd

from scripts import BundleInputError
from scripts.data.anatomy import TERRITORIES, grid_maps
from scripts.data.territory_mask import TerritoryMaskd, territory_labels
from tests.conftest import NO_MODELS, ROOT


def test_site_to_territories():
    assert territory_labels("M1", "L") == [TERRITORIES["MCA_L"]]
    assert territory_labels("ica", "r") == [TERRITORIES["ACA_R"], TERRITORIES["MCA_R"]]
    assert territory_labels("M2", "L", both_sides=True) == [TERRITORIES["MCA_L"], TERRITORIES["MCA_R"]]
    assert territory_labels("BA", "L") == [5, 6, 7, 8]  # the basilar supplies both sides
    with pytest.raises(BundleInputError, match="occlusion site 'M9'"):
        territory_labels("M9", "L")


@pytest.fixture(scope="module")
def row(demo_cohort):
    row = next(iter(csv.DictReader(open(demo_cohort))))
    return {**row, "ncct": os.path.join(os.path.dirname(demo_cohort), row["ncct"])}


def test_mask_keeps_only_the_dilated_territory(row):
    item = Orientationd("ncct", "RAS")(LoadImaged("ncct", ensure_channel_first=True)({**row, "location": "M1"}))
    image = item["ncct"].numpy()[0]
    _, territories = grid_maps(
        image.shape, item["ncct"].affine.numpy().astype(np.float64).tobytes(), TerritoryMaskd("ncct").atlas_dir
    )
    mca = territories == TERRITORIES["MCA_R" if row["side"] == "R" else "MCA_L"]
    tight = TerritoryMaskd("ncct", dilation_voxels=0)(item)["ncct"].numpy()[0]
    wide = TerritoryMaskd("ncct", dilation_voxels=2)(item)["ncct"].numpy()[0]
    assert np.array_equal(tight[mca], image[mca]) and (tight[~mca] == 0).all()
    assert (wide != 0).sum() > (tight != 0).sum() and (wide[mca] == image[mca]).all()
    other_side = "L" if row["side"] == "R" else "R"
    flipped = TerritoryMaskd("ncct", dilation_voxels=0)({**item, "side": other_side})["ncct"].numpy()[0]
    assert (flipped[mca] == 0).all()
    with pytest.raises(BundleInputError, match="region mode needs the cohort column\\(s\\) location"):
        TerritoryMaskd("ncct")({**item, "location": ""})


def test_region_overlay_masks_the_network_input(row):
    """Train/inference preprocessing with configs/experiments/region.json: the window-scaled input is zero outside the
    region."""
    os.chdir(ROOT)
    parser = ConfigParser()
    parser.read_config([os.path.join("configs", f) for f in ("inference.json", "experiments/region.json")])
    parser["ckpt_dir"] = NO_MODELS
    parser["image_keys"], parser["in_channels"], parser["spatial_size"] = ["ncct"], 1, [32, 32]
    parser["shape_transforms"] = parser["shape_transforms"][:2]  # no resize: compare voxel by voxel
    plain = ConfigParser()
    plain.read_config([os.path.join("configs", "inference.json")])
    plain["ckpt_dir"] = NO_MODELS
    plain["image_keys"], plain["shape_transforms"] = ["ncct"], plain["shape_transforms"][:2]
    item = {"patient_id": row["patient_id"], "ncct": row["ncct"], "location": row["location"], "side": row["side"]}
    masked = parser.get_parsed_content("preprocessing")(dict(item))["image"].numpy()
    full = plain.get_parsed_content("preprocessing")(dict(item))["image"].numpy()
    assert masked.shape == full.shape and 0 < (masked != 0).sum() < 0.5 * (full != 0).sum()
    assert np.array_equal(masked[masked != 0], full[masked != 0])


def test_region_mode_without_the_site_is_a_clear_error(row):
    """Through the composed preprocessing (MONAI wraps transform errors): the cause is the one-line input error."""
    from scripts import find_input_error

    os.chdir(ROOT)
    parser = ConfigParser()
    parser.read_config([os.path.join("configs", f) for f in ("inference.json", "experiments/region.json")])
    parser["ckpt_dir"], parser["image_keys"] = NO_MODELS, ["ncct"]
    with pytest.raises(Exception) as raised:
        parser.get_parsed_content("preprocessing")({"patient_id": "p7", "ncct": row["ncct"]})
    found = find_input_error(raised.value)
    assert found is not None and str(found) == "patient p7: region mode needs the cohort column(s) location, side"
