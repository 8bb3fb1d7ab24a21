"""The paper-style comparison table from the evaluation outputs of several runs.

``python -m scripts.evaluation.compare --runs "{'MNT-DL': 'eval/mnt_dl', 'SCANet': 'eval/scanet'}"
--out eval/comparison`` reads each run's ``metrics.json`` (written by ``configs/evaluate.json`` or the radiomics
baseline) and writes ``comparison.md`` and ``comparison.csv``: ROC-AUC, accuracy, precision, sensitivity,
specificity and F1 as mean (SD) over the outer folds (sample SD), then the test-set fold-ensemble ROC-AUC. Runs must
share label and folds; the cohort's Bayes ROC-AUC is added when the runs know it (demo cohort).

Each run after the first is also compared with the first on the same patients (DeLong's paired test,
``scripts.evaluation.statistics.delong``) from the runs' ``predictions.csv``: the pooled out-of-fold predictions and
the test-set fold ensemble, as the ROC-AUC difference with its 95% CI and ``delong_p`` (also in comparison.json).
Runs on different patients or labels are refused.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List, Tuple, Union

import fire
import numpy as np

from scripts import BundleInputError
from scripts.data.io import atomic_write_csv, atomic_write_json, atomic_write_text
from scripts.evaluation.evaluate import METRICS
from scripts.evaluation.statistics import delong

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
    _paired_tests(runs, rows)
    return rows


def _predictions(run: str) -> Dict[str, Dict[str, Tuple[int, float]]] | None:
    """{'cv': {patient_id: (label, probability)}, 'test': {...}} from a run's predictions.csv (None if absent)."""
    path = os.path.join(os.path.dirname(run) if run.endswith(".json") else run, "predictions.csv")
    if not os.path.isfile(path):
        return None
    out: Dict[str, Dict[str, Tuple[int, float]]] = {"cv": {}, "test": {}}
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["set"] == "cv" or r["fold"] == "ensemble":
                out["cv" if r["set"] == "cv" else "test"][r["patient_id"]] = (int(r["label"]), float(r["probability"]))
    return out


def _paired_tests(runs: Dict[str, str], rows: List[Dict[str, Any]]) -> None:
    """Add DeLong's test against the first run (pooled CV and test ensemble) to each row; NaN without
    predictions.csv. Refuses runs whose patients or labels differ from the first run's."""
    names = list(runs)
    first = _predictions(runs[names[0]])
    for name, row in zip(names, rows):
        preds = _predictions(runs[name])
        for part in ("cv", "test"):
            row[f"{part}_auc_diff"] = row[f"{part}_diff_low"] = row[f"{part}_diff_high"] = float("nan")
            row[f"{part}_delong_p"] = float("nan")
            if name == names[0] or first is None or preds is None or not first[part]:
                continue
            if set(preds[part]) != set(first[part]):
                raise BundleInputError(f"run '{name}': {part} patients differ from run '{names[0]}' (paired test)")
            ids = sorted(first[part])
            y = [first[part][i][0] for i in ids]
            if y != [preds[part][i][0] for i in ids]:
                raise BundleInputError(f"run '{name}': {part} labels differ from run '{names[0]}' (paired test)")
            if len(set(y)) < 2:
                continue
            test = delong(y, [preds[part][i][1] for i in ids], [first[part][i][1] for i in ids])
            row[f"{part}_auc_diff"], (row[f"{part}_diff_low"], row[f"{part}_diff_high"]) = (
                test["difference"],
                test["ci95"],
            )
            row[f"{part}_delong_p"] = test["p"]


def comparison_markdown(rows: List[Dict[str, Any]]) -> str:
    """The table as markdown: metric columns as 'mean (SD)'."""
    head = "| Model | " + " | ".join(NAMES[m] for m in METRICS) + " | Test ensemble ROC-AUC |"
    lines = [f"Label: {rows[0]['label']}; mean (SD) over {rows[0]['folds']} outer folds.", "", head,
             "|---" * (len(METRICS) + 2) + "|"]  # fmt: skip
    for r in rows:
        cells = [f"{r[f'{m}_mean']:.4f} ({r[f'{m}_sd']:.3f})" for m in METRICS]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['test_roc_auc']:.4f} |")
    if any(not math.isnan(r.get("cv_delong_p", float("nan"))) for r in rows):
        lines += ["", f"Paired against {rows[0]['model']} (DeLong): ROC-AUC difference (95% CI), p.", "",
                  "| Model | CV, pooled out-of-fold | p | Test ensemble | p |", "|---|---|---|---|---|"]  # fmt: skip
        for r in rows[1:]:
            cells = []
            for part in ("cv", "test"):
                if math.isnan(r[f"{part}_delong_p"]):
                    cells += ["n/a", "n/a"]
                else:
                    diff = (
                        f"{r[f'{part}_auc_diff']:+.3f} ({r[f'{part}_diff_low']:+.3f} to {r[f'{part}_diff_high']:+.3f})"
                    )
                    cells += [diff, "<0.001" if r[f"{part}_delong_p"] < 0.001 else f"{r[f'{part}_delong_p']:.3f}"]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
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
    atomic_write_csv(os.path.join(out, "comparison.csv"), rows)
    atomic_write_text(os.path.join(out, "comparison.md"), text)
    atomic_write_json(
        os.path.join(out, "comparison.json"),
        {
            "paired_against": rows[0]["model"],
            "rows": [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows],
        },
    )
    print(text)
    return text


if __name__ == "__main__":
    fire.Fire(compare)
