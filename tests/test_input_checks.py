"""The shared input checks (scripts/data/checks.py) on real demo volumes and their broken variants."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from scripts import BundleInputError
from scripts.data.checks import (
    CONTRAST_SHARE,
    CheckScand,
    LoadScand,
    check_grid,
    check_volume,
    contrast_share,
    image_grid,
    unreadable,
    write_grid,
)


def _ras(path):
    img = nib.as_closest_canonical(nib.load(path))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def test_unreadable_names_the_cause(demo_images, tmp_path):
    assert unreadable(demo_images["ncct"]) is None
    data = open(demo_images["ncct"], "rb").read()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    (tmp_path / "text.nii.gz").write_bytes(gzip.compress(b"patient_id,fpe\n1,0\n"))
    assert "cannot be read as a NIfTI image" in unreadable(str(tmp_path / "cut.nii.gz"))
    assert unreadable(str(tmp_path / "empty.nii.gz")) == "empty file"
    assert "cannot be read as a NIfTI image" in unreadable(str(tmp_path / "text.nii.gz"))
    assert unreadable(str(tmp_path / "none.nii.gz")) == "file not found"


def test_volume_checks(demo_images):
    ncct, _ = _ras(demo_images["ncct"])
    assert check_volume(ncct[None], "x", "ncct", channel_first=True).shape == ncct.shape
    cases = {
        "is 2-D": ncct[:, :, 0],
        "is 4-D with 3 volumes": np.stack([ncct] * 3, axis=-1),
        "too small": ncct[:4, :4, :4],
        "NaN or infinite": np.where(ncct > 50, np.nan, ncct),
        "is constant": np.zeros_like(ncct),
    }
    for words, volume in cases.items():
        with pytest.raises(BundleInputError, match=words):
            check_volume(volume, "scan.nii.gz", "ncct")
    b1000, _ = _ras(demo_images["b1000"])
    with pytest.raises(BundleInputError, match="does not look like CT in Hounsfield units"):
        check_volume(b1000, "dwi.nii.gz", "ncct")  # an MR image given as the NCCT
    with pytest.raises(BundleInputError, match="looks like CT in Hounsfield units"):
        check_volume(ncct, "ct.nii.gz", "b1000")  # a CT given as an MR sequence
    check_volume(b1000, "dwi.nii.gz", "b1000")


def test_contrast_separates_ncct_and_cta(demo_images):
    ncct, affine = _ras(demo_images["ncct"])
    cta, _ = _ras(demo_images["cta"])
    assert contrast_share(ncct, affine) < CONTRAST_SHARE / 3 and contrast_share(cta, affine) > 3 * CONTRAST_SHARE
    loader = LoadScand(keys=["ncct", "cta"], ensure_channel_first=True, image_only=True)
    good = CheckScand(keys=["ncct", "cta"])(loader({"ncct": demo_images["ncct"], "cta": demo_images["cta"]}))
    assert set(good) == {"ncct", "cta"}
    with pytest.raises(BundleInputError, match=r"NCCT shows vessel contrast.*is it a CTA\?"):
        CheckScand(keys=["ncct", "cta"])(loader({"ncct": demo_images["cta"], "cta": demo_images["cta"]}))
    with pytest.raises(BundleInputError, match=r"CTA shows no vessel contrast.*non-contrast CT\?"):
        CheckScand(keys=["ncct", "cta"])(loader({"ncct": demo_images["ncct"], "cta": demo_images["ncct"]}))


def test_grid_recorded_with_the_models_and_checked(demo_images, tmp_path):
    grid = write_grid(str(tmp_path), [{"patient_id": "p", "ncct": demo_images["ncct"]}], ["ncct", "cta"])
    _, affine = _ras(demo_images["ncct"])
    assert grid == image_grid(nib.load(demo_images["ncct"]).shape, affine)
    assert write_grid(str(tmp_path), [{"ncct": "/elsewhere.nii.gz"}], ["ncct"]) == grid  # the first one is kept
    check_grid(grid["shape"], affine, grid, "same.nii.gz")
    shifted = affine.copy()
    shifted[:3, 3] += 400
    with pytest.raises(BundleInputError, match="not on the grid the models were trained on"):
        check_grid(grid["shape"], shifted, grid, "shifted.nii.gz")
    with pytest.raises(BundleInputError, match=r"configs/inference_raw\.json"):
        check_grid([s * 2 for s in grid["shape"]], affine, grid, "fine.nii.gz")


def test_loader_names_the_unreadable_file(demo_images, tmp_path):
    bad = tmp_path / "cut.nii.gz"
    data = open(demo_images["cta"], "rb").read()
    bad.write_bytes(data[: len(data) // 3])
    loader = LoadScand(keys=["ncct", "cta"], ensure_channel_first=True, image_only=True)
    with pytest.raises(BundleInputError, match=f"{bad}: CTA cannot be read as a NIfTI image"):
        loader({"ncct": demo_images["ncct"], "cta": str(bad)})
