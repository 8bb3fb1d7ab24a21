"""How much of the clot the main job's input holds, and what learning the outcome from it costs.

``python benchmarks/clot_measurements.py --dataset_dir DIR`` (a demo cohort with manifest.json, datalist.json and
the ``DIR/replica_cache.npz`` that ``benchmarks/replica_ablation.py`` writes: the bundle's own mirrored vessel box
of every patient, NCCT, CTA and their mirrors windowed to [0, 1]).

Fixed measurements, no learning: among the voxels whose mirror is a bright vessel (mirrored CTA > 0.3, i.e. 120 HU;
bone excluded as in VesselMaskNet), for each cut-off r of the iodine ratio CTA / mirrored CTA (0.1 ... 0.9, a clot
fills far less than its contralateral vessel, a poorly collateralised distal vessel somewhat less): log voxel count,
log of the summed iodine deficit (mirror minus CTA), log of the summed NCCT excess (NCCT minus mirror), mean NCCT
asymmetry and mean CTA. 45 numbers per patient. Prints

1. how well they determine each hidden variable: cross-validated R^2 of a ridge regression from them (and the
   occlusion site) to log clot length, density, perviousness and collateral grade;
2. a logistic regression on them + site, age, IVT and NIHSS (the main job's clinical columns), per fold on that fold's
   training rows without the inner validation (as the networks and ``oracle_features.py``), scored on the outer fold;
   and the same on only four readings, as the thrombus literature defines them and ClotReadingNet reads them
   (:func:`literature_measurements`);
3. the same logistic regression on the four hidden variables *predicted* from the 45 numbers by ridge regressions
   fitted with the truth on the training rows (an upper reference, not a model: no cohort has the truth), and the
   oracle on the true variables.

(2) against (3) separates what reading the image costs from what estimating many coefficients from a few hundred
labels costs.
"""

from __future__ import annotations

import json
import os
import sys

import fire
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.data.split import load_datalist  # noqa: E402
from scripts.networks.clot_readings import clot_readings  # noqa: E402

CUTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
HIDDEN = ("clot_length_mm", "clot_density_hu", "clot_perviousness", "collaterals")


def _mirror_vessels(volume: np.ndarray) -> tuple:
    """(4, H, W, D) -> (voxels whose mirror is a bright vessel, bone excluded; iodine ratio CTA / mirrored CTA)."""
    n, c, mn, mc = volume
    return (mc > 0.3) & (n < 0.95) & (mn < 0.95), c / np.maximum(mc, 0.05)


def measurements(volume: np.ndarray) -> list:
    """(4, H, W, D) mirrored vessel box (NCCT, CTA, mirrored NCCT, mirrored CTA in [0, 1]) -> 45 fixed numbers."""
    n, c, mn, mc = volume
    vessel, ratio = _mirror_vessels(volume)
    row = []
    for cut in CUTS:
        sel = vessel & (ratio < cut)
        any_ = bool(sel.any())
        row += [
            np.log1p(sel.sum()),
            np.log1p(np.clip(mc - c, 0, None)[sel].sum()),
            np.log1p(np.clip(n - mn, 0, None)[sel].sum()),
            float((n - mn)[sel].mean()) if any_ else 0.0,
            float(c[sel].mean()) if any_ else 0.0,
        ]
    return row


def literature_measurements(volume: np.ndarray) -> list:
    """(4, H, W, D) mirrored vessel box -> the literature's four readings of the main job's ClotReadingNet
    (:func:`scripts.networks.clot_readings.clot_readings`), here on the replica's resampled cache, not the main job's
    grid (``benchmarks/clot_readings_ablation.py`` reads them on it)."""
    return clot_readings(torch.from_numpy(np.ascontiguousarray(volume))[None])[0].tolist()


def _ridge() -> object:
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 12)))


def _logistic() -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def main(dataset_dir: str) -> None:
    """Print the three analyses for the cohort in ``dataset_dir``."""
    cache = os.path.join(dataset_dir, "replica_cache.npz")
    if not os.path.isfile(cache):
        raise SystemExit(f"{cache}: not found; run benchmarks/replica_ablation.py --dataset_dir {dataset_dir} first")
    datalist = load_datalist(os.path.join(dataset_dir, "datalist.json"))
    with open(os.path.join(dataset_dir, "manifest.json")) as f:
        truth = json.load(f)["truth"]
    items = datalist["training"] + datalist["test"]  # the order of the replica's cache
    volumes = np.load(cache)["X"]
    x = np.array([measurements(v.astype(np.float32)) for v in volumes])
    four = np.array([literature_measurements(v.astype(np.float32)) for v in volumes])
    hidden = np.array([[truth[it["patient_id"]][k] for k in HIDDEN] for it in items], float)
    hidden[:, 0] = np.log(hidden[:, 0])
    site = np.array([[it["location"] == s for s in ("ICA", "M2")] for it in items], float)
    clinical = np.array([[it["age"], it["ivt"], it["nihss"]] for it in items], float)
    y = np.array([it["label"] for it in items])
    fold = np.array([it.get("fold", -1) for it in items])
    ids = [it["patient_id"] for it in items]
    image = np.column_stack([x, site])
    labelled = fold >= 0
    for j, name in enumerate(("log clot length", "clot density", "perviousness", "collateral grade")):
        predicted = cross_val_predict(_ridge(), image[labelled], hidden[labelled, j], cv=5)
        r2 = 1 - np.var(hidden[labelled, j] - predicted) / np.var(hidden[labelled, j])
        print(f"{name}: cross-validated R^2 {r2:.3f} from the 45 measurements + site")
    fixed = {  # design matrices of every patient; the two-stage reference is fitted per fold below
        "logistic regression on the 45 measurements + site, age, IVT, NIHSS": np.column_stack([x, site, clinical]),
        "logistic regression on the 4 literature readings (the main job's) + site, age, IVT, NIHSS": np.column_stack(
            [four, site, clinical]
        ),
        "the same on the 4 hidden variables predicted from the 45 (ridge fitted with the truth)": None,
        "oracle: the true hidden variables + site, age, IVT": np.column_stack([hidden, site, clinical[:, :2]]),
    }

    def two_stage(tr: np.ndarray, te: np.ndarray) -> tuple:
        fitted = [cross_val_predict(_ridge(), image[tr], hidden[tr, j], cv=5) for j in range(4)]
        predicted = [_ridge().fit(image[tr], hidden[tr, j]).predict(image[te]) for j in range(4)]
        return (
            np.column_stack(fitted + [site[tr], clinical[tr, :2]]),
            np.column_stack(predicted + [site[te], clinical[te, :2]]),
        )

    for name, design in fixed.items():
        scores, pooled = [], np.zeros(len(y))
        for k in range(datalist["settings"]["folds"]):
            inner = set(datalist["inner_validation"][str(k)])
            train = np.where(labelled & (fold != k) & np.array([pid not in inner for pid in ids]))[0]
            outer = np.where(fold == k)[0]
            a, b = two_stage(train, outer) if design is None else (design[train], design[outer])
            pooled[outer] = _logistic().fit(a, y[train]).decision_function(b)
            scores.append(roc_auc_score(y[outer], pooled[outer]))
        print(
            f"{name}: CV ROC-AUC {np.mean(scores):.3f} ({np.std(scores, ddof=1):.3f}), folds "
            f"{np.round(scores, 3).tolist()}, pooled {roc_auc_score(y[labelled], pooled[labelled]):.3f}"
        )


if __name__ == "__main__":
    fire.Fire(main)
