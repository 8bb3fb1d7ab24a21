"""The paper-style comparison table from the evaluation outputs of several runs.

``python -m scripts.evaluation.compare --runs "{'MNT-DL': 'eval/mnt_dl', 'SCANet': 'eval/scanet'}"
--out eval/comparison`` reads each run's ``metrics.json`` (written by ``configs/evaluate.json`` or the radiomics
baseline) and writes ``comparison.md`` and ``comparison.csv``: ROC-AUC, accuracy, precision, sensitivity,
specificity and F1 as mean (SD) over the outer folds (sample SD), then the test-set fold-ensemble ROC-AUC. Runs must
share label and folds; the cohort's Bayes ROC-AUC is added when the runs know it (demo cohort).
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Dict, List, Union

import fire
import numpy as np

from scripts import BundleInputError
from scripts.data.io import atomic_write_text
from scripts.evaluation.evaluate import METRICS

NAMES = {"roc_auc": "ROC-AUC", "accuracy": "Accuracy", "precision": "Precision", "sensitivity": "Sensitivity",
         "specificity": "Specificity", "f1": "F1"}  # fmt: skip


def _read(name: str, run: str) -> Dict[str, Any]:
    path = run if run.endswith(".json") else os.path.join(run, "metrics.json")
    if not os.path.isfile(path):
        raise BundleInputError(f"{path}: no metrics.json for run '{name}' (evaluate it first)")
    with open(path) as f:
        return json.load(f)


def comparison_rows(runs: Dict[str, str]) -> List[Dict[str, Any]]:
    """One row per run: mean and SD over folds of every metric, the test ensemble ROC-AUC, label, folds."""
    rows, labels = [], set()
    for name, run in runs.items():
        metrics = _read(name, run)
        folds = metrics["cv"]["folds"]
        labels.add(metrics.get("label"))
        row: Dict[str, Any] = {"model": name, "label": metrics.get("label"), "folds": len(folds)}
        for m in METRICS:
            values = np.array([f[m] for f in folds], dtype=float)
            row[f"{m}_mean"] = float(np.nanmean(values))
            row[f"{m}_sd"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else float("nan")
        row["test_roc_auc"] = metrics.get("test", {}).get("ensemble", {}).get("roc_auc", float("nan"))
        row["bayes_auc"] = metrics.get("bayes_auc", float("nan"))
        rows.append(row)
    if len(labels) > 1:
        raise BundleInputError(f"the runs have different labels ({', '.join(sorted(map(str, labels)))})")
    return rows


def comparison_markdown(rows: List[Dict[str, Any]]) -> str:
    """The table as markdown: metric columns as 'mean (SD)'."""
    head = "| Model | " + " | ".join(NAMES[m] for m in METRICS) + " | Test ensemble ROC-AUC |"
    lines = [f"Label: {rows[0]['label']}; mean (SD) over {rows[0]['folds']} outer folds.", "", head,
             "|---" * (len(METRICS) + 2) + "|"]  # fmt: skip
    for r in rows:
        cells = [f"{r[f'{m}_mean']:.4f} ({r[f'{m}_sd']:.3f})" for m in METRICS]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['test_roc_auc']:.4f} |")
    bayes = [r["bayes_auc"] for r in rows if not np.isnan(r["bayes_auc"])]
    if bayes:
        lines += ["", f"Bayes ROC-AUC of the cohort (true probabilities): {bayes[0]:.4f}"]
    return "\n".join(lines) + "\n"


def compare(runs: Union[Dict[str, str], str], out: str = "eval/comparison") -> str:
    """Write ``out/comparison.md`` and ``out/comparison.csv``; return the markdown."""
    if isinstance(runs, str):
        raise BundleInputError("--runs: give a mapping, e.g. \"{'MNT-DL': 'eval/mnt_dl', 'SCANet': 'eval/scanet'}\"")
    rows = comparison_rows(runs)
    text = comparison_markdown(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "comparison.csv"), buf.getvalue())
    atomic_write_text(os.path.join(out, "comparison.md"), text)
    print(text)
    return text


if __name__ == "__main__":
    fire.Fire(compare)
