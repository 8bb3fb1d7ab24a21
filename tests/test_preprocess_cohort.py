"""Cohort preprocessing through ``monai.bundle run preprocess`` on native-space demo scans (random head pose, thick
slices, CTA on its own grid, headrest): parallel cases, a DICOM series case, a failing case that does not stop the
others, the QC table, the rewritten cohort, reruns that keep finished cases; and accuracy against the known pose."""

from __future__ import annotations

import csv
import json
import os
import subprocess

import ants
import nibabel as nib
import numpy as np
import pytest

from scripts.data.anatomy import ATLAS_AFFINE
from scripts.data.cohort import read_cohort
from scripts.demo.generator import generate
from tests.conftest import ROOT
from tests.dicom_series import write_ct_series
from tests.helpers import BUNDLE


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """(native cohort CSV, the same patients rendered directly in MNI space)."""
    base = tmp_path_factory.mktemp("native")
    raw = generate(str(base / "raw"), patients=20, seed=5, modalities="ct", spacing=4.0, native=True, world="uniform")
    mni = generate(str(base / "mni"), patients=20, seed=5, modalities="ct", spacing=4.0, world="uniform")
    return raw, mni


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_raw_scans_look_like_a_scanner_wrote_them(native):
    raw, mni = native
    row, flat = _rows(raw)[0], _rows(mni)[0]
    ncct, cta = (nib.load(os.path.join(os.path.dirname(raw), row[k])) for k in ("ncct", "cta"))
    assert ncct.header.get_zooms()[2] == 5.0 and not np.allclose(ncct.affine, cta.affine)
    rotation = ncct.affine[:3, :3] / np.linalg.norm(ncct.affine[:3, :3], axis=0)
    assert np.allclose(rotation, np.eye(3)), "scanner grids are axial; the head is rotated inside them"
    data = np.asarray(ncct.dataobj)
    assert ((data == 150).sum() > 100) and not np.array_equal(
        ncct.shape, nib.load(os.path.join(os.path.dirname(mni), flat["ncct"])).shape
    )
    truth = json.load(open(os.path.join(os.path.dirname(raw), "manifest.json")))["truth"][row["patient_id"]]
    pose = np.array(truth["mni_to_scanner"]["ncct"])
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-5) and not np.allclose(pose, np.eye(4))


def test_cohort_run_with_dicom_case_and_a_failing_case(native, tmp_path):
    raw, _ = native
    base = os.path.dirname(raw)
    rows = _rows(raw)[:7]
    # patient 2: NCCT as a DICOM series folder; patients 3-6 fail: an MR image where the NCCT should be, an empty
    # series folder, a 2-D image, NaNs
    rows[2]["ncct"] = write_ct_series(os.path.join(base, rows[2]["ncct"]), str(tmp_path / "dicom" / "ncct"))
    mr = nib.Nifti1Image(np.random.default_rng(0).uniform(0, 500, (40, 40, 30)).astype(np.float32), np.eye(4))
    nib.save(mr, str(tmp_path / "mr.nii.gz"))
    os.makedirs(tmp_path / "empty_series")
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 1), np.int16), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    nan = np.asarray(nib.load(os.path.join(base, rows[6]["ncct"])).dataobj, dtype=np.float32)
    nan[10, 10, 10] = np.nan
    nib.save(nib.Nifti1Image(nan, nib.load(os.path.join(base, rows[6]["ncct"])).affine), str(tmp_path / "nan.nii.gz"))
    broken = ["mr.nii.gz", "empty_series", "flat.nii.gz", "nan.nii.gz"]
    for row, name in zip(rows[3:], broken):
        row["ncct"] = str(tmp_path / name)
    for row in rows[:2]:
        row["ncct"], row["cta"] = os.path.join(base, row["ncct"]), os.path.join(base, row["cta"])
    for row in rows[2:]:
        row["cta"] = ""
    cohort = str(tmp_path / "cohort.csv")
    with open(cohort, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    out = str(tmp_path / "pre")
    cmd = _preprocess_cmd(cohort, out, "--workers", "2", "--vessels", "true", spacing=3)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    bad = rows[3]["patient_id"]
    assert f"{bad}: {tmp_path / 'mr.nii.gz'}: NCCT does not look like CT" in result.stderr + result.stdout
    qc = {r["patient_id"]: r for r in _rows(os.path.join(out, "qc_ct.csv"))}
    assert [qc[r["patient_id"]]["status"] for r in rows] == ["ok"] * 3 + ["failed"] * 4
    causes = [
        "NCCT does not look like CT",
        "empty_series: NCCT empty folder (expected a DICOM series)",
        "NCCT has 64 x 64 x 1 voxels: too small",
        "NCCT holds NaN",
    ]
    for row, cause in zip(rows[3:], causes):
        assert cause in qc[row["patient_id"]]["error"] and not os.path.exists(os.path.join(out, row["patient_id"]))
        assert len(qc[row["patient_id"]]["error"].splitlines()) == 1
    assert all(float(qc[r["patient_id"]]["dice_template_brain"]) > 0.85 for r in rows[:3])
    # the rewritten cohort: failed case left out, images in the MNI grid, still a valid cohort table
    rewritten = read_cohort(os.path.join(out, "cohort.csv"))
    assert [r["patient_id"] for r in rewritten] == [r["patient_id"] for r in rows[:3]]
    for r in rewritten:
        img = nib.load(r["ncct"])
        assert img.shape == (61, 73, 61) and np.allclose(img.affine[:3, 3], ATLAS_AFFINE[:3, 3])
    assert "cta" not in rewritten[2] and os.path.isfile(rewritten[0]["cta"])
    assert os.path.isfile(rewritten[0]["vessels"]) and "vessels" not in rewritten[2]  # vessel map only with a CTA
    # a rerun keeps finished cases (idempotent) and tries the failed one again
    stamp = os.path.getmtime(os.path.join(out, rows[0]["patient_id"], "ct", "qc.json"))
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert (
        again.returncode == 0 and os.path.getmtime(os.path.join(out, rows[0]["patient_id"], "ct", "qc.json")) == stamp
    )


def _cohort_of(native, n: int, path) -> str:
    raw, _ = native
    rows = _rows(raw)[:n]
    base = os.path.dirname(raw)
    for row in rows:
        row["ncct"], row["cta"] = os.path.join(base, row["ncct"]), os.path.join(base, row["cta"])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _preprocess_cmd(cohort: str, out: str, *extra: str, spacing: int = 4) -> list:
    paths = ["--cohort", cohort, "--output_dir", out, "--spacing", str(spacing)]
    return [*BUNDLE, "preprocess", "--config_file", "configs/preprocess.json", *paths, *extra]


def test_local_cluster_gives_the_serial_outputs(native, tmp_path):
    """The same three cases on a Dask LocalCluster (2 workers) and one after another in this process: the same QC
    and the same MNI images."""
    cohort = _cohort_of(native, 3, tmp_path / "cohort.csv")
    outs = {}
    for how, extra in (("cluster", ["--workers", "2"]), ("serial", ["--scheduler", "serial"])):
        outs[how] = str(tmp_path / how)
        result = subprocess.run(_preprocess_cmd(cohort, outs[how], *extra), cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
    assert "preprocessing: 100%" in result.stderr and "| 3/3 [" in result.stderr  # the progress bar
    qc = {how: {r["patient_id"]: r for r in _rows(os.path.join(out, "qc_ct.csv"))} for how, out in outs.items()}
    assert qc["cluster"].keys() == qc["serial"].keys() and len(qc["serial"]) == 3
    for pid, row in qc["serial"].items():
        for key in ("brain_volume_ml", "dice_template_brain", "similarity_mi"):
            assert float(qc["cluster"][pid][key]) == pytest.approx(float(row[key]), rel=0.01, abs=0.002), key
        a, b = (np.asarray(nib.load(os.path.join(o, pid, "ct", "cta.nii.gz")).dataobj) for o in outs.values())
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
    rewritten = {how: [r["patient_id"] for r in _rows(os.path.join(out, "cohort.csv"))] for how, out in outs.items()}
    assert rewritten["cluster"] == rewritten["serial"]


def test_an_interrupted_cluster_run_resumes_with_the_rest(native, tmp_path):
    """Ctrl-C after two of five cases: no Dask worker outlives the run, and the rerun keeps the finished cases
    (not recomputed) and preprocesses only the others."""
    import signal
    import time

    cohort = _cohort_of(native, 5, tmp_path / "cohort.csv")
    out = str(tmp_path / "pre")
    cmd = _preprocess_cmd(cohort, out, "--workers", "1")
    # Ctrl-C as in a terminal: a shell starts background jobs with SIGINT ignored and children inherit that, so a
    # suite run with `&` or nohup let the run finish all cases (measured: all five, then ten, done)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    pids = [r["patient_id"] for r in _rows(cohort)]

    def finished():
        return [p for p in pids if os.path.isfile(os.path.join(out, p, "ct", "qc.json"))]

    deadline = time.time() + 300
    while len(finished()) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)

    def group_alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    deadline = time.time() + 20
    while group_alive() and time.time() < deadline:  # the workers are stopped with the cluster (a few seconds)
        time.sleep(0.5)
    assert not group_alive(), "a Dask worker outlived the cancelled run"
    kept = finished()
    assert 2 <= len(kept) < 5 and not os.path.exists(os.path.join(out, "qc_ct.csv"))
    stamps = {p: os.path.getmtime(os.path.join(out, p, "ct", "qc.json")) for p in kept}
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(kept)} of 5 cases already preprocessed (kept)" in again.stdout + again.stderr
    assert f"| {5 - len(kept)}/{5 - len(kept)} [" in again.stderr  # the progress bar counts only the rest
    assert {p: os.path.getmtime(os.path.join(out, p, "ct", "qc.json")) for p in kept} == stamps
    assert [r["status"] for r in _rows(os.path.join(out, "qc_ct.csv"))] == ["ok"] * 5


def test_native_scan_recovers_the_known_pose(native, tmp_path):
    """Preprocessing the moved, re-sliced scan finds the MNI mapping found on the same patient rendered in MNI space,
    composed with the true pose: mean error over brain points within one demo voxel (4 mm)."""
    from scripts.preprocess.ct import preprocess_ct

    raw, mni = native
    row, flat = _rows(raw)[0], _rows(mni)[0]
    out_raw, out_mni = str(tmp_path / "raw"), str(tmp_path / "mni")
    qc = preprocess_ct(os.path.join(os.path.dirname(raw), row["ncct"]), out_raw, spacing=3.0)
    preprocess_ct(os.path.join(os.path.dirname(mni), flat["ncct"]), out_mni, spacing=3.0)
    output = np.asarray(nib.load(os.path.join(out_raw, "ncct.nii.gz")).dataobj)
    mask = nib.load(os.path.join(out_raw, "brain_mask.nii.gz"))
    assert (output[np.asarray(mask.dataobj) == 0] == -1024).all() and qc["flags"] == []  # headrest and skull gone
    idx = np.argwhere(np.asarray(mask.dataobj) > 0)[::20]
    points = (mask.affine @ np.c_[idx, np.ones(len(idx))].T)[:3].T
    lps = np.array([-1.0, -1.0, 1.0])

    def mapped(folder):  # ANTs maps fixed (MNI) points to moving (scanner) points, in LPS
        transform = ants.read_transform(os.path.join(folder, "ncct_to_mni_0.mat"))
        return np.array([np.array(transform.apply_to_point(tuple(p * lps))) * lps for p in points])

    pose = np.array(
        json.load(open(os.path.join(os.path.dirname(raw), "manifest.json")))["truth"][row["patient_id"]][
            "mni_to_scanner"
        ]["ncct"]
    )
    expected = (pose @ np.c_[mapped(out_mni), np.ones(len(points))].T)[:3].T
    error = np.linalg.norm(mapped(out_raw) - expected, axis=1)
    assert error.mean() < 4.0, error.mean()


def test_mask_steps_match_ants():
    """fill_holes (scipy) fills what ANTs' FillHoles fills: an enclosed cavity, not a channel open to the outside;
    masked puts the background outside the mask."""
    from scripts.preprocess.volumes import fill_holes, masked

    grid = np.indices((40, 40, 40)).astype(np.float32)
    radius = np.sqrt(((grid - 19.5) ** 2).sum(axis=0))
    shell = (radius < 15) & (radius > 6)  # a ball with an enclosed cavity
    cup = shell & ~((grid[0] > 19) & (np.abs(grid[1] - 19.5) < 2) & (np.abs(grid[2] - 19.5) < 2))  # channel out
    for solid, filled in ((shell, True), (cup, False)):
        image = ants.from_numpy(solid.astype(np.float32))
        ours = fill_holes(image).numpy()
        assert (ours == ants.iMath(image, "FillHoles").numpy()).all()
        assert bool(ours[20, 20, 20]) is filled and ours.sum() >= solid.sum()
    values = ants.from_numpy(grid[0])
    inside = masked(values, ants.from_numpy(shell.astype(np.float32)), -1024).numpy()
    assert (inside[shell] == grid[0][shell]).all() and (inside[~shell] == -1024).all()
