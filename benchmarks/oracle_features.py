"""What a perfect measurement of the demo's hidden variables would score on the same folds.

``python benchmarks/oracle_features.py --dataset_dir DIR`` (a demo cohort with manifest.json and datalist.json):
a logistic regression on the true clot length (log), density, perviousness, collateral grade and occlusion site
(and, second line, also age and IVT: every term of the true logit), fitted per fold on that fold's training rows
(inner validation excluded, as the networks) and scored on the outer fold. Also prints the Bayes ROC-AUC (true
probabilities) on the same folds. The gap between the Bayes and this line is what 5 coefficients estimated from
about 170 patients cost, before any image has to be read.
"""

from __future__ import annotations

import json
import os
import sys

import fire
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.data.split import fold_data, load_datalist  # noqa: E402


def _features(item: dict, truth: dict, clinical: bool) -> list:
    t = truth[item["patient_id"]]
    row = [np.log(t["clot_length_mm"]), t["clot_density_hu"], t["clot_perviousness"], t["collaterals"]]
    row += [item["location"] == "ICA", item["location"] == "M2"]
    return row + ([float(item["age"]), float(item["ivt"])] if clinical else [])


def main(dataset_dir: str) -> None:
    """Print fold mean and pooled ROC-AUC of the Bayes score and the two oracle-feature models."""
    truth = json.load(open(os.path.join(dataset_dir, "manifest.json")))["truth"]
    datalist = load_datalist(os.path.join(dataset_dir, "datalist.json"))
    for name, clinical in (("bayes", None), ("oracle image variables + site", False), ("oracle, every term", True)):
        scores, labels, per_fold = [], [], []
        for k in range(datalist["settings"]["folds"]):
            outer = fold_data(datalist, k, "outer")
            y = [d["label"] for d in outer]
            if clinical is None:
                p = [truth[d["patient_id"]]["probability"] for d in outer]
            else:
                train = fold_data(datalist, k, "train")
                x = np.array([_features(d, truth, clinical) for d in train], float)
                mu, sd = x.mean(0), x.std(0) + 1e-9
                model = LogisticRegression().fit((x - mu) / sd, [d["label"] for d in train])
                p = model.decision_function((np.array([_features(d, truth, clinical) for d in outer], float) - mu) / sd)
            per_fold.append(roc_auc_score(y, p))
            scores += list(p)
            labels += y
        print(f"{name}: CV ROC-AUC {np.mean(per_fold):.3f} (folds {np.round(per_fold, 3).tolist()}), pooled "
              f"{roc_auc_score(labels, scores):.3f}")  # fmt: skip


if __name__ == "__main__":
    fire.Fire(main)
