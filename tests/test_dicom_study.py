"""A DICOM study as PACS sends it: series chosen by the rules, read through ITK (compressed too), bad studies refused
with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, generate_uid

from scripts import BundleInputError
from scripts.data import dicom_study
from tests.dicom_series import site_rules, write_study, write_volume_series

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _at_mm(path: str, mm: float, out: str) -> str:
    """The image with its voxels relabelled to ``mm`` spacing (a thin-slice scan for the default rules' limits)."""
    img = nib.as_closest_canonical(nib.load(path))
    affine = np.diag([mm, mm, mm, 1.0])
    affine[:3, 3] = img.affine[:3, 3]
    nib.save(nib.Nifti1Image(np.round(img.get_fdata()).astype(np.int16), affine), out)
    return out


@pytest.fixture(scope="module")
def study(demo_images, tmp_path_factory):
    """A shuffled 6-series study (scout, 5 mm and 1 mm NCCT, CTA, CTA MIP, dose report) of 1 mm demo images."""
    base = tmp_path_factory.mktemp("study")
    ncct, cta = (_at_mm(demo_images[k], 1.0, str(base / f"{k}.nii.gz")) for k in ("ncct", "cta"))
    truth = write_study(ncct, cta, str(base / "study"), seed=1)
    return {**truth, "dir": str(base / "study"), "ncct_nii": ncct, "cta_nii": cta}


def _preprocess(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.preprocess", *args], cwd=ROOT, capture_output=True, text=True)


def test_the_rules_pick_the_thin_ncct_and_the_cta(study):
    files = sorted(os.listdir(study["dir"]))
    assert len(files) > 60 and not any(f.endswith(".dcm") for f in files)  # router names, shuffled
    series = dicom_study.index_folder(study["dir"])
    assert [s.attrs["SeriesNumber"] for s in series] == [1, 2, 3, 4, 5, 6]
    chosen = dicom_study.select(series, ["ncct", "cta"], where=study["dir"])
    assert chosen["ncct"]["series"].attrs["SeriesNumber"] == study["ncct"] == 3
    assert chosen["cta"]["series"].attrs["SeriesNumber"] == study["cta"] == 4
    record = dicom_study.selection_record(chosen)
    assert "thinnest of 2" in record["ncct"]["reason"] and record["ncct"]["passed_over"][0].startswith("#2 ")
    assert record["cta"]["images"] == nib.load(study["cta_nii"]).shape[2]
    uids = {study["study"]} | {s.uid for s in series}
    assert not any(uid in json.dumps(record) for uid in uids)  # the QC record names series by number only
    # the chosen files in slice order: read through ITK they are the CTA volume in HU, on its grid
    from monai.transforms import LoadImage

    volume = LoadImage(reader=dicom_study.dicom_reader(), image_only=True)(
        dicom_study.series_folder(chosen["cta"]["series"], "cta")
    )
    original = nib.load(study["cta_nii"])
    np.testing.assert_array_equal(np.asarray(volume), original.get_fdata())
    np.testing.assert_allclose(np.asarray(volume.affine), original.affine, atol=1e-4)


def test_the_rules_file_is_in_monai_deploy_format(study):
    """The SDK's own DICOMSeriesSelectorOperator accepts configs/series_rules.json and its conditions admit the
    series the bundle chooses (the bundle's extensions then decide among the candidates)."""
    pytest.importorskip("monai.deploy.core", reason="pip install -r requirements-deploy.txt")
    from monai.deploy.core import Fragment
    from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator

    fragment = Fragment()
    studies = DICOMDataLoaderOperator(fragment, name="loader").load_data_to_studies(Path(study["dir"]))
    rules = json.load(open(dicom_study.RULES_FILE))
    sdk = DICOMSeriesSelectorOperator(fragment, rules=json.dumps(rules), all_matched=True, name="selector")
    picked = sdk.filter(rules, studies, all_matched=True)
    names = {}
    for selected in picked[0].selected_series:
        names.setdefault(selected.selection_name, set()).add(int(selected.series.SeriesNumber))
    assert study["ncct"] in names["ncct"] and study["cta"] in names["cta"]
    assert 5 not in names["cta"] and 1 not in names["ncct"]  # the MIP and the scout fail the SDK's conditions


def test_a_study_without_cta_and_a_mixed_folder_give_one_line(study, tmp_path):
    lonely = tmp_path / "no_cta"
    write_volume_series(
        np.asarray(nib.load(study["ncct_nii"]).dataobj),
        nib.load(study["ncct_nii"]).affine,
        str(lonely),
        description="Head 1.0",
    )
    result = _preprocess("ct", "--study", str(lonely), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert (
        result.stderr.strip()
        == f"error: {lonely}: no suitable CTA series (series found: #1 'Head 1.0' ("
        + str(nib.load(study["ncct_nii"]).shape[2])
        + " images, 1 mm))"
    )
    write_volume_series(
        np.asarray(nib.load(study["cta_nii"]).dataobj),
        nib.load(study["cta_nii"]).affine,
        str(lonely / "other"),
        contrast="Iohexol",
    )
    result = _preprocess("ct", "--study", str(lonely), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.strip() == f"error: {lonely}: holds 2 studies; give one study per folder"
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless], ids=["jpeg2000", "jpeg-ls"])
def test_a_compressed_series_reads_to_the_same_hounsfield_volume(study, syntax, tmp_path):
    pytest.importorskip(
        "openjpeg" if syntax == JPEG2000Lossless else "jpeg_ls", reason="pip install -r requirements-dev.txt"
    )
    from monai.transforms import LoadImage

    img = nib.load(study["cta_nii"])
    data = np.repeat(np.repeat(np.asarray(img.dataobj), 2, axis=0), 2, axis=1)  # OpenJPEG's 6 levels need >= 32 px
    affine = img.affine @ np.diag([0.5, 0.5, 1.0, 1.0])
    plain = write_volume_series(data, affine, str(tmp_path / "plain"))
    packed = write_volume_series(data, affine, str(tmp_path / "packed"), compress=syntax)
    assert dcmread(os.path.join(packed, "0000.dcm")).file_meta.TransferSyntaxUID == syntax
    assert sum(os.path.getsize(os.path.join(packed, f)) for f in os.listdir(packed)) < 0.8 * sum(
        os.path.getsize(os.path.join(plain, f)) for f in os.listdir(plain)
    )
    load = LoadImage(reader=dicom_study.dicom_reader(), image_only=True)
    a, b = load(plain), load(packed)
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    np.testing.assert_array_equal(np.asarray(a), data)
    np.testing.assert_allclose(np.asarray(b.affine), np.asarray(a.affine))


def test_itk_and_pydicom_readers_agree_on_an_oblique_series(demo_images, tmp_path):
    """The one default (ITK) against MONAI's PydicomReader on a series tilted in-plane and through-plane (a rotated
    head grid, not a gantry tilt): the same HU values on the same RAS grid."""
    from monai.transforms import LoadImage
    from scipy.spatial.transform import Rotation

    img = nib.as_closest_canonical(nib.load(demo_images["cta"]))
    affine = img.affine.copy()
    affine[:3, :3] = Rotation.from_euler("xyz", [8, -5, 12], degrees=True).as_matrix() @ affine[:3, :3]
    folder = write_volume_series(np.asarray(img.dataobj), affine, str(tmp_path / "oblique"))
    itk = LoadImage(reader=dicom_study.dicom_reader(), image_only=True)(folder)
    pyd = LoadImage(reader="PydicomReader", image_only=True)(folder)
    np.testing.assert_array_equal(np.asarray(itk), np.asarray(pyd))
    np.testing.assert_allclose(np.asarray(itk.affine), np.asarray(pyd.affine), atol=1e-3)
    np.testing.assert_allclose(np.asarray(itk.affine), affine, atol=1e-3)


def test_gantry_tilt_and_missing_slices_are_refused(study, tmp_path):
    img = nib.load(study["ncct_nii"])
    tilted = img.affine.copy()
    tilted[:3, 2] = [0.0, np.sin(np.radians(15)), np.cos(np.radians(15))]  # slices stacked along a tilted axis
    folder = write_volume_series(
        np.asarray(img.dataobj), tilted, str(tmp_path / "tilted"), number=7, description="Head tilted"
    )
    for ds_path in os.listdir(folder):  # the scanner's in-plane orientation stays axial: a gantry tilt
        ds = dcmread(os.path.join(folder, ds_path))
        ds.ImageOrientationPatient = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
        ds.save_as(os.path.join(folder, ds_path))
    result = _preprocess("ct", "--ncct", folder, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert result.stderr.strip().startswith(f"error: {folder}: NCCT series #7 'Head tilted'")
    assert "gantry-tilted (15.0 deg)" in result.stderr
    gap = write_volume_series(np.asarray(img.dataobj), img.affine, str(tmp_path / "gap"))
    os.remove(os.path.join(gap, "0010.dcm"))
    with pytest.raises(BundleInputError, match="unevenly spaced slices .*slices missing"):
        dicom_study.check_series_folder(gap, "NCCT")
    assert not os.path.exists(tmp_path / "out")


@pytest.fixture(scope="module")
def mr_study(tmp_path_factory):
    """A scanner-space demo MR session as one study: b0 and b1000 images in one DWI series (DiffusionBValue per
    image), ADC and FLAIR series, files under random names."""
    import csv

    from scripts.demo.generator import generate

    base = tmp_path_factory.mktemp("mr_study")
    cohort = generate(
        str(base / "raw"), patients=20, seed=5, modalities="mr", spacing=4.0, native=True, world="uniform"
    )
    row = next(csv.DictReader(open(cohort)))
    nifti = {k: os.path.join(os.path.dirname(cohort), row[k]) for k in ("b0", "b1000", "adc", "flair")}
    study, dwi, folder = generate_uid(), generate_uid(), str(base / "study")
    series = {
        "b0": (4, "ep2d_diff_tra", {"DiffusionBValue": 0, "SeriesInstanceUID": dwi}),
        "b1000": (4, "ep2d_diff_tra", {"DiffusionBValue": 1000, "SeriesInstanceUID": dwi}),
        "adc": (5, "ep2d_diff_tra_ADC", {"ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]}),
        "flair": (6, "t2_tirm_tra_dark-fluid FLAIR", {}),
    }
    for key, (number, description, extra) in series.items():
        img = nib.as_closest_canonical(nib.load(nifti[key]))
        scale = 1e6 if key == "adc" else 1.0  # ADC stored in um^2/s as integers
        write_volume_series(
            np.asarray(img.dataobj) * scale,
            img.affine,
            folder,
            study=study,
            number=number,
            description=description,
            names=[f"{key}_{k}" for k in range(img.shape[2])],
            extra={"Modality": "MR", **extra},
        )
    return {"dir": folder, "nifti": nifti}


def test_mr_study_split_by_b_value(mr_study, tmp_path):
    """Each MR sequence gets its own images (b0 and b1000 from one DWI series), and ``preprocess mr --study``
    preprocesses them like the NIfTI files."""
    series = dicom_study.index_folder(mr_study["dir"])
    assert len(series) == 3
    assert dicom_study.geometry_problem(series[0]) is not None  # both b-values together: repeated positions
    chosen = dicom_study.select(series, ["b0", "b1000", "adc", "flair"], where="study")
    depth = nib.load(mr_study["nifti"]["b0"]).shape[2]
    for key in ("b0", "b1000", "adc", "flair"):
        files = [os.path.basename(f) for f in chosen[key]["series"].files]
        assert len(files) == depth and all(f.startswith(f"{key}_") for f in files), key
    rules = site_rules(str(tmp_path / "rules.json"), 5.0)
    site = json.load(open(rules))  # this site's rules leave ADC out: both paths then read the same three sequences
    site["selections"] = [s for s in site["selections"] if s["name"] != "adc"]
    json.dump(site, open(rules, "w"))
    result = _preprocess(
        "mr", "--study", mr_study["dir"], "--out", str(tmp_path / "study"), "--spacing", "4", "--series_rules", rules
    )
    assert result.returncode == 0, result.stderr[-2000:]
    files = []
    for k in ("b0", "b1000", "flair"):  # the NIfTI path gets the integer values the DICOM files store
        img = nib.load(mr_study["nifti"][k])
        nib.save(
            nib.Nifti1Image(np.round(img.get_fdata()).astype(np.float32), img.affine), str(tmp_path / f"{k}.nii.gz")
        )
        files.append(f"--{k}={tmp_path / f'{k}.nii.gz'}")
    assert _preprocess("mr", *files, "--out", str(tmp_path / "nifti"), "--spacing", "4").returncode == 0
    qc = {k: json.load(open(tmp_path / k / "qc.json")) for k in ("study", "nifti")}
    assert qc["study"]["series"]["b0"]["series_number"] == qc["study"]["series"]["b1000"]["series_number"] == 4
    assert "adc" not in qc["study"]["series"]
    assert qc["study"]["coverage"] == pytest.approx(qc["nifti"]["coverage"], abs=0.01)
    a, b = (nib.load(str(tmp_path / k / "b1000.nii.gz")).get_fdata() for k in ("study", "nifti"))
    # MR registration at 4 mm is not run-to-run identical (the same NIfTI twice: b1000 correlation 0.98; study vs
    # NIfTI measured 0.84-0.88), so the images are held to the same brain, the QC above to 1%
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.75


def test_preprocessing_a_native_study_equals_the_nifti_files(tmp_path):
    """``preprocess ct --study``: a scanner-space demo study (5 mm NCCT, 1 mm CTA, default rules) preprocesses like
    the same scans given as NIfTI files, and the QC records the choice."""
    import csv

    from scripts.demo.generator import generate

    cohort = generate(
        str(tmp_path / "raw"), patients=20, seed=5, modalities="ct", spacing=4.0, native=True, world="uniform"
    )
    row = next(csv.DictReader(open(cohort)))
    ncct, cta = (os.path.join(os.path.dirname(cohort), row[k]) for k in ("ncct", "cta"))
    truth = write_study(ncct, cta, str(tmp_path / "study"), seed=3)
    common = ["--spacing", "4", "--series_rules", site_rules(str(tmp_path / "rules.json"), 5.0)]  # 4 mm demo CTA
    result = _preprocess("ct", "--study", str(tmp_path / "study"), "--out", str(tmp_path / "from_study"), *common)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        _preprocess(
            "ct", "--ncct", ncct, "--cta", cta, "--out", str(tmp_path / "from_nifti"), "--spacing", "4"
        ).returncode
        == 0
    )
    qc = {k: json.load(open(tmp_path / k / "qc.json")) for k in ("from_study", "from_nifti")}
    assert qc["from_study"]["series"]["ncct"]["series_number"] == truth["ncct"]
    assert qc["from_study"]["series"]["cta"]["series_number"] == truth["cta"]
    for key in ("brain_volume_ml", "dice_template_brain", "dice_cta_ncct_head"):
        assert qc["from_study"][key] == pytest.approx(qc["from_nifti"][key], rel=0.01), key
    a, b = (nib.load(str(tmp_path / k / "cta.nii.gz")).get_fdata() for k in ("from_study", "from_nifti"))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
