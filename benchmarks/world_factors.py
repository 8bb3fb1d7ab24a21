"""What each factor of the varied demo world costs the main job's readings: one factor held at the uniform world's
value at a time, everything else varied as in ``scripts.demo``.

``python benchmarks/world_factors.py --factors no_courses,calibre1 [--seed 0] [--patients 300] [--out /tmp/wf]``
generates ``OUT/<factor>_s<seed>`` (the demo's patients and seed; the scan constants of
:func:`scripts.demo.generator.draw_scan` with the factor replaced), splits it as the demo does, caches the bundle's
inputs (train.json + clot_readings.json, MirrorAlignd included) and prints the main job's
model (the readings + site, age, IVT, NIHSS; a logistic regression per fold, as ``clot_readings_ablation.py``), the
oracle on the true hidden variables and the Bayes ROC-AUC on the same folds, and each reading's correlation with its
hidden variable. ``--factors varied`` is the demo itself.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Tuple

import fire
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.clot_readings_ablation import CONFIGS, HIDDEN, MAIN_JOB, _batched, fold_scores  # noqa: E402
from benchmarks.oracle_features import cv_auc  # noqa: E402
from benchmarks.replica_ablation import cached_inputs  # noqa: E402
from scripts.data.split import load_datalist, write_datalist  # noqa: E402
from scripts.demo import generator  # noqa: E402

# the uniform world's value of each factor (scripts.demo.generator.draw_scan)
FACTORS: Dict[str, Dict] = {
    "varied": {},
    "no_courses": {"courses": {}},  # both vessel trees exact mirror images
    "no_misregistration": {"misregistration": None},
    "no_veins": {"venous": 0.0},
    "calibre1": {"calibre": 1.0},
    "no_plaques": {"plaques": []},
    "arterial350": {"arterial_hu": 350.0},
    "uniform_noise_slices": {"noise": (3.0, 6.0), "thickness": (5.0, 1.0)},
}


def cohort(factor: str, seed: int, patients: int, out: str) -> str:
    """The demo cohort with ``factor`` held at the uniform world's value (generated once); its folder."""
    folder = os.path.join(out, f"{factor}_s{seed}")
    if os.path.isfile(os.path.join(folder, "datalist.json")):
        return folder
    draw = generator.draw_scan

    def held(rng: np.random.Generator, age: float, world: str = "varied") -> Dict:
        return {**draw(rng, age, world), **FACTORS[factor]}

    generator.draw_scan = held
    try:
        csv_path = generator.generate(folder, patients=patients, seed=seed, modalities="ct", world="varied")
    finally:
        generator.draw_scan = draw
    write_datalist(csv_path, os.path.join(folder, "datalist.json"), seed=seed)
    return folder


def main(
    factors: str = "varied,no_courses", seed: int = 0, patients: int = 300, out: str = "/tmp/world_factors"
) -> None:
    """Print one line per factor."""
    for factor in factors.split(",") if isinstance(factors, str) else factors:
        if factor not in FACTORS:
            raise SystemExit(f"--factors {factor}: use {', '.join(FACTORS)}")
        folder = cohort(factor, int(seed), int(patients), out)
        data = cached_inputs(folder, CONFIGS, {}, "clot_readings_cache_aligned", "ablation_models")
        with open(os.path.join(folder, "manifest.json")) as f:
            truth = json.load(f)["truth"]
        datalist = load_datalist(os.path.join(folder, "datalist.json"))
        main_job, r = score_readings(data["X"], data, datalist, truth)
        oracle, bayes = cv_auc(datalist, truth, True), cv_auc(datalist, truth, None)
        print(
            f"{factor} (seed {seed}): readings + clinical {main_job[0]:.3f} / {main_job[1]:.3f}, oracle {oracle[0]:.3f}"
            f" / {oracle[1]:.3f}, Bayes {bayes[0]:.3f} / {bayes[1]:.3f} (fold mean / pooled); readings vs truth r {r}",
            flush=True,
        )


def score_readings(x: torch.Tensor, data: dict, datalist: dict, truth: dict) -> Tuple[Tuple[float, float], List]:
    """The main job's readings of the boxes ``x`` (N, 4, H, W, D) and its logistic regression with site, age, IVT
    and NIHSS on the cohort's folds: ((fold mean, pooled) ROC-AUC, each reading's correlation with its truth)."""
    readings = _batched(x, MAIN_JOB)
    items, y, fold = data["items"], data["y"], data["fold"]
    ids = [it["patient_id"] for it in items]
    hidden = np.array([[truth[p][k] for k in HIDDEN] for p in ids], float)
    hidden[:, 0] = np.log(hidden[:, 0])
    r = [round(float(np.corrcoef(readings[:, j], hidden[:, j])[0, 1]), 2) for j in range(4)]
    site = np.array([[it["location"] == s for s in ("ICA", "M2")] for it in items], float)
    design = np.column_stack([readings, site, [[it["age"], it["ivt"], it["nihss"]] for it in items]])
    scores, pooled = fold_scores(design, y, fold, ids, datalist)
    return (float(np.mean(scores)), float(roc_auc_score(y[fold >= 0], pooled[fold >= 0]))), r


if __name__ == "__main__":
    fire.Fire(main)
