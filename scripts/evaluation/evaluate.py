"""Honest k-fold evaluation: cut-offs from inner validation, metrics on outer folds and the test set.

For each fold k the fold model predicts its inner-validation patients (the Youden cut-off is chosen
there), its outer fold (reported) and the prospective test set. The test set is also predicted by
the fold ensemble (mean probability) at the cut-off chosen on the pooled inner-validation
predictions. The pooled out-of-fold predictions and the test ensemble get bootstrap 95% CIs and calibration
(``scripts.evaluation.statistics``). Outputs: ``predictions.csv``, ``metrics.json``, ``metrics.md``, ``roc.png``,
``calibration.png``, ``decision_curve.csv``/``.png``, ``table1.md``, ``report.md`` in ``output_dir`` and
``cutoffs.json`` beside the fold models (used by inference).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, roc_auc_score, roc_curve

from scripts import BundleInputError
from scripts.data.cache import cached_dataset
from scripts.data.cohort import MODALITY_SEQUENCES
from scripts.data.io import atomic_write, atomic_write_csv, atomic_write_json, atomic_write_text, locked
from scripts.data.screen import EXCLUSIONS_FILE, write_exclusions
from scripts.data.split import fold_data
from scripts.evaluation.key_images import add_key_images
from scripts.evaluation.statistics import bootstrap_ci, bootstrap_metric_cis, calibration, fit_platt, net_benefit
from scripts.evaluation.table1 import table1_markdown, table1_rows
from scripts.inference.measurements import write_reference
from scripts.inference.predict import apply_platt, predict, predict_many
from scripts.training.kfold import check_trained_on, load_weights, validated_on

BOOTSTRAP = 1000  # stratified patient-level resamples behind every 95% CI
OPTIMISTIC_NOTE = (
    "OPTIMISTIC (the papers' protocol): Youden cut-offs chosen on the set being reported (each outer fold, the test "
    "set); for comparison with published tables only"
)
METRICS = ("roc_auc", "accuracy", "precision", "sensitivity", "specificity", "f1")


def youden_cutoff(labels: Sequence[int], probabilities: Sequence[float]) -> float:
    """Probability cut-off maximising sensitivity + specificity - 1 (0.5 if only one class is present)."""
    y = np.asarray(labels)
    if y.min() == y.max():
        warnings.warn("inner validation holds a single class: cut-off set to 0.5")
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, probabilities)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def binary_metrics(labels: Sequence[int], probabilities: Sequence[float], cutoff: float) -> Dict[str, float]:
    """ROC-AUC and the confusion-matrix metrics at ``cutoff`` (prediction = probability >= cutoff)."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    pred = (p >= cutoff).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "roc_auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "f1": float(f1_score(y, pred, zero_division=0)),
    }


def pooled_metrics(labels: Sequence[int], probabilities: Sequence[float], predictions: Sequence[int]) -> Dict[str, Any]:
    """Metrics of one set of patients (each with its own prediction), each with a bootstrap 95% CI (``ci95``),
    and calibration (Brier, ECE, slope, intercept)."""
    y, p, pred = np.asarray(labels, dtype=int), np.asarray(probabilities, dtype=float), np.asarray(predictions)
    out: Dict[str, Any] = binary_metrics(y, pred.astype(float), 0.5)
    out["roc_auc"] = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    out["ci95"] = bootstrap_metric_cis(y, p, pred, n=BOOTSTRAP) if 0 < y.sum() < len(y) else {}
    out["calibration"] = calibration(y, p)
    return out


def mean_sd(rows: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """Mean and sample SD of each metric over folds."""
    return {
        m: {"mean": float(np.nanmean([r[m] for r in rows])), "sd": float(np.nanstd([r[m] for r in rows], ddof=1))}
        for m in METRICS
    }


@locked("ckpt_dir", "evaluation")  # evaluation writes cutoffs.json beside the fold models
def evaluate_folds(
    network: torch.nn.Module,
    preprocessing: Callable,
    datalist: Dict[str, Any],
    ckpt_dir: str,
    output_dir: str,
    device: Any,
    inferer: Callable | None = None,
    postprocessing: Callable | None = None,
    batch_size: int = 4,
    manifest: Dict[str, Any] | None = None,
    explain: bool = False,
    explain_mask_size: Sequence[int] = (12, 12, 5),
    recalibration: str = "none",
    optimistic: bool = False,
    cache: str = "ram",
    cache_dir: str | None = None,
) -> Dict[str, Any]:
    """Evaluate every fold model; write predictions, metrics, figures, the report and the cut-offs.

    Args:
        network: the configured network (each fold's weights are loaded into it).
        preprocessing: the deterministic preprocessing of ``validate``.
        datalist: the split.
        ckpt_dir: the model folder.
        output_dir: where the outputs go.
        device: the torch device.
        inferer: the inferer (default: call the network).
        postprocessing: the postprocessing (the sigmoid).
        batch_size: patients per forward.
        manifest: the demo's truth (Bayes ROC-AUC), if any.
        explain: also explain the test-set patients with the fold ensemble (``output_dir/explanations``).
        explain_mask_size: the occlusion patch of the explanations, voxels.
        recalibration: "none" or "platt" (each fold model scaled on its inner validation).
        optimistic: also the papers' cut-offs, labelled OPTIMISTIC (:func:`evaluate_predictions`).
        cache: where the preprocessed patients are kept (:mod:`scripts.data.cache`).
        cache_dir: the disk cache's folder.

    Returns:
        the metrics dict (as ``metrics.json``).
    """
    check_trained_on(ckpt_dir, datalist)  # fold models of another datalist would see their own training patients
    items = datalist["training"] + datalist["test"]
    data = cached_dataset(items, preprocessing, cache, cache_dir)
    index = {d["patient_id"]: i for i, d in enumerate(items)}

    def fold_predictor(k: int) -> Callable[[List[Dict[str, Any]]], np.ndarray]:
        load_weights(network, os.path.join(ckpt_dir, f"fold{k}", "model.pt"), device)

        def run(part: List[Dict[str, Any]]) -> np.ndarray:
            subset = torch.utils.data.Subset(data, [index[d["patient_id"]] for d in part])
            return predict(network, subset, device, inferer, postprocessing, batch_size)

        return run

    metrics = evaluate_predictions(datalist, fold_predictor, ckpt_dir, output_dir, manifest, recalibration, optimistic)
    if hasattr(network, "clinical_measurements"):  # the training cohort's values, for inference's percentiles
        development = torch.utils.data.Subset(data, [index[d["patient_id"]] for d in datalist["training"]])
        measured: List[Dict[str, float]] = []
        predict_many(
            [network], development, device, inferer, postprocessing, batch_size, {"clinical_measurements": measured}
        )
        write_reference(ckpt_dir, measured)
    add_key_images(network, data, index, output_dir, device)
    if explain and datalist["test"]:
        from scripts.inference.explain import explain_cohort

        summary = explain_cohort(
            network,
            preprocessing,
            datalist["test"],
            ckpt_dir,
            os.path.join(output_dir, "explanations"),
            device,
            explain_mask_size,
        )
        print("explanations (test set): " + json.dumps(summary), flush=True)
    return metrics


def evaluate_predictions(
    datalist: Dict[str, Any],
    fold_predictor: Callable[[int], Callable[[List[Dict[str, Any]]], np.ndarray]],
    ckpt_dir: str,
    output_dir: str,
    manifest: Dict[str, Any] | None = None,
    recalibration: str = "none",
    optimistic: bool = False,
) -> Dict[str, Any]:
    """The evaluation protocol for any model: ``fold_predictor(k)`` gives fold k's model as a function from
    items to probabilities. Per fold, the cut-off (Youden) comes from the inner-validation items only; the
    outer fold and the test set are then predicted with it; the test set also by the fold ensemble (mean
    probability, cut-off from the pooled inner-validation predictions). Writes predictions.csv, metrics.json,
    metrics.md, roc.png, calibration.png, decision_curve.csv/.png, table1.md (the cohort by label) and report.md to
    ``output_dir`` and cutoffs.json to ``ckpt_dir``; returns the metrics.

    ``recalibration="platt"``: each fold model's probabilities are Platt-scaled with parameters fitted on its own
    inner-validation patients (stored in cutoffs.json under ``platt`` and applied by inference) before cut-offs,
    pooling and the ensemble; the uncalibrated pooled and ensemble metrics are reported beside them.

    ``optimistic``: also the papers' own protocol beside the honest one, labelled OPTIMISTIC (``metrics["optimistic"]``,
    metrics.md, report.md): each fold's metrics at the Youden cut-off of its reported outer fold, and on the test set
    at the test set's own. Fold models whose checkpoint was chosen on the outer fold
    (``configs/experiments/optimistic.json``, recorded in done.json) label every output OPTIMISTIC
    (``metrics["protocol"]``)."""
    if recalibration not in ("none", "platt"):
        raise BundleInputError(f"recalibration: '{recalibration}' is unknown (allowed: none, platt)")
    folds = _fold_results(datalist, fold_predictor, recalibration, optimistic)
    metrics = _metrics(datalist, folds, ckpt_dir, optimistic)
    if manifest is not None:  # the demo's Bayes AUC for the label being reported
        label = datalist.get("settings", {}).get("label", "fpe")
        metrics["bayes_auc"] = manifest.get("bayes_auc_by_label", {}).get(label, manifest.get("bayes_auc"))
        same = bayes_on_reported(manifest, folds["rows"], label)
        if same:
            metrics["bayes_same_patients"] = same
    metrics["subgroups"] = subgroup_metrics(folds["rows"], datalist["training"] + datalist["test"])
    metrics["excluded"] = list(datalist.get("excluded", []))
    write_exclusions(os.path.join(output_dir, EXCLUSIONS_FILE), metrics["excluded"])
    _write_outputs(folds["rows"], metrics, folds["cutoffs"], ckpt_dir, output_dir)
    cohort = datalist["training"] + datalist["test"]
    table1 = table1_markdown(table1_rows(cohort, "label"), "label")
    atomic_write_text(os.path.join(output_dir, "table1.md"), table1)
    atomic_write_text(os.path.join(output_dir, "report.md"), report_markdown(datalist, metrics, table1))
    print(metrics_markdown(metrics), flush=True)
    return metrics


def _fold_results(
    datalist: Dict[str, Any],
    fold_predictor: Callable[[int], Callable[[List[Dict[str, Any]]], np.ndarray]],
    recalibration: str,
    optimistic: bool,
) -> Dict[str, Any]:
    """Every fold model on its inner validation (cut-off, Platt parameters), its outer fold and the test set:
    {rows (one per prediction), per_fold, per_fold_test, paper (the papers' cut-offs), cutoffs, test_probs, raw
    (unscaled probabilities), platt}."""
    out: Dict[str, Any] = {
        "rows": [],
        "per_fold": [],
        "per_fold_test": [],
        "cutoffs": {},
        "test_probs": [],
        "platt": {},
    }
    out.update(paper={"cv": [], "test": []}, raw={"cv": [], "test": []})
    pooled_inner_y: List[int] = []
    pooled_inner_p: List[float] = []
    test = datalist["test"]
    for k in range(datalist["settings"]["folds"]):
        model = fold_predictor(k)
        inner, outer = fold_data(datalist, k, "inner_val"), fold_data(datalist, k, "outer")
        p_inner = model(inner)
        y_inner = [d["label"] for d in inner]
        run = model
        if recalibration == "platt":
            params = out["platt"][str(k)] = list(fit_platt(y_inner, p_inner))
            p_inner = apply_platt(p_inner, params)
            run = _platt_scaled(model, params, calls := [])
        out["cutoffs"][str(k)] = cut = youden_cutoff(y_inner, p_inner)
        pooled_inner_y += y_inner
        pooled_inner_p += p_inner.tolist()
        p_outer = run(outer)
        y_outer = [d["label"] for d in outer]
        out["per_fold"].append(binary_metrics(y_outer, p_outer, cut))
        if optimistic:
            out["paper"]["cv"].append(binary_metrics(y_outer, p_outer, youden_cutoff(y_outer, p_outer)))
        out["rows"] += [_row(d, "cv", k, p, cut) for d, p in zip(outer, p_outer)]
        if test:
            p_test = run(test)
            out["test_probs"].append(p_test)
            y_test = [d["label"] for d in test]
            out["per_fold_test"].append(binary_metrics(y_test, p_test, cut))
            if optimistic:
                out["paper"]["test"].append(binary_metrics(y_test, p_test, youden_cutoff(y_test, p_test)))
            out["rows"] += [_row(d, "test", k, p, cut) for d, p in zip(test, p_test)]
        if recalibration == "platt":  # the unscaled outer-fold (and test) probabilities, for "before"
            out["raw"]["cv"].append(calls[0])
            out["raw"]["test"] += calls[1:]
    out["cutoffs"]["ensemble"] = youden_cutoff(pooled_inner_y, pooled_inner_p)
    if out["platt"]:
        out["cutoffs"]["platt"] = out["platt"]
    return out


def _metrics(datalist: Dict[str, Any], folds: Dict[str, Any], ckpt_dir: str, optimistic: bool) -> Dict[str, Any]:
    """The cross-validation and test-set metrics of :func:`_fold_results` (the ensemble rows added to its rows), the
    protocol label, the papers' optimistic cut-offs when asked, the uncalibrated figures after Platt scaling."""
    rows, cutoffs, test = folds["rows"], folds["cutoffs"], datalist["test"]
    cv_y = [r["label"] for r in rows if r["set"] == "cv"]
    cv_p = [r["probability"] for r in rows if r["set"] == "cv"]
    cv_pred = [r["prediction"] for r in rows if r["set"] == "cv"]
    metrics: Dict[str, Any] = {
        "label": datalist["settings"]["label"],
        "cv": {
            "folds": folds["per_fold"],
            "summary": mean_sd(folds["per_fold"]),
            "pooled_roc_auc": float(roc_auc_score(cv_y, cv_p)),
            "pooled": pooled_metrics(cv_y, cv_p, cv_pred),
        },
        "cutoffs": cutoffs,
        "bootstrap": {"resamples": BOOTSTRAP, "seed": 0, "stratified_by": "label", "unit": "patient"},
    }
    test_y = [d["label"] for d in test]
    mean_p = np.mean(folds["test_probs"], axis=0) if test else np.zeros(0)
    if test:
        rows += [_row(d, "test", "ensemble", p, cutoffs["ensemble"]) for d, p in zip(test, mean_p)]
        metrics["test"] = {
            "folds": folds["per_fold_test"],
            "summary": mean_sd(folds["per_fold_test"]),
            "ensemble": pooled_metrics(test_y, mean_p, (mean_p >= cutoffs["ensemble"]).astype(int)),
        }
    checkpoint_parts = validated_on(ckpt_dir, datalist["settings"]["folds"])
    if "outer" in checkpoint_parts:
        metrics["protocol"] = (
            f"OPTIMISTIC: the checkpoint of {checkpoint_parts.count('outer')} of {len(checkpoint_parts)} fold models "
            "was chosen on its reported outer fold (configs/experiments/optimistic.json); "
            "not an estimate for new patients"
        )
    if optimistic:
        paper = folds["paper"]
        metrics["optimistic"] = {"note": OPTIMISTIC_NOTE, "cv": {"folds": paper["cv"], "summary": mean_sd(paper["cv"])}}
        if test:
            metrics["optimistic"]["test"] = {
                "folds": paper["test"],
                "summary": mean_sd(paper["test"]),
                "ensemble": binary_metrics(test_y, mean_p, youden_cutoff(test_y, mean_p)),
            }
    if folds["platt"]:
        metrics["recalibration"] = "platt, per fold, fitted on its inner-validation patients"
        raw_cv = np.concatenate(folds["raw"]["cv"])
        metrics["cv"]["pooled_uncalibrated"] = {
            "roc_auc": float(roc_auc_score(cv_y, raw_cv)),
            "calibration": calibration(cv_y, raw_cv),
        }
        if test:
            raw_mean = np.mean(folds["raw"]["test"], axis=0)
            metrics["test"]["ensemble_uncalibrated"] = {
                "roc_auc": float(roc_auc_score(test_y, raw_mean)),
                "calibration": calibration(test_y, raw_mean),
            }
    return metrics


SUBGROUPS = ("location", "side", "modality")


def modality(item: Dict[str, Any]) -> str:
    """'CT', 'MR' or 'CT+MR': the imaging a patient has in the datalist (non-empty sequence entries)."""
    found = [name.upper() for name, keys in MODALITY_SEQUENCES.items() if any(item.get(k) for k in keys)]
    return "+".join(found) or "none"


def subgroup_metrics(rows: List[Dict[str, Any]], items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """ROC-AUC with bootstrap 95% CI and n per occlusion site, per side and per imaging modality (only when the
    reported patients have more than one), for the pooled out-of-fold predictions and the test-set fold ensemble:
    {set: {variable: {level: {...}}}} (AUC null when a group holds one class)."""
    by_id = {d["patient_id"]: {**d, "modality": modality(d)} for d in items}
    out: Dict[str, Any] = {}
    for name, part in (
        ("cv_pooled", [r for r in rows if r["set"] == "cv"]),
        ("test_ensemble", [r for r in rows if r["fold"] == "ensemble"]),
    ):
        if not part:
            continue
        out[name] = {}
        for var in SUBGROUPS:
            levels = sorted({str(by_id[r["patient_id"]].get(var)) for r in part})
            if var == "modality" and len(levels) == 1:
                continue
            out[name][var] = {}
            for level in levels:
                group = [r for r in part if str(by_id[r["patient_id"]].get(var)) == level]
                y = [r["label"] for r in group]
                p = [r["probability"] for r in group]
                both = 0 < sum(y) < len(y)
                out[name][var][level] = {
                    "n": len(group),
                    "positives": int(sum(y)),
                    "roc_auc": float(roc_auc_score(y, p)) if both else None,
                    "ci95": list(bootstrap_ci(y, p, n=BOOTSTRAP)) if both else None,
                }
    return out


def _platt_scaled(model: Callable, params: List[float], raw: List[np.ndarray]) -> Callable:
    """``model`` followed by Platt scaling; the unscaled probabilities of each call are appended to ``raw``."""

    def run(part: List[Dict[str, Any]]) -> np.ndarray:
        p = model(part)
        raw.append(p)
        return apply_platt(p, params)

    return run


def _row(item: Dict[str, Any], part: str, fold: Any, prob: float, cut: float) -> Dict[str, Any]:
    return {
        "patient_id": item["patient_id"],
        "set": part,
        "fold": fold,
        "probability": round(float(prob), 6),
        "label": item["label"],
        "cutoff": round(cut, 6),
        "prediction": int(prob >= cut),
    }


def _write_outputs(
    rows: List[Dict[str, Any]], metrics: Dict[str, Any], cutoffs: Dict[str, float], ckpt_dir: str, output_dir: str
) -> None:
    atomic_write_csv(os.path.join(output_dir, "predictions.csv"), rows)
    atomic_write_json(os.path.join(output_dir, "metrics.json"), metrics)
    atomic_write_text(os.path.join(output_dir, "metrics.md"), metrics_markdown(metrics))
    atomic_write_json(os.path.join(ckpt_dir, "cutoffs.json"), cutoffs)
    atomic_write(os.path.join(output_dir, "roc.png"), lambda tmp: plot_roc(rows, metrics, tmp), suffix=".png")
    sets = prediction_sets(rows)
    curves = {name: net_benefit(y, p, THRESHOLDS) for name, (y, p) in sets.items()}
    buf = io.StringIO()
    buf.write("set,threshold,model,treat_all,treat_none\n")
    for name, c in curves.items():
        for i, t in enumerate(c["threshold"]):
            buf.write(f"{name},{t:.2f},{c['model'][i]:.6f},{c['treat_all'][i]:.6f},{c['treat_none'][i]:.1f}\n")
    atomic_write_text(os.path.join(output_dir, "decision_curve.csv"), buf.getvalue())
    atomic_write(os.path.join(output_dir, "decision_curve.png"), lambda tmp: plot_decision(curves, tmp), suffix=".png")
    atomic_write(os.path.join(output_dir, "calibration.png"), lambda tmp: plot_calibration(sets, tmp), suffix=".png")


THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)


def prediction_sets(rows: List[Dict[str, Any]]) -> Dict[str, tuple]:
    """(labels, probabilities) of the pooled out-of-fold predictions and of the test-set fold ensemble."""
    sets = {
        "cv_pooled": [r for r in rows if r["set"] == "cv"],
        "test_ensemble": [r for r in rows if r["fold"] == "ensemble"],
    }
    return {
        k: (np.array([r["label"] for r in v]), np.array([r["probability"] for r in v])) for k, v in sets.items() if v
    }


def plot_calibration(sets: Dict[str, tuple], path: str, bins: int = 10) -> None:
    """Reliability diagram: observed outcome rate against mean prediction in equal-width bins, per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in sets.items():
        which = np.minimum((p * bins).astype(int), bins - 1)
        used = [b for b in range(bins) if (which == b).any()]
        mean_p = [p[which == b].mean() for b in used]
        rate = [y[which == b].mean() for b in used]
        cal = calibration(y, p)
        ax.plot(mean_p, rate, marker="o", label=f"{name} (slope {cal['slope']:.2f}, ECE {cal['ece']:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    ax.set(xlabel="mean predicted probability", ylabel="observed outcome rate", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_decision(curves: Dict[str, Dict[str, list]], path: str) -> None:
    """Decision curve: net benefit of the model per set, of treating all and of treating none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot(c["threshold"], c["model"], label=f"model, {name}")
        ax.plot(c["threshold"], c["treat_all"], ls=":", label=f"treat all, {name}")
    ax.axhline(0, color="black", lw=0.8, label="treat none")
    low = min(min(c["model"]) for c in curves.values())
    ax.set(xlabel="threshold probability", ylabel="net benefit", ylim=(max(low, -0.1) - 0.02, None))
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_roc(rows: List[Dict[str, Any]], metrics: Dict[str, Any], path: str) -> None:
    """ROC curves (as the paper's Fig 4): each outer fold, their mean +/- SD, the test-set fold ensemble."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    folds = sorted({r["fold"] for r in rows if r["set"] == "cv"})
    grid, curves = np.linspace(0, 1, 101), []
    for k in folds:
        part = [r for r in rows if r["set"] == "cv" and r["fold"] == k]
        fpr, tpr, _ = roc_curve([r["label"] for r in part], [r["probability"] for r in part])
        curves.append(np.interp(grid, fpr, tpr))
        ax.plot(fpr, tpr, lw=1, alpha=0.5, label=f"fold {k} (AUC {metrics['cv']['folds'][int(k)]['roc_auc']:.2f})")
    mean, sd = np.mean(curves, axis=0), np.std(curves, axis=0)
    summary = metrics["cv"]["summary"]["roc_auc"]
    ax.plot(
        grid, mean, lw=2, color="tab:blue", label=f"mean of folds (AUC {summary['mean']:.2f} +/- {summary['sd']:.2f})"
    )
    ax.fill_between(grid, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1), color="tab:blue", alpha=0.15)
    ens = [r for r in rows if r["fold"] == "ensemble"]
    if ens:
        fpr, tpr, _ = roc_curve([r["label"] for r in ens], [r["probability"] for r in ens])
        auc = metrics["test"]["ensemble"]["roc_auc"]
        ax.plot(fpr, tpr, lw=2, color="black", label=f"test, fold ensemble (AUC {auc:.2f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    title = ("OPTIMISTIC " if metrics.get("protocol") else "") + f"{metrics['label']}: CV AUC "
    title += f"{metrics['cv']['summary']['roc_auc']['mean']:.2f}"
    if metrics.get("bayes_auc") is not None:
        title += f", Bayes AUC {metrics['bayes_auc']:.2f}"
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def metrics_markdown(metrics: Dict[str, Any]) -> str:
    """Paper-style table: each metric as mean (SD) over folds; the test ensemble and the pooled out-of-fold
    predictions with bootstrap 95% CIs; calibration lines."""
    head = "| set | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS) + "\n"
    lines = [f"Label: {metrics['label']}. Cut-offs chosen on inner validation (Youden).\n", head]
    if metrics.get("protocol"):
        lines.insert(0, f"**{metrics['protocol']}.**\n\n")
    lines.append(_summary_line("CV, outer folds", metrics["cv"]["summary"]))
    if "test" in metrics:
        lines.append(_summary_line("test, per-fold models", metrics["test"]["summary"]))
        lines.append(_ci_line("test, fold ensemble", metrics["test"]["ensemble"]))
    paper = metrics.get("optimistic")
    if paper:
        lines.append(_summary_line("CV, outer folds, OPTIMISTIC cut-offs", paper["cv"]["summary"]))
        if "test" in paper:
            lines.append(_summary_line("test, per-fold models, OPTIMISTIC cut-offs", paper["test"]["summary"]))
            lines.append(_ci_line("test, fold ensemble, OPTIMISTIC cut-off", paper["test"]["ensemble"]))
    if "pooled" in metrics["cv"]:
        lines.append(_ci_line("CV, pooled out-of-fold", metrics["cv"]["pooled"]))
    lines.append(f"\nPooled CV ROC-AUC: {metrics['cv']['pooled_roc_auc']:.4f}\n")
    if "recalibration" in metrics:
        before = metrics["cv"]["pooled_uncalibrated"]
        lines.append(
            f"Recalibration: {metrics['recalibration']}. Before it: pooled CV ROC-AUC "
            f"{before['roc_auc']:.4f}, calibration slope {before['calibration']['slope']:.2f}\n"
        )
    for name, part in (
        ("CV pooled", metrics["cv"].get("pooled")),
        ("test ensemble", metrics.get("test", {}).get("ensemble")),
    ):
        if part and "calibration" in part:
            c = part["calibration"]
            lines.append(
                f"Calibration, {name}: Brier {c['brier']:.3f}, ECE {c['ece']:.3f}, slope {c['slope']:.2f}, "
                f"intercept {c['intercept']:.2f}\n"
            )
    for name, variables in metrics.get("subgroups", {}).items():
        cells = []
        for var, levels in variables.items():
            for level, g in levels.items():
                auc = "n/a" if g["roc_auc"] is None else f"{g['roc_auc']:.2f} ({g['ci95'][0]:.2f}-{g['ci95'][1]:.2f})"
                cells.append(f"{var} {level} (n {g['n']}): {auc}")
        lines.append(f"Subgroup ROC-AUC (95% CI), {name}: " + "; ".join(cells) + "\n")
    if paper:
        lines.append(f"{paper['note']}.\n")
    if metrics.get("excluded"):
        lines.append(f"Excluded by the input checks: {len(metrics['excluded'])} patient(s) ({EXCLUSIONS_FILE})\n")
    if metrics.get("bayes_auc") is not None:
        lines.append(f"Bayes ROC-AUC of the cohort (true probabilities): {metrics['bayes_auc']:.4f}\n")
    same = metrics.get("bayes_same_patients", {})
    if same:
        cells = [f"{name.replace('_', ' ')} {value:.4f}" for name, value in same.items()]
        lines.append("Bayes ROC-AUC on the reported patients: " + ", ".join(cells) + "\n")
    return "".join(lines)


def bayes_on_reported(manifest: Dict[str, Any], rows: List[Dict[str, Any]], label: str) -> Dict[str, float]:
    """The demo's Bayes ROC-AUC on exactly the reported patients and folds (the true probabilities in the
    manifest as the score): ``cv_fold_mean``, ``cv_pooled`` and ``test``. A cohort-wide Bayes value includes the
    test set and averages over other patients; this is the like-for-like reference. Empty without per-patient
    truth for every reported patient."""
    key = {"fpe": "probability", "rlvo": "rlvo_probability"}.get(label)
    truth = manifest.get("truth", {})
    if key is None or any(key not in truth.get(r["patient_id"], {}) for r in rows):
        return {}
    out: Dict[str, float] = {}
    cv = [r for r in rows if r["set"] == "cv"]
    folds = sorted({r["fold"] for r in cv})
    per_fold = []
    for fold in folds:
        part = [r for r in cv if r["fold"] == fold]
        if len({r["label"] for r in part}) == 2:
            per_fold.append(roc_auc_score([r["label"] for r in part], [truth[r["patient_id"]][key] for r in part]))
    if per_fold:
        out["cv_fold_mean"] = float(np.mean(per_fold))
        out["cv_pooled"] = float(roc_auc_score([r["label"] for r in cv], [truth[r["patient_id"]][key] for r in cv]))
    test = {r["patient_id"]: r["label"] for r in rows if r["set"] == "test"}
    if len(set(test.values())) == 2:
        out["test"] = float(roc_auc_score(list(test.values()), [truth[p][key] for p in test]))
    return out


def report_markdown(datalist: Dict[str, Any], metrics: Dict[str, Any], table1: str) -> str:
    """One report to paste from: label rule, split protocol, where cut-offs and calibration were fitted, Table 1,
    discrimination with CIs, calibration, decision curve and subgroups (figures linked)."""
    settings = datalist.get("settings", {})
    n_test = len(datalist["test"])
    recal = metrics.get("recalibration", "none (the fold models' own probabilities)")
    if settings.get("test_fraction") is not None:
        development = "the patients outside the test set"
        test = f"a random hold-out of {settings['test_fraction']} of the patients stratified by outcome ({n_test})"
    else:
        development = f"the patients before {settings.get('test_from', '?')}"
        test = f"{n_test} patients from {settings.get('test_from', '?')} on as the prospective test set"
    checkpoint_line = (
        "- Checkpoint (early stopping), Youden cut-off and recalibration were fitted on each fold's inner validation "
        "only; outer folds and the test set were only predicted. Test set: the mean probability of the fold models at "
        "the cut-off from the pooled inner-validation predictions."
    )
    if metrics.get("protocol"):
        checkpoint_line = f"- **{metrics['protocol']}.** Cut-offs and recalibration: inner validation."
    lines = [
        "# Evaluation report",
        "",
        f"- Label: `{metrics['label']}` (derived from the cohort table by the rule in docs/README.md, Data).",
        f"- Split: {settings.get('folds', '?')} stratified outer folds of {development} (one row per patient, no "
        f"patient in two folds), seed {settings.get('seed', '?')}; per fold an inner validation of "
        f"{settings.get('inner_val', '?')} of its training portion; test set: {test}.",
        checkpoint_line,
        f"- Recalibration: {recal}.",
        f"- 95% CIs: {BOOTSTRAP} patient-level bootstrap resamples stratified by outcome (seed 0), percentile.",
        "",
        "## Table 1",
        "",
        table1,
        "## Discrimination and calibration",
        "",
        metrics_markdown(metrics),
        "Figures: [ROC curves](roc.png), [reliability diagram](calibration.png), "
        "[decision curve](decision_curve.png) ([net benefit table](decision_curve.csv)); per-patient predictions "
        "in [predictions.csv](predictions.csv).",
        "",
    ]
    return "\n".join(lines + exclusions_markdown(metrics.get("excluded", [])))


def exclusions_markdown(excluded: Sequence[Dict[str, str]]) -> List[str]:
    """The report's section on the patients refused by the input checks (one line each, with the reason)."""
    if not excluded:
        return ["## Exclusions", "", "No patient was refused by the input checks.", ""]
    lines = [
        "## Exclusions",
        "",
        f"{len(excluded)} patient(s) refused by the input checks and left out of every "
        f"fold and the test set ([{EXCLUSIONS_FILE}]({EXCLUSIONS_FILE})):",
        "",
    ]
    return lines + [f"- {e['patient_id']}: {e['reason']}" for e in excluded] + [""]


def _ci_line(name: str, part: Dict[str, Any]) -> str:
    """'0.8300 (95% CI 0.78-0.88)' cells (CIs omitted for runs written before they existed)."""
    ci = part.get("ci95", {})
    cells = [f"{part[m]:.4f}" + (f" (95% CI {ci[m][0]:.2f}-{ci[m][1]:.2f})" if m in ci else "") for m in METRICS]
    return f"| {name} | " + " | ".join(cells) + " |\n"


def _summary_line(name: str, summary: Dict[str, Dict[str, float]]) -> str:
    return f"| {name} | " + " | ".join(f"{summary[m]['mean']:.4f} ({summary[m]['sd']:.4f})" for m in METRICS) + " |\n"


def read_manifest(dataset_dir: str) -> Dict[str, Any] | None:
    """The demo cohort's manifest (with ``bayes_auc``) if ``dataset_dir`` holds one."""
    path = os.path.join(dataset_dir, "manifest.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
