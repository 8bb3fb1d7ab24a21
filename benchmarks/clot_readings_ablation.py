"""What each part of the main job's ClotReadingNet is worth on a demo cohort, in minutes once the inputs are cached.

``python benchmarks/clot_readings_ablation.py --dataset_dir DIR`` (a demo cohort with manifest.json and the
datalist.json that ``python -m scripts.demo`` writes).

The inputs are the bundle's own: every datalist patient through the parsed ``validate#preprocessing`` of
train.json + clot_readings.json (the crop's own grid, 67 x 46 x 43 at 2 mm), cached in
``DIR/clot_readings_cache_aligned.npz`` (MirrorAlignd: each hemisphere's mirror moved onto its own vessels, the
occluded side first) and, without MirrorAlignd, in ``DIR/clot_readings_cache.npz`` (the plain flip of 0.12). The
model is the one the bundle trains: a logistic regression on the readings + site, age, IVT, NIHSS (scikit-learn,
standardised, at its maximum-likelihood fit; the bundle's full-batch head reproduces it within about 0.003), fitted
per fold on that fold's training rows without the inner validation and scored on the outer fold. Prints one line per
variant: CV ROC-AUC mean (SD) over the folds, pooled out-of-fold ROC-AUC, and the correlation of each reading with its
hidden variable (log clot length, density, perviousness, collateral grade), each step of the main job's rule readings
added in turn, the learned reader's (``--reading_net FILE``, the shipped ``models/reading_net/model.pt`` by default)
alone, beside the rules' (all eight), and the main job's ``linear_readings`` of the eight; then the clinical values
alone, the oracle on the true hidden variables, each rule reading and each learned reading swapped for its truth and
each truth for the rules' and the learned reading (which reading costs the most), and the Bayes ROC-AUC of the same
folds.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Tuple

import fire
import numpy as np
import torch
from monai.bundle import ConfigParser
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.replica_ablation import cached_inputs  # noqa: E402
from scripts.data.split import load_datalist  # noqa: E402
from scripts.evaluation.statistics import delong  # noqa: E402
from scripts.networks.clot_readings import reader_readings  # noqa: E402

CONFIGS = ["configs/train.json", "configs/clot_readings.json"]
PLAIN = {"shape_transforms": "$@channel_transforms + @mirror_transforms + @resize_transforms"}  # no MirrorAlignd
HIDDEN = ("clot_length_mm", "clot_density_hu", "clot_perviousness", "collaterals")
RELATIVE = {"relative": True, "vessel_level": 0.6, "vessel_width": 0.25, "cut": 0.4}
MAIN = {**RELATIVE, "tolerance": 2, "smooth": 0.7, "occluded_half": True}
COLLATERAL = {"cut": 0.4, "tolerance": 1, "smooth": 1.0, "distal_high": 1.05}
MIDLINE = {"midline": 4}  # configs/clot_readings.json: midline_mm 8 at the 2 mm box
DISTAL_CUT = {"distal_cut": 0.55}
HYPERDENSITY = {"density_top": 5, "density_reach": 2}  # configs/clot_readings.json: density 40 mm3, reach 4 mm at 2 mm
# configs/clot_readings.json's reader_def
MAIN_JOB = {**MAIN, **MIDLINE, "collateral": COLLATERAL, **DISTAL_CUT, **HYPERDENSITY}


def job_readings(x: torch.Tensor, reading_net: str) -> Tuple[np.ndarray, List[int]]:
    """The main job's ClotReadingNet (``configs/clot_readings.json`` with ``reading_net``) readings of boxes
    (N, 4, H, W, D): the rules' four, then the learned reader's four, (N, 8); and the columns its linear layer takes."""
    parser = ConfigParser()
    parser.read_config([os.path.join(ROOT, c) for c in CONFIGS])
    parser["reading_net_file"] = reading_net
    parser.get_parsed_content("imports")
    network = parser.get_parsed_content("network_def")
    return torch.cat([network.measurements(part) for part in x.split(64)]).numpy(), network.linear_readings


def main(dataset_dir: str, reading_net: str = os.path.join(ROOT, "models", "reading_net", "model.pt")) -> None:
    """Print the ablation table of the cohort in ``dataset_dir`` (the learned reader of ``reading_net``)."""
    datalist = load_datalist(os.path.join(dataset_dir, "datalist.json"))
    with open(os.path.join(dataset_dir, "manifest.json")) as f:
        truth = json.load(f)["truth"]
    plain = cached_inputs(dataset_dir, CONFIGS, PLAIN, "clot_readings_cache", "ablation_models")
    aligned = cached_inputs(dataset_dir, CONFIGS, {}, "clot_readings_cache_aligned", "ablation_models")
    items, y, fold = aligned["items"], aligned["y"], aligned["fold"]
    ids = [it["patient_id"] for it in items]
    site = np.array([[it["location"] == s for s in ("ICA", "M2")] for it in items], float)
    clinical = np.column_stack([site, [[it["age"], it["ivt"], it["nihss"]] for it in items]])
    hidden = np.array([[truth[pid][k] for k in HIDDEN] for pid in ids], float)
    hidden[:, 0] = np.log(hidden[:, 0])

    def score(design: np.ndarray, keep: str | None = None) -> str:
        scores, pooled = fold_scores(design, y, fold, ids, datalist)
        auc = roc_auc_score(y[fold >= 0], pooled[fold >= 0])
        if keep:
            out_of_fold[keep] = pooled[fold >= 0]
        return f"{np.mean(scores):.3f} ({np.std(scores, ddof=1):.3f}), pooled {auc:.3f}"

    out_of_fold: Dict[str, np.ndarray] = {}

    def report(name: str, x: torch.Tensor, options: Dict, keep: str | None = None) -> None:
        readings = _batched(x, options)
        r = [np.corrcoef(readings[:, j], hidden[:, j])[0, 1] for j in range(4)]
        design = np.column_stack([readings, clinical])
        print(f"{name}: {score(design, keep)}; readings vs truth r = {np.round(r, 2).tolist()}", flush=True)

    report("0.12's readings (HU levels, plain flip)", plain["X"], {})
    report("levels relative to the patient's arterial enhancement", plain["X"], RELATIVE)
    report("+ the mirror aligned per hemisphere (MirrorAlignd)", aligned["X"], RELATIVE)
    report("+ own side compared within one voxel (tolerance 2)", aligned["X"], {**RELATIVE, "tolerance": 2})
    report("+ enhancement smoothed (0.7 voxel)", aligned["X"], {**RELATIVE, "tolerance": 2, "smooth": 0.7})
    report("+ the occluded hemisphere only", aligned["X"], MAIN)
    report("+ collateral reading at its own settings", aligned["X"], {**MAIN, "collateral": COLLATERAL})
    before = {**MAIN, **MIDLINE, "collateral": COLLATERAL}
    report("+ no vessel read within 8 mm of the midline", aligned["X"], before)
    report("+ the clot cut at 0.55 of the patient's distal filling", aligned["X"], {**before, **DISTAL_CUT})
    report("+ density as the hyperdense artery sign (densest 40 mm3): the rules", aligned["X"], MAIN_JOB, keep="rules")
    both, columns = job_readings(aligned["X"], reading_net)
    learned = both[:, 4:]
    r = [np.corrcoef(learned[:, j], hidden[:, j])[0, 1] for j in range(4)]
    print(f"the learned readings alone: {score(np.column_stack([learned, clinical]))}; vs truth r = {np.round(r, 2)}")
    rules = _batched(aligned["X"], MAIN_JOB)
    print(f"the rules + the learned readings, all eight: {score(np.column_stack([rules, learned, clinical]))}")
    main = score(np.column_stack([both[:, columns], clinical]), "main")
    print(f"the main job: readings {columns} of the eight: {main}")
    print(f"site, age, IVT, NIHSS only: {score(clinical, keep='clinical')}")
    test = delong(y[fold >= 0], out_of_fold["main"], out_of_fold["clinical"])
    print(f"the main job's readings against the clinical values alone (DeLong, pooled out-of-fold): {test}")
    test = delong(y[fold >= 0], out_of_fold["main"], out_of_fold["rules"])
    print(f"the main job against the rules' readings alone (DeLong, pooled out-of-fold): {test}")
    print(f"oracle, the true hidden variables + site, age, IVT: {score(np.column_stack([hidden, clinical[:, :4]]))}")
    for which, readings in (("rules'", rules), ("learned", learned)):  # which reading costs the most
        for j, name in enumerate(("length", "density", "perviousness", "collaterals")):
            swapped, kept = readings.copy(), hidden.copy()
            swapped[:, j], kept[:, j] = hidden[:, j], readings[:, j]
            print(f"the {which} readings with the true {name}: {score(np.column_stack([swapped, clinical]))}")
            print(f"the truth with the {which} {name} reading: {score(np.column_stack([kept, clinical]))}")
    probability = np.array([truth[pid]["probability"] for pid in ids])
    bayes = [roc_auc_score(y[fold == k], probability[fold == k]) for k in range(datalist["settings"]["folds"])]
    print(f"Bayes, same folds: {np.mean(bayes):.3f}, pooled {roc_auc_score(y[fold >= 0], probability[fold >= 0]):.3f}")


def fold_scores(
    design: np.ndarray, y: np.ndarray, fold: np.ndarray, ids: list, datalist: dict
) -> Tuple[List[float], np.ndarray]:
    """A standardised logistic regression per fold, fitted on that fold's training rows without the inner
    validation: (ROC-AUC of each outer fold, the out-of-fold scores (N,), 0 for test-set rows)."""
    scores, pooled = [], np.zeros(len(y))
    for k in range(datalist["settings"]["folds"]):
        inner = set(datalist["inner_validation"][str(k)])
        train = np.where((fold >= 0) & (fold != k) & np.array([pid not in inner for pid in ids]))[0]
        outer = np.where(fold == k)[0]
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(design[train], y[train])
        pooled[outer] = model.decision_function(design[outer])
        scores.append(roc_auc_score(y[outer], pooled[outer]))
    return scores, pooled


def _batched(x: torch.Tensor, options: Dict) -> np.ndarray:
    """The readings (N, 4) of boxes (N, 4, H, W, D) under :func:`reader_readings`' settings ``options``."""
    return torch.cat([reader_readings(part, options) for part in x.split(16)]).numpy()


if __name__ == "__main__":
    fire.Fire(main)
