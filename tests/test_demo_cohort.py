"""The demo generator: reproducible, physically consistent, with a recorded Bayes AUC."""

from __future__ import annotations

import csv
import filecmp
import json
import os

import nibabel as nib
import numpy as np
from sklearn.metrics import roc_auc_score

from scripts.demo.generator import generate


def test_same_seed_same_files(tmp_path):
    a = generate(str(tmp_path / "a"), patients=20, seed=7, modalities="ct", spacing=8.0)
    b = generate(str(tmp_path / "b"), patients=20, seed=7, modalities="ct", spacing=8.0)
    c = generate(str(tmp_path / "c"), patients=20, seed=8, modalities="ct", spacing=8.0)
    assert filecmp.cmp(a, b, shallow=False) and not filecmp.cmp(a, c, shallow=False)
    img_a = nib.load(os.path.join(tmp_path, "a", "images", "demo0003_cta.nii.gz")).get_fdata()
    img_b = nib.load(os.path.join(tmp_path, "b", "images", "demo0003_cta.nii.gz")).get_fdata()
    assert np.array_equal(img_a, img_b)


def test_manifest_truth_and_bayes_auc(demo_cohort):
    base = os.path.dirname(demo_cohort)
    manifest = json.load(open(os.path.join(base, "manifest.json")))
    rows = list(csv.DictReader(open(demo_cohort)))
    prob = [manifest["truth"][r["patient_id"]]["probability"] for r in rows]
    fpe = [r["mtici_first_pass"] in ("2b", "2c", "3") for r in rows]
    assert manifest["bayes_auc"] == roc_auc_score(fpe, prob)
    assert 0.8 < manifest["bayes_auc_expected"] < 0.95  # learnable but not trivial
    assert manifest["label"] == "fpe" and "logit P(FPE)" in manifest["label_rule"]


def test_adc_follows_the_b0_b1000_formula_and_core_is_visible(demo_cohort):
    base = os.path.dirname(demo_cohort)
    row = next(iter(csv.DictReader(open(demo_cohort))))
    load = lambda seq: nib.load(os.path.join(base, row[seq])).get_fdata()  # noqa: E731
    b0, b1000, adc = load("b0"), load("b1000"), load("adc")
    brain = adc > 0
    expected = -np.log(np.maximum(b1000, 1e-3) / np.maximum(b0, 1e-3)) / 1000 * 1e6
    assert np.allclose(adc[brain], np.clip(expected[brain], 0, 5000), rtol=1e-4, atol=1e-2)
    ncct = load("ncct")
    assert ncct.min() <= -900 and ncct.max() >= 1000  # air and skull in Hounsfield units
    brain_hu = ncct[(ncct > 10) & (ncct < 60)]
    assert 20 < np.median(brain_hu) < 45
