"""The paper-style comparison table from the evaluation outputs of several runs.

``python -m scripts.evaluation.compare --runs "{'MNT-DL': 'eval/mnt_dl', 'SCANet': 'eval/scanet'}"
--out eval/comparison`` reads each run's ``metrics.json`` (written by ``configs/evaluate.json`` or the radiomics
baseline) and writes ``comparison.md``, ``.csv`` and ``.json``: ROC-AUC, accuracy, precision, sensitivity,
specificity and F1 as mean (SD) over the outer folds (sample SD); the pooled out-of-fold and the test-set
fold-ensemble ROC-AUC with stratified bootstrap 95% CIs from each run's ``predictions.csv``; the test set as mean (SD)
over the fold models (AJNR Table 4 layout). ``roc_test.png`` overlays each run's mean test-set ROC over its fold
models (+/- SD; an MR and a CT run give AJNR Fig 4); ``report.md`` is the first run's evaluation report with a "Model
comparison" section added. Runs must share label and folds; the cohort's Bayes ROC-AUC is added when the runs know it
(demo cohort). Runs evaluated with the papers' optimistic protocol are named OPTIMISTIC.

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
import re
from typing import Any, Dict, List, Tuple, Union

import fire
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from scripts import BundleInputError
from scripts.data.io import atomic_write, atomic_write_csv, atomic_write_json, atomic_write_text
from scripts.evaluation.evaluate import BOOTSTRAP, METRICS
from scripts.evaluation.statistics import bootstrap_ci, delong

Predictions = Dict[str, Dict[str, Tuple[int, float]]]

NAMES = {
    "roc_auc": "ROC-AUC",
    "accuracy": "Accuracy",
    "precision": "Precision",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "f1": "F1",
}


def _read(name: str, run: str) -> Dict[str, Any]:
    path = run if run.endswith(".json") else os.path.join(run, "metrics.json")
    if not os.path.isfile(path):
        raise BundleInputError(f"{path}: no metrics.json for run '{name}' (evaluate it first)")
    with open(path) as f:
        return json.load(f)


def comparison_rows(runs: Dict[str, str]) -> List[Dict[str, Any]]:
    """One row per run: mean and SD over folds of every metric (outer folds, and the fold models on the test set),
    pooled out-of-fold and test-ensemble ROC-AUC with 95% CIs, DeLong against the first run, label, folds."""
    rows, labels, predictions = [], set(), {}
    for name, run, metrics in _entries(runs):
        labels.add(metrics.get("label"))
        row: Dict[str, Any] = {"model": name, "label": metrics.get("label"), "folds": len(metrics["cv"]["folds"])}
        for prefix, folds in (("", metrics["cv"]["folds"]), ("test_", metrics.get("test", {}).get("folds", []))):
            for m in METRICS:
                values = np.array([f[m] for f in folds], dtype=float)
                row[f"{prefix}{m}_mean"] = float(np.nanmean(values)) if len(values) else float("nan")
                row[f"{prefix}{m}_sd"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else float("nan")
        row["test_roc_auc"] = metrics.get("test", {}).get("ensemble", {}).get("roc_auc", float("nan"))
        row["bayes_auc"] = metrics.get("bayes_auc", float("nan"))
        predictions[name] = _predictions(run)
        _add_cis(row, metrics, predictions[name])
        rows.append(row)
    if len(labels) > 1:
        raise BundleInputError(f"the runs have different labels ({', '.join(sorted(map(str, labels)))})")
    _paired_tests(predictions, rows)
    return rows


def _entries(runs: Dict[str, str]) -> List[Tuple[str, str, Dict[str, Any]]]:
    """(name, run, metrics) per run; a run evaluated with the papers' optimistic cut-offs adds a second entry with
    them, and a run whose checkpoints were chosen on the reported folds is named OPTIMISTIC."""
    out = []
    for name, run in runs.items():
        metrics = _read(name, run)
        if metrics.get("protocol", "").startswith("OPTIMISTIC"):
            name = f"{name} (OPTIMISTIC checkpoints)"
        out.append((name, run, metrics))
        paper = metrics.get("optimistic")
        if paper:
            cv, test = {**metrics["cv"], **paper["cv"]}, {**metrics.get("test", {}), **paper.get("test", {})}
            out.append((f"{name}, OPTIMISTIC cut-offs", run, {**metrics, "cv": cv, "test": test}))
    return out


def _add_cis(row: Dict[str, Any], metrics: Dict[str, Any], preds: Predictions | None) -> None:
    """Pooled out-of-fold and test-ensemble ROC-AUC with a stratified bootstrap 95% CI: from the predictions (so runs
    evaluated before CIs existed get them too), else from metrics.json."""
    recorded = {"cv": metrics["cv"].get("pooled", {}), "test": metrics.get("test", {}).get("ensemble", {})}
    for part, auc_key in (("cv", "cv_pooled_roc_auc"), ("test", "test_roc_auc")):
        row.setdefault(auc_key, float("nan"))
        row[f"{part}_ci_low"] = row[f"{part}_ci_high"] = float("nan")
        pairs = list((preds or {}).get(part, {}).values())
        if len({y for y, _ in pairs}) == 2:
            y, p = [y for y, _ in pairs], [p for _, p in pairs]
            row[auc_key] = float(roc_auc_score(y, p))
            row[f"{part}_ci_low"], row[f"{part}_ci_high"] = bootstrap_ci(y, p, n=BOOTSTRAP)
        elif "ci95" in recorded[part]:
            row[auc_key] = recorded[part]["roc_auc"]
            row[f"{part}_ci_low"], row[f"{part}_ci_high"] = recorded[part]["ci95"]["roc_auc"]
        elif part == "cv" and "pooled_roc_auc" in metrics["cv"]:
            row[auc_key] = metrics["cv"]["pooled_roc_auc"]


def _predictions(run: str) -> Predictions | None:
    """{'cv': {patient_id: (label, probability)}, 'test': {...} (fold ensemble), 'test_fold{k}': {...} (each fold
    model on the test set)} from a run's predictions.csv (None if absent)."""
    path = os.path.join(os.path.dirname(run) if run.endswith(".json") else run, "predictions.csv")
    if not os.path.isfile(path):
        return None
    out: Predictions = {"cv": {}, "test": {}}
    with open(path) as f:
        for r in csv.DictReader(f):
            part = "cv" if r["set"] == "cv" else "test" if r["fold"] == "ensemble" else f"test_fold{r['fold']}"
            out.setdefault(part, {})[r["patient_id"]] = (int(r["label"]), float(r["probability"]))
    return out


def _paired_tests(predictions: Dict[str, Predictions | None], rows: List[Dict[str, Any]]) -> None:
    """Add DeLong's test against the first run (pooled CV and test ensemble) to each row; NaN without
    predictions.csv. Refuses runs whose patients or labels differ from the first run's."""
    names = list(predictions)
    first = predictions[names[0]]
    for name, row in zip(names, rows):
        preds = predictions[name]
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


def _auc(row: Dict[str, Any], key: str, part: str) -> str:
    if math.isnan(row[key]):
        return "n/a"
    if math.isnan(row[f"{part}_ci_low"]):
        return f"{row[key]:.3f}"
    return f"{row[key]:.3f} ({row[f'{part}_ci_low']:.3f}-{row[f'{part}_ci_high']:.3f})"


def comparison_markdown(rows: List[Dict[str, Any]]) -> str:
    """The tables as markdown: metric columns as 'mean (SD)', ROC-AUCs of pooled predictions with 95% CIs."""
    head = (
        "| Model | "
        + " | ".join(NAMES[m] for m in METRICS)
        + " | CV pooled ROC-AUC (95% CI) | Test ensemble ROC-AUC (95% CI) |"
    )
    lines = [
        f"Label: {rows[0]['label']}; mean (SD) over {rows[0]['folds']} outer folds; pooled out-of-fold and test "
        f"fold-ensemble ROC-AUC with {BOOTSTRAP} stratified bootstrap resamples.",
        "",
        head,
        "|---" * (len(METRICS) + 3) + "|",
    ]
    for r in rows:
        cells = [f"{r[f'{m}_mean']:.4f} ({r[f'{m}_sd']:.3f})" for m in METRICS]
        cells += [_auc(r, "cv_pooled_roc_auc", "cv"), _auc(r, "test_roc_auc", "test")]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    if any(not math.isnan(r["test_roc_auc_mean"]) for r in rows):
        names = " | ".join(NAMES[m] for m in METRICS)
        lines += [
            "",
            "Test set: mean (SD) over the fold models, each at its own cut-off (AJNR Table 4 layout).",
            "",
            f"| Model | {names} |",
            "|---" * (len(METRICS) + 1) + "|",
        ]
        for r in rows:
            cells = [f"{r[f'test_{m}_mean']:.4f} ({r[f'test_{m}_sd']:.3f})" for m in METRICS]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    if any(not math.isnan(r.get("cv_delong_p", float("nan"))) for r in rows):
        lines += [
            "",
            f"Paired against {rows[0]['model']} (DeLong): ROC-AUC difference (95% CI), p.",
            "",
            "| Model | CV, pooled out-of-fold | p | Test ensemble | p |",
            "|---|---|---|---|---|",
        ]
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


def plot_test_roc(predictions: Dict[str, Predictions | None], path: str) -> bool:
    """Each run's mean test-set ROC curve over its fold models, +/- SD (AJNR Fig 4: MR and CT overlaid); False
    when no run has per-fold test predictions."""
    curves = {}
    grid = np.linspace(0, 1, 101)
    for name, preds in predictions.items():
        folds = [v for k, v in sorted((preds or {}).items()) if k.startswith("test_fold")]
        folds = [f for f in folds if len({y for y, _ in f.values()}) == 2]
        if folds:
            tprs, aucs = [], []
            for fold in folds:
                y, p = [y for y, _ in fold.values()], [p for _, p in fold.values()]
                fpr, tpr, _ = roc_curve(y, p)
                tprs.append(np.interp(grid, fpr, tpr))
                aucs.append(roc_auc_score(y, p))
            curves[name] = (np.mean(tprs, axis=0), np.std(tprs, axis=0), float(np.mean(aucs)), float(np.std(aucs)))
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def _draw(tmp: str) -> None:
        fig, ax = plt.subplots(figsize=(5, 5))
        for name, (mean, sd, auc, auc_sd) in curves.items():
            line = ax.plot(grid, mean, lw=2, label=f"{name} (AUC {auc:.2f} +/- {auc_sd:.2f})")[0]
            ax.fill_between(
                grid, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1), color=line.get_color(), alpha=0.15
            )
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="Test set: mean ROC of the fold models")
        ax.legend(loc="lower right", fontsize=7)
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
        plt.close(fig)

    atomic_write(path, _draw, suffix=".png")
    return True


def compare(runs: Union[Dict[str, str], str], out: str = "eval/comparison") -> str:
    """Write ``out/comparison.md``, ``.csv``, ``.json``, ``roc_test.png`` and, when the first run has one, its
    ``report.md`` with the comparison added (``out/report.md``); return the markdown."""
    if isinstance(runs, str):
        raise BundleInputError("--runs: give a mapping, e.g. \"{'MNT-DL': 'eval/mnt_dl', 'SCANet': 'eval/scanet'}\"")
    rows = comparison_rows(runs)
    text = comparison_markdown(rows)
    if plot_test_roc({name: _predictions(run) for name, run in runs.items()}, os.path.join(out, "roc_test.png")):
        text += "\nFigure: [mean test-set ROC of each run's fold models](roc_test.png)\n"
    atomic_write_csv(os.path.join(out, "comparison.csv"), rows)
    atomic_write_text(os.path.join(out, "comparison.md"), text)
    report = _report_with_comparison(runs[next(iter(runs))], out, text)
    if report is not None:
        atomic_write_text(os.path.join(out, "report.md"), report)
    atomic_write_json(
        os.path.join(out, "comparison.json"),
        {
            "paired_against": rows[0]["model"],
            "rows": [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows],
        },
    )
    print(text)
    return text


def _report_with_comparison(run: str, out: str, comparison: str) -> str | None:
    """The first run's ``report.md`` (links re-pointed from ``out``) with a "Model comparison" section, or None when
    that run has no report (e.g. the radiomics baseline)."""
    folder = os.path.dirname(run) if run.endswith(".json") else run
    path = os.path.join(folder, "report.md")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        text = f.read()

    def _relink(match: "re.Match[str]") -> str:
        target = os.path.join(folder, match.group(2))
        return f"[{match.group(1)}]({os.path.relpath(target, out)})" if os.path.exists(target) else match.group(0)

    text = re.sub(r"\[([^\]]+)\]\(([^)\s:]+)\)", _relink, text)
    return text.rstrip() + "\n\n## Model comparison\n\n" + comparison


def _cli(runs: Union[Dict[str, str], str], out: str = "eval/comparison") -> None:
    compare(runs, out)  # prints the tables itself


if __name__ == "__main__":
    fire.Fire(_cli)
