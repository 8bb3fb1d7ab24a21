"""Fold recording: grouped, stratified, reproducible, and never leaking across sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scripts import BundleInputError
from scripts.data.cohort import read_cohort
from scripts.data.split import fold_data, make_datalist, write_datalist


def _synthetic_rows(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        {
            "patient_id": f"p{i:03d}",
            "procedure_date": f"{2015 + int(rng.integers(0, 7))}-06-01",
            "fpe": int(rng.random() < 0.3),
            "mtici_2c": 0,
            "rlvo": 0,
        }
        for i in range(n)
    ]


def test_folds_partition_patients_and_are_stratified():
    rows = _synthetic_rows()
    data = make_datalist(rows, folds=5, seed=1)
    ids = [d["patient_id"] for d in data["training"]]
    assert len(ids) == len(set(ids))  # no patient in two folds
    assert all(d["procedure_date"] >= "2020-01-01" for d in data["test"])
    assert all(d["procedure_date"] < "2020-01-01" for d in data["training"])
    assert not set(ids) & {d["patient_id"] for d in data["test"]}
    rate = np.mean([d["fpe"] for d in data["training"]])
    for k in range(5):
        outer = fold_data(data, k, "outer")
        assert abs(np.mean([d["label"] for d in outer]) - rate) < 0.08
        inner = {d["patient_id"] for d in fold_data(data, k, "inner_val")}
        train = {d["patient_id"] for d in fold_data(data, k, "train")}
        outer_ids = {d["patient_id"] for d in outer}
        assert not inner & outer_ids and not train & outer_ids and not inner & train
        assert len(inner | train | outer_ids) == len(ids)
        assert 0.1 < len(inner) / (len(inner) + len(train)) < 0.2


def test_same_folds_on_rerun_and_other_settings_refused(demo_cohort, tmp_path):
    out = str(tmp_path / "datalist.json")
    write_datalist(demo_cohort, out, folds=2, seed=4)
    first = open(out).read()
    write_datalist(demo_cohort, out, folds=2, seed=4)
    assert open(out).read() == first
    other = make_datalist(read_cohort(demo_cohort), folds=2, seed=5)
    assert [d["fold"] for d in other["training"]] != [d["fold"] for d in json.loads(first)["training"]]
    with pytest.raises(BundleInputError, match="other settings"):
        write_datalist(demo_cohort, out, folds=2, seed=5)
    assert open(out).read() == first


def test_too_few_patients():
    with pytest.raises(BundleInputError, match="too few"):
        make_datalist(_synthetic_rows(8), folds=5)


def test_random_stratified_hold_out():
    """``test_fraction``: a random share of the patients, stratified by the label, from every year; reproducible in
    the seed; the folds cover the rest."""
    rows = _synthetic_rows(300)
    data = make_datalist(rows, folds=5, seed=3, test_fraction=0.2)
    test = {d["patient_id"] for d in data["test"]}
    train = {d["patient_id"] for d in data["training"]}
    assert len(test) == 60 and not test & train and len(test | train) == 300
    rate = np.mean([r["fpe"] for r in rows])
    assert abs(np.mean([d["label"] for d in data["test"]]) - rate) < 0.02  # stratified
    assert len({d["procedure_date"] for d in data["test"]}) > 3  # not a date cut
    assert data["settings"]["test_fraction"] == 0.2 and data["settings"]["test_from"] is None
    again = make_datalist(rows, folds=5, seed=3, test_fraction=0.2)
    assert {d["patient_id"] for d in again["test"]} == test
    other = make_datalist(rows, folds=5, seed=4, test_fraction=0.2)
    assert {d["patient_id"] for d in other["test"]} != test
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(BundleInputError, match="test_fraction"):
            make_datalist(rows, test_fraction=bad)


def test_hold_out_through_the_cli(demo_cohort, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = str(tmp_path / "datalist.json")
    command = [sys.executable, "-m", "scripts.data.split", "--cohort", demo_cohort, "--out", out, "--folds", "2"]
    done = subprocess.run(command + ["--test_fraction", "0.25"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]
    data = json.load(open(out))
    n = len(data["training"]) + len(data["test"])
    assert len(data["test"]) == round(0.25 * n) and data["settings"]["test_fraction"] == 0.25
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)  # the date protocol: other settings
    assert refused.returncode == 2 and "other settings" in refused.stderr.strip().splitlines()[-1]
