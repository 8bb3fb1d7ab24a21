"""The demo generator: reproducible, physically consistent, with a recorded Bayes AUC."""

from __future__ import annotations

import csv
import datetime as dt
import filecmp
import json
import os

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scripts.data.anatomy import load_anatomy
from scripts.demo.generator import (
    COEF,
    SITE_EFFECT,
    draw_cohort,
    draw_patient,
    generate,
    hypoperfusion_extent,
    render,
)


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
    assert 0.7 < manifest["bayes_auc_expected"] < 0.9  # learnable but not trivial
    assert manifest["label"] == "fpe" and "logit P(FPE)" in manifest["label_rule"]


def test_draw_cohort_gives_the_generated_cohorts_truth_without_images(demo_cohort):
    """benchmarks/oracle_features.py --simulate_cohorts relies on it: the same patients, variables and outcomes."""
    manifest = json.load(open(os.path.join(os.path.dirname(demo_cohort), "manifest.json")))
    rows = {r["patient_id"]: r for r in csv.DictReader(open(demo_cohort))}
    drawn = draw_cohort(40, 3)
    assert [p["patient_id"] for p in drawn] == list(rows)
    for patient in drawn:
        truth = manifest["truth"][patient["patient_id"]]
        for key in ("probability", "clot_length_mm", "clot_density_hu", "clot_perviousness", "collaterals"):
            assert round(patient["_truth"][key], 4) == truth[key]
        row = rows[patient["patient_id"]]
        assert (patient["location"], patient["mtici_first_pass"], str(patient["age"])) == (
            row["location"],
            row["mtici_first_pass"],
            row["age"],
        )
    assert draw_cohort(40, 4)[0]["_truth"] != drawn[0]["_truth"]


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


def test_outcome_follows_the_clot_not_the_hypoperfusion_extent(demo_cohort):
    """The label rule has no extent term, and the extent is a function of site and collaterals only: given those,
    the outcome cannot depend on it (so a model reading the territory-wide picture learns site and collaterals, never
    the clot's length, density or perviousness)."""
    manifest = json.load(open(os.path.join(os.path.dirname(demo_cohort), "manifest.json")))
    rows = {r["patient_id"]: r for r in csv.DictReader(open(demo_cohort))}
    assert "extent" not in " ".join(manifest["coefficients"]) and "extent" not in manifest["label_rule"]
    for pid, truth in manifest["truth"].items():
        row = rows[pid]
        assert truth["hypoperfusion_extent"] == round(hypoperfusion_extent(row["location"], truth["collaterals"]), 4)
        z = {
            "z_len": (np.log(truth["clot_length_mm"]) - np.log(12)) / 0.45,
            "z_dens": (truth["clot_density_hu"] - 60) / 10,
            "z_perv": (truth["clot_perviousness"] - 0.5) / 0.22,
            "z_coll": (truth["collaterals"] - 1.6) / 0.95,
            "z_age": (int(row["age"]) - 70) / 12,
            "ivt": int(row["ivt"]),
        }
        logit = COEF["intercept"] + SITE_EFFECT[row["location"]] + sum(COEF[k] * v for k, v in z.items())
        # the truth is written rounded to 4 decimals
        assert truth["probability"] == pytest.approx(1 / (1 + np.exp(-logit)), abs=2e-3)


def test_clot_length_changes_the_vessels_only():
    """Two renderings of one patient that differ only in clot length differ near the vessel path, not in the
    territory (the old demo grew the hypoperfused region with clot length: a shortcut without the clot)."""
    anatomy = load_anatomy(4.0)
    patient = draw_patient(np.random.default_rng([0, 1]), 1, dt.date(2020, 1, 1), 10)
    patient.update(location="M1", side="R")
    images = {}
    for length in (6.0, 30.0):
        p = {**patient, "_truth": {**patient["_truth"], "clot_length_mm": length}}
        images[length] = render(anatomy, p, np.random.default_rng(5), ["ct"])
    diff = np.abs(images[6.0]["cta"] - images[30.0]["cta"]) + np.abs(images[6.0]["ncct"] - images[30.0]["ncct"])
    changed = np.argwhere(diff > 1e-3) * anatomy.spacing + anatomy.affine[:3, 3]
    assert len(changed) > 0  # the clot itself differs
    # every changed voxel lies in the right hemisphere's MCA / ICA region (x > 0), within reach of the vessel tree
    assert (changed[:, 0] > 0).all()
    territory_voxels = int((anatomy.territories == 4).sum())
    assert len(changed) < 0.15 * territory_voxels


def test_demo_job_keeps_another_cohorts_outputs_beside_it():
    """The built-in demo uses the bundle's models/ and eval/; any other --out gets its own, unless given."""
    from scripts.demo.job import output_folders

    assert output_folders("demo", None, None) == ("models", "eval")
    assert output_folders("/data/c2", None, None) == ("/data/c2/models", "/data/c2/eval")
    assert output_folders("/data/c2", "/m", "/e") == ("/m", "/e")
