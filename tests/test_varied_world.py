"""The world varies: input checks that accept real-range scans and refuse wrong sequences, an out-of-distribution flag
that stays quiet on patients like the training cohort, and the main job on a cohort with only the required columns."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from scripts import BundleInputError
from scripts.data.anatomy import load_anatomy
from scripts.data.cohort import REQUIRED_COLUMNS
from scripts.data.profile import case_profile, ood_warning, profile_of
from scripts.data.volume_checks import INPUT_LIMITS, contrast_share, input_limits, judge_contrast
from scripts.demo.generator import draw_patient, draw_scan, render
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def extreme_scans():
    """One generated patient on the 2 mm grid in three acquisitions of the varied world's range: a weak late bolus
    through thin vessels (150 HU, calibre 0.75), a heavily calcified siphon, and the ordinary uniform scan."""
    anatomy = load_anatomy(2.0)
    patient = draw_patient(np.random.default_rng([4, 4]), 4, dt.date(2020, 1, 1), 10)
    uniform = draw_scan(np.random.default_rng(0), 80.0, "uniform")
    thin = {**uniform, "arterial_hu": 150.0, "calibre": 0.75, "noise": (6.0, 12.0), "thickness": (5.0, 2.0)}
    plaques = [(side, where, 1.8, 900.0) for side in ("L", "R") for where in (0.6, 0.75, 0.9)]
    calcified = {**uniform, "plaques": plaques}
    out = {}
    for name, scan in (("uniform", uniform), ("thin", thin), ("calcified", calcified)):
        images = render(anatomy, patient, np.random.default_rng(1), ["ct"], scan=scan)
        out[name] = {k: contrast_share(images[k], anatomy.affine) for k in ("ncct", "cta")}
    return out


def test_real_range_scans_pass_and_wrong_sequences_are_refused(extreme_scans):
    limits = input_limits()
    for name, shares in extreme_scans.items():
        judge_contrast({"ncct": (shares["ncct"], "ncct.nii.gz"), "cta": (shares["cta"], "cta.nii.gz")}, limits)
        judge_contrast({"ncct": (shares["ncct"], "ncct.nii.gz")}, limits)  # an NCCT alone, calcified or not
        judge_contrast({"cta": (shares["cta"], "cta.nii.gz")}, limits)  # a CTA alone, thin vessels or not
        # the NCCT given as the CTA, the CTA given as the NCCT, the two swapped
        wrong = {
            "ncct twice": {"ncct": (shares["ncct"], "a"), "cta": (shares["ncct"], "b")},
            "cta twice": {"ncct": (shares["cta"], "a"), "cta": (shares["cta"], "b")},
            "swapped": {"ncct": (shares["cta"], "a"), "cta": (shares["ncct"], "b")},
        }
        for case, pair in wrong.items():
            with pytest.raises(BundleInputError, match="vessel contrast"):
                judge_contrast(pair, limits)
    # the thin, weakly enhanced vessels sit below the 0.12 demo's fixed floor (0.3%) and above the physical one
    assert extreme_scans["thin"]["cta"] < 0.003 < extreme_scans["uniform"]["cta"]
    assert extreme_scans["calcified"]["ncct"] > extreme_scans["uniform"]["ncct"]


def test_input_limits_are_set_by_name_and_checked():
    assert input_limits({"cta_min_share": "0.0002"})["cta_min_share"] == 0.0002
    assert input_limits() == INPUT_LIMITS
    with pytest.raises(BundleInputError, match="unknown limit 'cta_share'"):
        input_limits({"cta_share": 0.1})
    with pytest.raises(BundleInputError, match="is not a number"):
        input_limits({"contrast_hu": "high"})


def _rows(demo_cohort):
    base = os.path.dirname(demo_cohort)
    rows = list(csv.DictReader(open(demo_cohort)))
    for row in rows:
        for key in ("ncct", "cta", "b0", "b1000", "adc", "flair"):
            row[key] = os.path.join(base, row[key]) if row.get(key) else ""
    return rows


def test_ood_flag_quiet_on_held_out_patients_and_raised_on_shifted_scans(demo_cohort, tmp_path):
    """Leave-one-out over the generated cohort: a patient of the training distribution is flagged at most 5% of the
    time; an NCCT 40 HU off and an MR image given as the NCCT are flagged."""
    rows = _rows(demo_cohort)
    cases = [case_profile(r, ["ncct", "cta"]) for r in rows]
    flagged = [bool(ood_warning(case, profile_of(cases[:i] + cases[i + 1 :]))) for i, case in enumerate(cases)]
    assert np.mean(flagged) <= 0.05, [r["patient_id"] for r, f in zip(rows, flagged) if f]
    profile = profile_of(cases)
    img = nib.load(rows[0]["ncct"])
    data = np.asarray(img.dataobj, dtype=np.int16)
    shifted = str(tmp_path / "offset.nii.gz")
    nib.save(nib.Nifti1Image(np.where(data > -200, data + 40, data).astype(np.int16), img.affine), shifted)
    for ncct in (shifted, rows[0]["b1000"]):
        assert "ncct_tissue_hu" in ood_warning(case_profile({**rows[0], "ncct": ncct}, ["ncct", "cta"]), profile)


def test_main_job_on_a_cohort_with_only_the_required_columns(demo_cohort, tmp_path):
    """A user's cohort with the required columns and the two CT images only (no comorbidities, no rescue or
    stenosis, no manifest of true probabilities) goes through split, training, evaluation (Table 1, subgroups,
    report) and inference of ``python -m scripts.demo --out DIR``; a patient with a broken CTA is excluded and
    reported, not the end of the run."""
    rows = _rows(demo_cohort)
    broken = str(tmp_path / "broken_cta.nii.gz")
    open(broken, "wb").write(open(rows[3]["cta"], "rb").read()[:200])
    rows[3]["cta"] = broken
    columns = [*REQUIRED_COLUMNS, "ncct", "cta"]
    with open(tmp_path / "cohort.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    result = subprocess.run(
        [sys.executable, "-m", "scripts.demo", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    assert 0 <= metrics["cv"]["pooled_roc_auc"] <= 1 and "bayes_auc" not in metrics
    assert [e["patient_id"] for e in metrics["excluded"]] == [rows[3]["patient_id"]]
    report = open(tmp_path / "eval" / "report.md").read()
    assert "Occlusion site" in report and "Hypertension" not in report and "broken_cta.nii.gz" in report
    inferred = list(csv.DictReader(open(tmp_path / "eval" / "test_inference" / "predictions.csv")))
    assert inferred and all(r["probability"] for r in inferred)
