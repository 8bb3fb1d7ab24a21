"""Preprocessing from the configs: CT windows per sequence, MR z-score per channel, slices last."""

from __future__ import annotations

import os

import numpy as np
import pytest
from monai.bundle import ConfigParser

from scripts import BundleInputError
from tests.conftest import NO_MODELS, ROOT


def _preprocess(overlays, item):
    os.chdir(ROOT)
    parser = ConfigParser()
    parser.read_config([os.path.join("configs", f) for f in ["inference.json", *overlays]])
    parser["spatial_size"], parser["ckpt_dir"] = [32, 32], NO_MODELS
    return parser.get_parsed_content("preprocessing")(item)


def test_ct_channels_are_windowed_separately(demo_images):
    out = _preprocess([], {k: demo_images[k] for k in ("ncct", "cta")})
    image = out["image"]
    assert tuple(image.shape) == (2, 32, 32, 25)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    # skull (>= 1000 HU) saturates both windows; brain (~30 HU) sits inside the NCCT window only
    ncct, cta = image[0].numpy(), image[1].numpy()
    assert ncct.max() > 0.95 and 0.2 < np.median(ncct[ncct > 0.05]) < 0.8
    # enhanced parenchyma (~60 HU) sits low in the 0..400 HU CTA window, vessels (350 HU) high, skull saturates it
    brain = (ncct > 0.2) & (ncct < 0.8)
    assert 0.08 < np.median(cta[brain]) < 0.25 and cta.max() > 0.95


def test_mr_overlay_z_scores_each_channel(demo_images):
    out = _preprocess(["mri.json"], {k: demo_images[k] for k in ("adc", "b1000", "flair")})
    image = out["image"].numpy()
    assert image.shape == (3, 32, 32, 25)
    for channel in image:
        inside = channel[np.abs(channel) > 1e-6]
        assert abs(inside.mean()) < 0.35 and 0.3 < inside.std() < 1.5  # raw scales differ by 10x


@pytest.mark.parametrize("name", ["J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm"])
def test_real_head_ct_dicom_loads_in_hounsfield_units(name, tmp_path):
    """Real head-CT slices shipped with pydicom (JPEG 2000) decode to HU through the bundle's DICOM reader (ITK); a
    folder holding one such slice is refused by the bundle's LoadImaged with one line (one image is not a volume)."""
    import shutil

    from monai.transforms import LoadImage
    from pydicom.data import get_testdata_file

    from scripts.data.dicom_study import dicom_reader

    shutil.copy(get_testdata_file(name), tmp_path / name)
    hu = np.asarray(LoadImage(reader=dicom_reader(), image_only=True)(str(tmp_path)))
    assert hu.shape[:2] == (512, 512)
    inside = hu[hu > -1500]  # outside the reconstruction circle is padding
    assert np.mean(np.abs(inside + 1000) < 100) > 0.2  # air around the head
    assert np.mean((inside > 0) & (inside < 80)) > 0.05  # brain and soft tissue
    assert np.mean(inside > 300) > 0.01  # skull
    os.chdir(ROOT)
    parser = ConfigParser()
    parser.read_config("configs/inference.json")
    parser["image_keys"] = ["ncct"]
    load = parser.get_parsed_content("load_transforms#1")  # #0 drops the sequences the model does not use
    with pytest.raises(BundleInputError, match=r"NCCT series #\d+ .* is a single image, not a volume"):
        load({"ncct": str(tmp_path)})
