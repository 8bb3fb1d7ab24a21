"""Radiomics baseline: first-order, shape and texture features in arterial-territory masks, then a
scikit-learn classifier tuned inside the training folds only, evaluated by the same protocol as the networks.

``python -m monai.bundle run radiomics --config_file "['configs/train.json','configs/experiments/radiomics.json']"``
(or ``python -m scripts.evaluation.radiomics --datalist_file D --output_dir eval/radiomics``).

Features, per sequence (scikit-image and scipy; pyradiomics does not install cleanly on current numpy), in
three regions of the image grid: the MCA territory on the occlusion side, the mirrored contralateral MCA
territory (arterial atlas of :mod:`scripts.data.anatomy`, resampled to the image grid, which must be MNI space as
preprocessing writes it) and the brain (MNI152 mask):

* first order: mean, SD, skewness, kurtosis, 10/50/90th percentiles, IQR, energy (mean square), entropy
  (32-bin histogram in the sequence's window);
* texture: grey-level co-occurrence matrix (32 levels in the window, distance 1, 4 in-plane angles, axial
  slices pooled, voxels outside the region dropped): contrast, dissimilarity, homogeneity, energy,
  correlation, ASM;
* shape of the region (volume in ml, surface area, sphericity). After registration to MNI an atlas region
  has nearly the same shape in every patient, so these carry little here; they matter for lesion masks.

Model selection per outer fold, on that fold's training portion only (its inner-validation patients and the
outer fold are never seen): regularised logistic regression (C) and a random forest (depth, leaf size) by
5-fold stratified cross-validated ROC-AUC (scikit-learn ``GridSearchCV``). The cut-off then comes from the
inner-validation patients, the outer fold is reported (:func:`scripts.evaluation.evaluate.evaluate_predictions`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Sequence, Tuple

import fire
import nibabel as nib
import numpy as np
from scipy import stats
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from scripts import BundleInputError
from scripts.data.anatomy import DEFAULT_ATLAS_DIR, TERRITORIES, grid_maps

logger = logging.getLogger(__name__)
# intensity windows for histogram and grey-level binning (CT in HU; MR after z-scoring is not needed here)
WINDOWS = {"ncct": (0.0, 80.0), "cta": (0.0, 150.0)}
LEVELS = 32
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")


def region_masks(shape: Tuple[int, ...], affine: np.ndarray, side: str, atlas_dir: str | None = DEFAULT_ATLAS_DIR):
    """Masks (affected MCA territory, contralateral MCA territory, brain) in an MNI-space image grid."""
    brain, territories = grid_maps(tuple(shape), np.asarray(affine, dtype=float).tobytes(), atlas_dir)
    right = side == "R"
    affected = territories == TERRITORIES["MCA_R" if right else "MCA_L"]
    contralateral = territories == TERRITORIES["MCA_L" if right else "MCA_R"]
    return {"affected": affected, "contralateral": contralateral, "brain": brain}


def first_order(values: np.ndarray, window: Tuple[float, float]) -> Dict[str, float]:
    """First-order statistics of the voxel values in a region."""
    p10, p25, p50, p75, p90 = np.percentile(values, [10, 25, 50, 75, 90])
    hist, _ = np.histogram(np.clip(values, *window), bins=LEVELS, range=window)
    prob = hist[hist > 0] / hist.sum()
    return {
        "mean": float(values.mean()),
        "sd": float(values.std()),
        "skewness": float(stats.skew(values)),
        "kurtosis": float(stats.kurtosis(values)),
        "p10": float(p10),
        "p50": float(p50),
        "p90": float(p90),
        "iqr": float(p75 - p25),
        "energy": float(np.mean(values.astype(np.float64) ** 2)),
        "entropy": float(-(prob * np.log2(prob)).sum()),
    }


def glcm_features(image: np.ndarray, mask: np.ndarray, window: Tuple[float, float]) -> Dict[str, float]:
    """GLCM texture of the region: axial slices (last axis) pooled, out-of-region voxels dropped."""
    from skimage.feature import graycomatrix, graycoprops

    low, high = window
    levels = np.floor((np.clip(image, low, high) - low) / (high - low + 1e-9) * (LEVELS - 1)).astype(np.uint8) + 1
    levels[~mask] = 0  # level 0 marks voxels outside the region; its row and column are dropped below
    total = np.zeros((LEVELS + 1, LEVELS + 1, 1, 4))
    for z in np.flatnonzero(mask.any(axis=(0, 1))):
        total += graycomatrix(levels[..., z], [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=LEVELS + 1)
    glcm = total[1:, 1:]
    if glcm.sum() == 0:
        return {f"glcm_{p}": float("nan") for p in GLCM_PROPS}
    glcm = glcm / glcm.sum(axis=(0, 1), keepdims=True).clip(min=1e-12)
    return {f"glcm_{p}": float(np.nanmean(graycoprops(glcm, p))) for p in GLCM_PROPS}


def shape_features(mask: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """Volume (ml), surface area (mm^2, marching cubes) and sphericity of a region."""
    from skimage.measure import marching_cubes, mesh_surface_area

    volume = float(mask.sum() * np.prod(spacing))
    verts, faces, _, _ = marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5, spacing=tuple(spacing))
    area = float(mesh_surface_area(verts, faces))
    return {
        "volume_ml": volume / 1000,
        "surface_mm2": area,
        "sphericity": float(np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area),
    }


def patient_features(item: Dict[str, Any], sequences: Sequence[str], atlas_dir: str | None = DEFAULT_ATLAS_DIR):
    """All features of one patient as a flat dict ``{sequence}_{region}_{feature}``."""
    out: Dict[str, float] = {}
    for seq in sequences:
        path = item.get(seq)
        if not path or not os.path.exists(path):
            raise BundleInputError(f"patient {item.get('patient_id')}: {seq} image not found ({path})")
        img = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        if data.ndim != 3:
            raise BundleInputError(f"{path}: expected a 3-D volume, got shape {data.shape}")
        masks = region_masks(data.shape, img.affine, item["side"], atlas_dir)
        window = WINDOWS.get(seq) or tuple(np.percentile(data[masks["brain"]], [1, 99]))
        spacing = img.header.get_zooms()[:3]
        for region, mask in masks.items():
            if mask.sum() < 10:
                raise BundleInputError(f"{path}: the {region} region has < 10 voxels; is the image in MNI space?")
            feats = {**first_order(data[mask], window), **glcm_features(data, mask, window)}
            feats.update(shape_features(mask, spacing))
            out.update({f"{seq}_{region}_{k}": v for k, v in feats.items()})
    return out


def feature_matrix(items: List[Dict[str, Any]], sequences: Sequence[str], atlas_dir: str | None = DEFAULT_ATLAS_DIR):
    """(patient ids, feature names, matrix (N, F))."""
    rows = [patient_features(item, sequences, atlas_dir) for item in items]
    names = list(rows[0])
    return [d["patient_id"] for d in items], names, np.array([[r[n] for n in names] for r in rows], dtype=float)


def model_search(seed: int = 0, inner_folds: int = 5) -> GridSearchCV:
    """Logistic regression (standardised, L2) and random forest, tuned by stratified CV ROC-AUC."""
    pipeline = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=5000))])
    grid = [
        {"model": [LogisticRegression(max_iter=5000)], "model__C": [0.01, 0.1, 1.0, 10.0]},
        {
            "scale": ["passthrough"],
            "model": [RandomForestClassifier(n_estimators=300, random_state=seed)],
            "model__max_depth": [3, None],
            "model__min_samples_leaf": [1, 5],
        },
    ]
    cv = StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed)
    return GridSearchCV(pipeline, grid, scoring="roc_auc", cv=cv, n_jobs=1)


def evaluate_radiomics(
    datalist: Dict[str, Any],
    sequences: Sequence[str],
    output_dir: str,
    ckpt_dir: str,
    manifest: Dict[str, Any] | None = None,
    atlas_dir: str | None = DEFAULT_ATLAS_DIR,
    seed: int = 0,
    inner_folds: int = 5,
) -> Dict[str, Any]:
    """Extract the radiomics features once, tune and fit per fold on its training portion, evaluate like the networks.

    Args:
        datalist: the split.
        sequences: the sequences to read features from.
        output_dir: where the evaluation's outputs go.
        ckpt_dir: where the fold models' cut-offs go.
        manifest: the demo's truth (Bayes ROC-AUC), if any.
        atlas_dir: the arterial-territory atlas (the regions).
        seed: the seed of the inner tuning.
        inner_folds: folds of the inner tuning.

    Returns:
        the metrics dict (as ``metrics.json``).
    """
    from scripts.data.split import fold_data
    from scripts.evaluation.evaluate import evaluate_predictions

    items = datalist["training"] + datalist["test"]
    ids, names, x = feature_matrix(items, sequences, atlas_dir)
    logger.info("radiomics: %d features from %d patients", len(names), len(ids))
    row = {pid: i for i, pid in enumerate(ids)}
    x = np.nan_to_num(x, nan=0.0)
    chosen: Dict[str, Any] = {}

    def fold_predictor(k: int):
        train = fold_data(datalist, k, "train")
        search = model_search(seed, inner_folds)
        search.fit(x[[row[d["patient_id"]] for d in train]], [d["label"] for d in train])
        chosen[str(k)] = {"params": {p: str(v) for p, v in search.best_params_.items()}, "cv_auc": search.best_score_}
        logger.info("fold %d: %s (inner CV ROC-AUC %.3f)", k, chosen[str(k)]["params"], search.best_score_)
        return lambda part: search.predict_proba(x[[row[d["patient_id"]] for d in part]])[:, 1]

    os.makedirs(output_dir, exist_ok=True)
    os.makedirs(ckpt_dir, exist_ok=True)
    metrics = evaluate_predictions(datalist, fold_predictor, ckpt_dir, output_dir, manifest)
    from scripts.data.io import atomic_write_json

    atomic_write_json(os.path.join(output_dir, "radiomics_models.json"), {"features": names, "folds": chosen})
    return metrics


def main(
    datalist_file: str,
    output_dir: str = "eval/radiomics",
    ckpt_dir: str = "models/radiomics",
    sequences: Sequence[str] = ("ncct", "cta"),
    label: str | None = None,
) -> None:
    """CLI: evaluate the radiomics baseline on a recorded datalist."""
    from scripts.data.split import load_datalist, with_label
    from scripts.evaluation.evaluate import read_manifest

    datalist = with_label(load_datalist(datalist_file), label)
    manifest = read_manifest(os.path.dirname(os.path.abspath(datalist_file)))
    evaluate_radiomics(datalist, list(sequences), output_dir, ckpt_dir, manifest)


if __name__ == "__main__":
    fire.Fire(main)
