"""The cohort table contract: one-line validation errors and label derivation."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from scripts import BundleInputError
from scripts.data.cohort import derive_labels, read_cohort, read_image_table
from tests.conftest import ROOT


def _rows(path: str):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write(path: str, rows) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _broken(demo_cohort: str, tmp_path, row: int, column: str, value: str) -> str:
    rows = _rows(demo_cohort)
    base = os.path.dirname(demo_cohort)
    for r in rows:  # keep image paths valid from the new location
        for seq in ("ncct", "cta", "b0", "b1000", "adc", "flair"):
            r[seq] = os.path.join(base, r[seq])
    rows[row][column] = value
    return _write(str(tmp_path / "bad.csv"), rows)


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("mtici_final", "2d", "unknown mTICI grade '2d'"),
        ("mtici_first_pass", "x", "unknown mTICI grade 'x'"),
        ("procedure_date", "2019-13-40", "is not a date"),
        ("patient_id", "demo0000", "duplicate id 'demo0000' (first on row 2)"),
        ("cta", "/nonexistent/cta.nii.gz", "file not found"),
        ("nihss", "55", "outside [0, 42]"),
        ("side", "X", "must be L or R"),
    ],
)
def test_table_errors_name_row_and_column(demo_cohort, tmp_path, column, value, message):
    path = _broken(demo_cohort, tmp_path, 3, column, value)
    with pytest.raises(BundleInputError) as err:
        read_cohort(path)
    text = str(err.value)
    assert f"row 5, column '{column}'" in text  # data row 3 is line 5 (header is line 1)
    assert message in text
    assert "\n" not in text


def test_split_excludes_a_bad_row_and_strict_stops_with_one_line(demo_cohort, tmp_path):
    """A cohort run never ends on one patient: the split leaves the bad row out and lists it with its reason in
    exclusions.csv; ``--strict true`` restores stop-at-first (one line, exit status 2, nothing written)."""
    path = _broken(demo_cohort, tmp_path, 0, "mtici_final", "9")
    split = [sys.executable, "-m", "scripts.data.split", "--cohort", path]
    strict_args = [*split, "--out", str(tmp_path / "s.json"), "--strict", "true"]
    strict = subprocess.run(strict_args, cwd=ROOT, capture_output=True, text=True)
    assert strict.returncode == 2
    assert strict.stderr.strip().count("\n") == 0
    assert "row 2, column 'mtici_final'" in strict.stderr and "Traceback" not in strict.stderr
    assert not (tmp_path / "s.json").exists()
    result = subprocess.run([*split, "--out", str(tmp_path / "d.json")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    bad = _rows(demo_cohort)[0]["patient_id"]
    with open(tmp_path / "exclusions.csv") as f:
        excluded = list(csv.DictReader(f))
    assert [e["patient_id"] for e in excluded] == [bad]
    assert "row 2, column 'mtici_final'" in excluded[0]["reason"]
    data = json.loads((tmp_path / "d.json").read_text())
    assert bad not in {d["patient_id"] for d in data["training"] + data["test"]}
    assert len(data["training"]) + len(data["test"]) == len(_rows(demo_cohort)) - 1


def test_missing_column(demo_cohort, tmp_path):
    rows = [{k: v for k, v in r.items() if k != "nihss"} for r in _rows(demo_cohort)]
    with pytest.raises(BundleInputError, match="missing column"):
        read_cohort(_write(str(tmp_path / "c.csv"), rows), check_files=False)


@pytest.mark.parametrize(
    "first,final,stenosis,rescue,expected",
    [
        ("2b", "2b", 0, 0, {"fpe": 1, "mtici_2c": 0, "rlvo": 0}),
        ("2a", "3", 0, 0, {"fpe": 0, "mtici_2c": 1, "rlvo": 0}),
        ("2b67", "2c", 0, 0, {"fpe": 1, "mtici_2c": 1, "rlvo": 0}),
        ("0", "2a", 0, 0, {"fpe": 0, "mtici_2c": 0, "rlvo": 1}),
        ("1", "3", 1, 0, {"fpe": 0, "mtici_2c": 1, "rlvo": 1}),
        ("3", "3", 0, 1, {"fpe": 1, "mtici_2c": 1, "rlvo": 1}),
    ],
)
def test_label_rules(first, final, stenosis, rescue, expected):
    row = {"mtici_first_pass": first, "mtici_final": final, "stenosis_gt50": stenosis, "rescue": rescue}
    assert derive_labels(row) == expected


def test_demo_cohort_satisfies_contract(demo_cohort):
    rows = read_cohort(demo_cohort)
    assert len(rows) == 40
    assert all(os.path.isfile(r["ncct"]) and os.path.isfile(r["flair"]) for r in rows)
    assert {r["fpe"] for r in rows} == {0, 1}


def test_image_table(demo_cohort, tmp_path):
    """The unlabeled (image-only) table: paths relative to the table, every sequence required, one row each."""
    rows = read_cohort(demo_cohort)[:2]
    path = tmp_path / "unlabeled.csv"
    path.write_text(f"patient_id,ncct,cta\nu1,{rows[0]['ncct']},{rows[0]['cta']}\nu2,{rows[1]['ncct']},\n")
    with pytest.raises(BundleInputError, match=r"unlabeled.csv: row 3, column 'cta': file not found: ''"):
        read_image_table(str(path), ["ncct", "cta"])
    assert [r["patient_id"] for r in read_image_table(str(path), ["ncct"])] == ["u1", "u2"]
    path.write_text(f"patient_id,ncct\nu1,{rows[0]['ncct']}\nu1,{rows[1]['ncct']}\n")
    with pytest.raises(BundleInputError, match=r"row 3, column 'patient_id': duplicate id 'u1' \(first on row 2\)"):
        read_image_table(str(path), ["ncct"])
    with pytest.raises(BundleInputError, match="missing column"):
        read_image_table(str(path), ["ncct", "cta"])
    side = {"side": ["L", "R"]}  # the reading pretraining's pool: the side by which the vessel box is turned
    with pytest.raises(BundleInputError, match=r"unlabeled.csv: missing column\(s\) side"):
        read_image_table(str(path), ["ncct"], side)
    path.write_text(f"patient_id,side,ncct\nu1,R,{rows[0]['ncct']}\nu2,left,{rows[1]['ncct']}\n")
    with pytest.raises(BundleInputError, match=r"row 3, column 'side': 'left' is not one of L, R"):
        read_image_table(str(path), ["ncct"], side)
    path.write_text(f"patient_id,side,ncct\nu1,R,{rows[0]['ncct']}\nu2,L,{rows[1]['ncct']}\n")
    assert [r["side"] for r in read_image_table(str(path), ["ncct"], side)] == ["R", "L"]


def test_blank_nihss_and_onset_are_missing_not_errors(demo_cohort, tmp_path):
    """Registries have gaps: a blank NIHSS or onset reads as None, the clinical input gets NaN, Table 1 counts it."""
    import numpy as np

    from scripts.data.clinical import raw_clinical
    from scripts.evaluation.table1 import table1_rows

    rows = _rows(demo_cohort)
    rows[0]["nihss"], rows[1]["onset_to_imaging_min"] = "", " "
    cohort = read_cohort(_write(str(tmp_path / "gaps.csv"), rows), check_files=False)
    assert cohort[0]["nihss"] is None and cohort[1]["onset_to_imaging_min"] is None and cohort[2]["nihss"] is not None
    values = raw_clinical(cohort[0], {"age": "numeric", "nihss": "numeric"})
    assert np.isnan(values[1]) and not np.isnan(values[0])
    names = [r["variable"] for r in table1_rows(cohort, "fpe")]
    assert "NIHSS (missing 1)" in names and "Onset to imaging, min (missing 1)" in names
