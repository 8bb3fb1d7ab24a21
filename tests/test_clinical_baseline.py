"""The clinical-only baseline learns a label that lives in the table and only that; it fits on training rows only."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np

from scripts.data.cohort import read_cohort
from scripts.data.split import make_datalist
from scripts.evaluation.clinical_baseline import evaluate_clinical
from tests.conftest import ROOT
from tests.helpers import BUNDLE, config_list

COLUMNS = {"age": "numeric", "sex": ["M", "F"], "nihss": "numeric", "ivt": "numeric"}


def _datalist(cohort, rule):
    rows = read_cohort(cohort)
    for row in rows:
        row["fpe"] = rule(row)
    return make_datalist(rows, label="fpe", folds=2, seed=0, inner_val=0.25)


def test_learns_a_table_label_and_imputes_blanks(demo_cohort, tmp_path):
    median = np.median([r["age"] for r in read_cohort(demo_cohort)])
    data = _datalist(demo_cohort, lambda r: int(r["age"] > median))
    data["training"][0]["nihss"] = ""  # a blank cell is imputed, not an error
    metrics = evaluate_clinical(data, COLUMNS, str(tmp_path / "eval"), str(tmp_path / "models"))
    assert metrics["cv"]["summary"]["roc_auc"]["mean"] > 0.9
    chosen = json.load(open(tmp_path / "eval" / "clinical_models.json"))
    assert chosen["columns"] == ["age", "sex", "nihss", "ivt", "location", "side"] and len(chosen["folds"]) == 2


def test_runs_through_monai_bundle(demo_cohort, datalist_2fold, tmp_path):
    configs = config_list(
        "configs/train.json", "configs/experiments/clinical_demo.json", "configs/experiments/clinical_baseline.json"
    )
    data = ["--dataset_dir", os.path.dirname(demo_cohort), "--datalist_file", datalist_2fold]
    folders = ["--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval")]
    cmd = [*BUNDLE, "clinical_baseline", "--config_file", configs, *data, *folders]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    assert len(metrics["cv"]["folds"]) == 2 and "ci95" in metrics["cv"]["pooled"]
    assert os.path.isfile(tmp_path / "models" / "clinical" / "cutoffs.json")
