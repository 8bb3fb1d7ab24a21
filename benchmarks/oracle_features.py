"""What a perfect measurement of the demo's hidden variables would score on the same folds.

``python benchmarks/oracle_features.py --dataset_dir DIR`` (a demo cohort with manifest.json and datalist.json):
a logistic regression on the true clot length (log), density, perviousness, collateral grade and occlusion site
(and, second line, also age and IVT: every term of the true logit), fitted per fold on that fold's training rows
(inner validation excluded, as the networks) and scored on the outer fold. Also prints the Bayes ROC-AUC (true
probabilities) on the same folds. The gap between the Bayes and this line is what 5 coefficients estimated from
about 170 patients cost, before any image has to be read.

``python benchmarks/oracle_features.py --simulate_cohorts 100 [--patients 300] [--split_seeds K] [--first_seed 0]``:
the same over many generated cohorts without images (:func:`scripts.demo.generator.draw_cohort`: the truth that
``scripts.demo`` draws for seeds ``first_seed``...), each split as the main job splits it (``write_datalist``'s seed =
the cohort's seed), or with ``--split_seeds K`` with each of the seeds 0..K-1. Prints, per cohort and split, the
cohort's Bayes ROC-AUC (the acceptance reference) and the oracle's fold mean and pooled ROC-AUC, then the distribution
of the gaps and how often the oracle itself is within the demo's bounds (fold mean 0.05, pooled 0.08).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Tuple

import fire
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.data.cohort import derive_labels  # noqa: E402
from scripts.data.split import fold_data, load_datalist, make_datalist  # noqa: E402
from scripts.demo.generator import draw_cohort  # noqa: E402


def _features(item: dict, truth: dict, clinical: bool) -> list:
    t = truth[item["patient_id"]]
    row = [np.log(t["clot_length_mm"]), t["clot_density_hu"], t["clot_perviousness"], t["collaterals"]]
    row += [item["location"] == "ICA", item["location"] == "M2"]
    return row + ([float(item["age"]), float(item["ivt"])] if clinical else [])


def cv_auc(datalist: dict, truth: Dict[str, dict], clinical: bool | None) -> Tuple[float, float]:
    """(fold mean, pooled) out-of-fold ROC-AUC of the Bayes score (``clinical=None``) or of the oracle logistic
    regression on the true variables (with age and IVT when ``clinical``)."""
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
    return float(np.mean(per_fold)), float(roc_auc_score(labels, scores))


def simulate(cohorts: int, patients: int = 300, split_seeds: int = 0, first_seed: int = 0) -> List[Dict]:
    """Per generated cohort and split: the cohort's Bayes ROC-AUC and the oracle's (fold mean, pooled) ROC-AUC."""
    results = []
    for seed in range(int(first_seed), int(first_seed) + int(cohorts)):
        rows = draw_cohort(patients, seed)
        truth = {r["patient_id"]: r.pop("_truth") for r in rows}
        for r in rows:
            r.update(derive_labels(r))
        bayes = float(roc_auc_score([r["fpe"] for r in rows], [truth[r["patient_id"]]["probability"] for r in rows]))
        for split in range(int(split_seeds)) if split_seeds else [seed]:
            fold_mean, pooled = cv_auc(make_datalist(rows, "fpe", 5, split), truth, False)
            results.append({"seed": seed, "split": split, "bayes": bayes, "fold_mean": fold_mean, "pooled": pooled})
    return results


def _summary(results: List[Dict]) -> None:
    for r in results:
        gap_fold, gap_pooled = r["bayes"] - r["fold_mean"], r["bayes"] - r["pooled"]
        print(
            f"cohort {r['seed']}, split {r['split']}: Bayes {r['bayes']:.3f}, oracle fold mean {r['fold_mean']:.3f} "
            f"(gap {gap_fold:.3f}), pooled {r['pooled']:.3f} (gap {gap_pooled:.3f})"
        )
    gap_fold = np.array([r["bayes"] - r["fold_mean"] for r in results])
    gap_pooled = np.array([r["bayes"] - r["pooled"] for r in results])
    fold = np.array([r["fold_mean"] for r in results])
    within = (gap_fold <= 0.05) & (gap_pooled <= 0.08)
    print(
        f"{len(results)} runs: Bayes {np.mean([r['bayes'] for r in results]):.3f}; oracle fold mean {fold.mean():.3f}"
        f" (SD {fold.std():.3f}, range {fold.min():.3f}-{fold.max():.3f}); gap to the cohort's Bayes: fold mean "
        f"{gap_fold.mean():.3f} (SD {gap_fold.std():.3f}), pooled {gap_pooled.mean():.3f} "
        f"(SD {gap_pooled.std():.3f}); oracle within 0.05 (fold mean) in {np.mean(gap_fold <= 0.05):.0%}, within "
        f"0.08 (pooled) in {np.mean(gap_pooled <= 0.08):.0%}, both in {np.mean(within):.0%}"
    )


def main(
    dataset_dir: str | None = None,
    simulate_cohorts: int = 0,
    patients: int = 300,
    split_seeds: int = 0,
    first_seed: int = 0,
) -> None:
    """Print fold mean and pooled ROC-AUC of the Bayes score and the two oracle-feature models on a cohort, or the
    simulation over ``simulate_cohorts`` generated cohorts."""
    if simulate_cohorts:
        _summary(simulate(simulate_cohorts, patients, split_seeds, first_seed))
        return
    if dataset_dir is None:
        print("oracle_features: give --dataset_dir DIR or --simulate_cohorts N", file=sys.stderr)
        raise SystemExit(2)
    truth = json.load(open(os.path.join(dataset_dir, "manifest.json")))["truth"]
    datalist = load_datalist(os.path.join(dataset_dir, "datalist.json"))
    for name, clinical in (("bayes", None), ("oracle image variables + site", False), ("oracle, every term", True)):
        fold_mean, pooled = cv_auc(datalist, truth, clinical)
        print(f"{name}: CV ROC-AUC {fold_mean:.3f}, pooled {pooled:.3f}")


if __name__ == "__main__":
    fire.Fire(main)
