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
