"""Clinical-only baseline: logistic regression on the cohort table, same folds and protocol as the networks.

``python -m monai.bundle run clinical_baseline --config_file "['configs/train.json',
'configs/experiments/clinical_demo.json','configs/experiments/clinical_baseline.json']"`` (or
``python -m scripts.evaluation.clinical_baseline --datalist_file D``).
The reference any image or multimodal claim must beat.

Features: the config's ``clinical_columns`` (numeric, or categories) plus occlusion site and side, read with
:func:`scripts.data.clinical.raw_clinical` (blank = missing). Per outer fold, on its training portion only:
median imputation with missing indicators and standardisation for numbers, one-hot for categories,
L2-regularised logistic regression with C chosen by 5-fold stratified cross-validated ROC-AUC (scikit-learn).
Cut-offs from inner validation, the outer fold reported (:func:`scripts.evaluation.evaluate.evaluate_predictions`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict

import fire
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scripts.data.clinical import ColumnSpec, raw_clinical
from scripts.data.io import atomic_write_json
from scripts.data.split import fold_data
from scripts.evaluation.evaluate import evaluate_predictions

logger = logging.getLogger(__name__)
SITE_SIDE: Dict[str, ColumnSpec] = {"location": ["ICA", "M1", "M2", "M3", "ACA", "PCA", "BA", "VA"], "side": ["L", "R"]}


def clinical_model(columns: Dict[str, ColumnSpec], seed: int = 0, inner_folds: int = 5) -> GridSearchCV:
    """Imputation, scaling / one-hot and logistic regression, C tuned by inner cross-validation."""
    numeric = [i for i, spec in enumerate(columns.values()) if spec == "numeric"]
    categorical = [i for i, spec in enumerate(columns.values()) if spec != "numeric"]
    prepare = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
                categorical,
            ),
        ]
    )
    pipeline = Pipeline([("prepare", prepare), ("model", LogisticRegression(max_iter=2000))])
    cv = StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed)
    return GridSearchCV(pipeline, {"model__C": [0.01, 0.1, 1.0, 10.0]}, scoring="roc_auc", cv=cv, n_jobs=1)


def evaluate_clinical(
    datalist: Dict[str, Any],
    clinical_columns: Dict[str, ColumnSpec],
    output_dir: str,
    ckpt_dir: str,
    manifest: Dict[str, Any] | None = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """Fit the clinical-only model per fold on its training portion and evaluate it like the networks.

    Args:
        datalist: the split.
        clinical_columns: {column: "numeric" or its categories}.
        output_dir: where the evaluation's outputs go.
        ckpt_dir: where the fold models' cut-offs go.
        manifest: the demo's truth (Bayes ROC-AUC), if any.
        seed: the seed of the inner tuning.

    Returns:
        the metrics dict (as ``metrics.json``).
    """
    columns = {**dict(clinical_columns), **{k: v for k, v in SITE_SIDE.items() if k not in clinical_columns}}
    items = datalist["training"] + datalist["test"]
    x = {d["patient_id"]: raw_clinical(d, columns) for d in items}
    chosen: Dict[str, Any] = {}

    def fold_predictor(k: int):
        train = fold_data(datalist, k, "train")
        search = clinical_model(columns, seed)
        search.fit(np.stack([x[d["patient_id"]] for d in train]), [d["label"] for d in train])
        chosen[str(k)] = {"C": search.best_params_["model__C"], "cv_auc": search.best_score_}
        logger.info("fold %d: C %s (inner CV ROC-AUC %.3f)", k, search.best_params_["model__C"], search.best_score_)
        return lambda part: search.predict_proba(np.stack([x[d["patient_id"]] for d in part]))[:, 1]

    os.makedirs(output_dir, exist_ok=True)
    os.makedirs(ckpt_dir, exist_ok=True)
    metrics = evaluate_predictions(datalist, fold_predictor, ckpt_dir, output_dir, manifest)
    atomic_write_json(os.path.join(output_dir, "clinical_models.json"), {"columns": list(columns), "folds": chosen})
    return metrics


def main(
    datalist_file: str,
    output_dir: str = "eval/clinical",
    ckpt_dir: str = "models/clinical",
    label: str | None = None,
    config_file: str = "configs/experiments/clinical_demo.json",
) -> None:
    """CLI: evaluate the clinical-only baseline on a recorded datalist (columns from ``config_file``)."""
    import json

    from scripts.data.split import load_datalist, with_label
    from scripts.evaluation.evaluate import read_manifest

    with open(config_file) as f:
        columns = json.load(f)["clinical_columns"]
    datalist = with_label(load_datalist(datalist_file), label)
    manifest = read_manifest(os.path.dirname(os.path.abspath(datalist_file)))
    evaluate_clinical(datalist, columns, output_dir, ckpt_dir, manifest)


if __name__ == "__main__":
    fire.Fire(main)
