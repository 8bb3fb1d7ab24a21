"""What each part of the main job's ClotReadingNet is worth on a demo cohort, in a minute once the inputs are cached.

``python benchmarks/clot_readings_ablation.py --dataset_dir DIR`` (a demo cohort with manifest.json and the
datalist.json that ``python -m scripts.demo`` writes).

The inputs are the bundle's own: every datalist patient through the parsed ``validate#preprocessing`` of
train.json + demo.json + vessel.json + clot_readings.json, cached once in ``DIR/clot_readings_cache.npz`` (the crop's
own grid, 67 x 46 x 43 at 2 mm), and once more resampled to the 66 x 45 x 40 grid of 0.10.0 in
``DIR/clot_readings_cache_resampled.npz``. The model is the one the bundle trains: a logistic regression on the
readings + site, age, IVT, NIHSS (scikit-learn, standardised, at its maximum-likelihood fit; the bundle's full-batch
head reproduces it within about 0.003), fitted per fold on that fold's training rows without the inner validation
and scored on the outer fold. Prints one line per variant: CV ROC-AUC mean (SD) over the folds, pooled out-of-fold
ROC-AUC, and the correlation of each reading with its hidden variable (log clot length, density, perviousness,
collateral grade), then the oracle on the true hidden variables and the Bayes ROC-AUC of the same folds.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable, Dict, List

import fire
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.replica_ablation import cached_inputs  # noqa: E402
from scripts.data.split import load_datalist  # noqa: E402
from scripts.networks.clot_readings import clot_readings  # noqa: E402

CONFIGS = ["configs/train.json", "configs/demo.json", "configs/vessel.json", "configs/clot_readings.json"]
GRIDS = {"": {}, "_resampled": {"spatial_size": [66, 45], "num_slices": 40}}  # this release's grid, 0.10.0's
HIDDEN = ("clot_length_mm", "clot_density_hu", "clot_perviousness", "collaterals")


def cta_ratio_readings(x: torch.Tensor) -> torch.Tensor:
    """0.10.0's readings: vessels where the mirrored CTA exceeds 120 HU, clot where CTA < 0.5 of the mirror's."""
    n, c, mn, mc = x.flatten(2).unbind(1)
    vessel = (mc > 0.3) & (n < 0.95) & (mn < 0.95)
    ratio = c / mc.clamp_min(0.05)
    clot = (vessel & (ratio < 0.5)).float()
    distal = (vessel & (ratio >= 0.5) & (ratio < 0.95)).float() * mc
    total, weight = clot.sum(1).clamp_min(1e-6), distal.sum(1).clamp_min(1e-6)
    return torch.stack(
        [
            torch.log1p(clot.sum(1)),
            (clot * (n - mn)).sum(1) / total,
            (clot * (4 * c - n)).sum(1) / total,  # CTA - NCCT in HU / 100 for the [0, 400] and [0, 100] windows
            torch.where(distal.sum(1) > 0, (distal * ratio).sum(1) / weight, torch.ones_like(weight)),
        ],
        1,
    )


def main(dataset_dir: str) -> None:
    """Print the ablation table of the cohort in ``dataset_dir``."""
    datalist = load_datalist(os.path.join(dataset_dir, "datalist.json"))
    with open(os.path.join(dataset_dir, "manifest.json")) as f:
        truth = json.load(f)["truth"]
    inputs = {
        g: cached_inputs(dataset_dir, CONFIGS, GRIDS[g], f"clot_readings_cache{g}", "ablation_models") for g in GRIDS
    }
    items, y, fold = inputs[""]["items"], inputs[""]["y"], inputs[""]["fold"]
    ids = [it["patient_id"] for it in items]
    site = np.array([[it["location"] == s for s in ("ICA", "M2")] for it in items], float)
    clinical = np.column_stack([site, [[it["age"], it["ivt"], it["nihss"]] for it in items]])
    hidden = np.array([[truth[pid][k] for k in HIDDEN] for pid in ids], float)
    hidden[:, 0] = np.log(hidden[:, 0])

    def score(design: np.ndarray) -> str:
        scores, pooled = [], np.zeros(len(y))
        for k in range(datalist["settings"]["folds"]):
            inner = set(datalist["inner_validation"][str(k)])
            train = np.where((fold >= 0) & (fold != k) & np.array([pid not in inner for pid in ids]))[0]
            outer = np.where(fold == k)[0]
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(design[train], y[train])
            pooled[outer] = model.decision_function(design[outer])
            scores.append(roc_auc_score(y[outer], pooled[outer]))
        auc = roc_auc_score(y[fold >= 0], pooled[fold >= 0])
        return f"{np.mean(scores):.3f} ({np.std(scores, ddof=1):.3f}), pooled {auc:.3f}"

    def report(name: str, readings: np.ndarray, columns: List[int], with_clinical: bool = True) -> None:
        design = np.column_stack([readings[:, columns]] + ([clinical] if with_clinical else []))
        r = [np.corrcoef(readings[:, j], hidden[:, j])[0, 1] for j in range(4)]
        print(f"{name}: {score(design)}; readings vs truth r = {np.round(r, 2).tolist()}", flush=True)

    read: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"": clot_readings, "0.10.0": cta_ratio_readings}
    sets = {(grid, name): fn(inputs[grid]["X"]).numpy() for grid in GRIDS for name, fn in read.items()}
    main_job = sets[("", "")]
    report("the main job: 4 readings + site, age, IVT, NIHSS", main_job, [0, 1, 2, 3])
    report("4 readings only", main_job, [0, 1, 2, 3], with_clinical=False)
    print(f"site, age, IVT, NIHSS only: {score(clinical)}")
    for j, name in enumerate(("length", "density", "perviousness", "collaterals")):
        report(f"without the {name} reading", main_job, [i for i in range(4) if i != j])
    report("the same readings on 0.10.0's resampled grid", sets[("_resampled", "")], [0, 1, 2, 3])
    report("0.10.0's readings (CTA ratio < 0.5, mirror > 120 HU) on this grid", sets[("", "0.10.0")], [0, 1, 2, 3])
    report("0.10.0: its readings on its resampled grid", sets[("_resampled", "0.10.0")], [0, 1, 2, 3])
    x = inputs[""]["X"]
    for name, options in (
        (
            "relative to the patient's arterial enhancement",
            {"relative": True, "vessel_level": 0.57, "vessel_width": 0.29},
        ),
        ("mirror and NCCT compared within one voxel", {"tolerance": 2}),
        ("both", {"relative": True, "vessel_level": 0.57, "vessel_width": 0.29, "tolerance": 2}),
    ):
        report(f"readings {name}", clot_readings(x, **options).numpy(), [0, 1, 2, 3])
    print(f"oracle, the true hidden variables + site, age, IVT: {score(np.column_stack([hidden, clinical[:, :4]]))}")
    probability = np.array([truth[pid]["probability"] for pid in ids])
    bayes = [roc_auc_score(y[fold == k], probability[fold == k]) for k in range(datalist["settings"]["folds"])]
    print(f"Bayes, same folds: {np.mean(bayes):.3f}, pooled {roc_auc_score(y[fold >= 0], probability[fold >= 0]):.3f}")


if __name__ == "__main__":
    fire.Fire(main)
