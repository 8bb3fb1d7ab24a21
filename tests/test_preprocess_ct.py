"""CT preprocessing on a real head CT (skull, face, headrest): registration accuracy against the template, robustness
to head position, CTA -> NCCT rigid recovery of a known offset, outputs and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from scripts import BundleInputError
from scripts.data.anatomy import ATLAS_AFFINE
from scripts.preprocess.ct import preprocess_ct
from tests.conftest import ROOT, SHARED
from tests.real_ct import cranium_nifti, cta_standin

pytestmark = pytest.mark.skipif(
    not os.path.isfile("/usr/share/doc/invesalius-examples/examples/Cranium.inv3"),
    reason="real head CT absent: apt-get install -y invesalius-examples (done by .ci/run)",
)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    base = tmp_path_factory.mktemp("ct")
    ncct = cranium_nifti(str(base / "ncct.nii.gz"))
    # a CTA stand-in: the same head moved by a known offset, with other contrast, noise and contrast-filled vessels
    cta = cta_standin(ncct, str(base / "cta.nii.gz"))
    out = str(base / "out")
    return ncct, cta, out, preprocess_ct(ncct, out, cta=cta)


def test_registration_outputs_and_qc(case):
    ncct, cta, out, qc = case
    assert qc["dice_template_brain"] >= 0.90, qc
    assert 1000 <= qc["brain_volume_ml"] <= 1700 and qc["flags"] == []
    for name in ("ncct", "cta", "brain_mask", "territories"):
        img = nib.load(os.path.join(out, f"{name}.nii.gz"))
        assert img.shape == (181, 217, 181) and np.allclose(img.affine, ATLAS_AFFINE, atol=1e-3), name
    mask = np.asarray(nib.load(os.path.join(out, "brain_mask.nii.gz")).dataobj)
    territories = np.asarray(nib.load(os.path.join(out, "territories.nii.gz")).dataobj)
    ncct_mni = np.asarray(nib.load(os.path.join(out, "ncct.nii.gz")).dataobj)
    assert set(np.unique(mask)) == {0, 1} and set(np.unique(territories)) <= set(range(9))
    assert (territories[mask == 0] == 0).all() and 20 < np.median(ncct_mni[mask == 1]) < 45  # brain in HU
    assert json.load(open(os.path.join(out, "qc.json"))) == qc and os.path.isfile(os.path.join(out, "qc.png"))
    stamp = os.path.getmtime(os.path.join(out, "qc.json"))
    assert preprocess_ct(ncct, out, cta=cta) == qc and os.path.getmtime(os.path.join(out, "qc.json")) == stamp


def test_cta_rigid_recovers_the_offset(case):
    import ants

    _, _, out, _ = case
    rigid = ants.read_transform(os.path.join(out, "cta_to_ncct_rigid_0.mat"))
    # ANTs maps fixed (NCCT) points to moving (CTA) points in LPS; the CTA was moved by (6, -4, 3) mm in RAS
    point = np.array([10.0, 20.0, 30.0])
    mapped = np.array(rigid.apply_to_point(tuple(point)))
    assert np.allclose(mapped - point, [-6.0, 4.0, 3.0], atol=1.0), mapped - point  # within one voxel
    ncct_mni = np.asarray(nib.load(os.path.join(out, "ncct.nii.gz")).dataobj, dtype=float)
    cta_mni = np.asarray(nib.load(os.path.join(out, "cta.nii.gz")).dataobj, dtype=float)
    brain = np.asarray(nib.load(os.path.join(out, "brain_mask.nii.gz")).dataobj) > 0
    assert np.corrcoef(ncct_mni[brain], cta_mni[brain])[0, 1] > 0.8


def test_a_case_folder_is_kept_only_for_the_same_scans(case, tmp_path):
    """A rerun keeps a finished case folder made from the same files and redoes one made from other scans (the same
    patient_id and output folder, a corrected cohort row): never the old case's images for a new scan."""
    import shutil

    from scripts.preprocess.case_folder import case_settings, read_qc
    from scripts.preprocess.cohort import run_cases

    ncct, cta, out, qc = case
    kept = str(tmp_path / "p1" / "ct")
    shutil.copytree(out, kept)
    settings = {"spacing": 1.0, "transform": "Affine", "histogram_reference": None, "vessels": False}
    stamp = os.path.getmtime(os.path.join(kept, "qc.json"))
    same = run_cases([{"patient_id": "p1", "ncct": ncct, "cta": cta}], "ct", {"p1": kept}, settings, scheduler="serial")
    assert same["p1"]["scans_sha256"] == qc["scans_sha256"] and os.path.getmtime(kept + "/qc.json") == stamp
    other = str(tmp_path / "other_cta.nii.gz")
    img = nib.load(cta)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) + np.int16(5), img.affine, img.header), other)
    redone = run_cases([{"patient_id": "p1", "ncct": ncct, "cta": other}], "ct", {"p1": kept}, settings, "serial")
    assert redone["p1"]["status"] == "ok" and redone["p1"]["scans_sha256"] != qc["scans_sha256"]
    moved = np.asarray(nib.load(os.path.join(kept, "cta.nii.gz")).dataobj, dtype=float)
    before = np.asarray(nib.load(os.path.join(out, "cta.nii.gz")).dataobj, dtype=float)
    assert not np.array_equal(moved, before)  # the folder now holds the other CTA's images
    os.utime(other, ns=(0, 0))  # the same path rewritten later: another scan as far as the folder knows
    assert read_qc(kept, {"ncct": ncct, "cta": other}) is None and read_qc(kept) is not None
    scans, made = {"ncct": ncct, "cta": cta}, case_settings("ct", settings)
    assert read_qc(out, scans, made) == qc  # the fixture's folder: these scans, these settings
    for changed in ({"spacing": 2.0}, {"vessels": True}, {"transform": "SyN"}):  # another grid or other images
        assert read_qc(out, scans, case_settings("ct", {**settings, **changed})) is None, changed
    with pytest.raises(BundleInputError, match="absent.nii.gz: CTA not found"):  # not a stat() traceback
        preprocess_ct(ncct, kept, cta=str(tmp_path / "absent.nii.gz"))


def test_a_second_process_waits_for_the_case_and_keeps_it(case, tmp_path):
    """Two processes on one case folder (``python -m scripts.inference.quick`` preprocesses early in a child while
    the workflow reaches the same case): the second waits on the case lock, then keeps the folder the first wrote
    from the same scans and settings instead of preprocessing again."""
    import shutil
    import time

    from scripts.preprocess.case_folder import case_lock
    from scripts.preprocess.cohort import raw_settings

    ncct, cta, out, qc = case
    target = str(tmp_path / "p1" / "ct")
    job = json.dumps([{"patient_id": "p1", "ncct": ncct, "cta": cta}, "ct", target, raw_settings(["ncct", "cta"])])
    code = (
        "import json, sys; from scripts.preprocess.cohort import preprocess_case; "
        "print(json.dumps(preprocess_case(*json.loads(sys.argv[1]))))"
    )
    with case_lock(target):
        second = subprocess.Popen([sys.executable, "-c", code, job], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        time.sleep(8.0)  # its imports take a few seconds; then it blocks on the lock
        assert second.poll() is None and not os.path.exists(target)
        shutil.copytree(out, target)  # what the first process writes while it holds the lock
    stamp = os.path.getmtime(os.path.join(target, "qc.json"))
    stdout, _ = second.communicate(timeout=60)
    assert second.returncode == 0 and json.loads(stdout) == {**qc, "status": "ok", "error": ""}
    assert os.path.getmtime(os.path.join(target, "qc.json")) == stamp  # kept, not written again


def test_rotated_and_shifted_head_still_registers(tmp_path, monkeypatch):
    import tempfile

    moved = cranium_nifti(str(tmp_path / "moved.nii.gz"), rotate_deg=15.0, shift_mm=20.0)
    system_temp = tmp_path / "system_temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))  # where ANTsPy would leave its transform files
    qc = preprocess_ct(moved, str(tmp_path / "out"), spacing=2.0, transform="SyN")
    assert not list(system_temp.iterdir())  # the affine and the SyN warp fields went with the call
    assert qc["dice_template_brain"] >= 0.90, qc
    assert nib.load(str(tmp_path / "out" / "ncct.nii.gz")).shape == (91, 109, 91)


def test_bad_input(tmp_path):
    with pytest.raises(BundleInputError, match="does not look like CT"):
        preprocess_ct(os.path.join(SHARED, "cases", "T2.nii"), str(tmp_path / "mr"))
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 1), np.int16), np.eye(4)), str(flat))
    with pytest.raises(BundleInputError, match="too small for a head scan"):
        preprocess_ct(str(flat), str(tmp_path / "flat"))
    assert not os.path.exists(tmp_path / "mr") and not os.path.exists(tmp_path / "flat")  # nothing half-written
    cli = [sys.executable, "-m", "scripts.preprocess", "ct", "--ncct", str(tmp_path / "none.nii.gz"), "--out", "x"]
    result = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().endswith("none.nii.gz: NCCT not found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_dicom_series_input(case, tmp_path):
    """The NCCT given as a DICOM series folder (ITK reader, HU via RescaleIntercept) preprocesses like the NIfTI."""
    from tests.dicom_series import write_ct_series

    ncct, _, _, qc = case
    series = write_ct_series(ncct, str(tmp_path / "ncct_dicom"))
    from_dicom = preprocess_ct(series, str(tmp_path / "out"), spacing=2.0)
    assert from_dicom["brain_volume_ml"] == pytest.approx(qc["brain_volume_ml"], rel=0.01)
    assert from_dicom["dice_template_brain"] >= 0.90


def test_cta_of_another_patient_is_refused(case, demo_cohort, tmp_path):
    """A CTA from another head (a generated demo patient) does not overlap the real NCCT after rigid registration."""
    import csv

    ncct = case[0]
    row = next(csv.DictReader(open(demo_cohort)))
    cta = os.path.join(os.path.dirname(demo_cohort), row["cta"])
    with pytest.raises(BundleInputError, match="CTA does not overlap the NCCT after rigid registration"):
        preprocess_ct(ncct, str(tmp_path / "out"), cta=cta, spacing=2.0)
    assert not os.path.exists(tmp_path / "out")
