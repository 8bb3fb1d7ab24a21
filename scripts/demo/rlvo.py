"""The demo cohort's refractory-LVO truth: comorbidities and a documented logistic model in which the clinical
variables carry most of the signal (as Canals et al. 2025 found: image-only AUC 0.53, with clinical data 0.70).

Per patient, from a seed stream of its own (the FPE draws and the images do not change): hypertension
(p 0.6), diabetes (p 0.25), atrial fibrillation (p 0.35); then

    logit P(rLVO) = -1.2 + 1.2 diabetes + 0.7 hypertension - 1.3 af + 0.5 z_age - 0.3 ivt   (clinical)
                    + 0.4 z_len + 0.5 [site ICA]                                          (image)

with z_age and z_len as in the FPE model (:mod:`scripts.demo.generator`). rLVO ~ Bernoulli(P). The outcome columns
are then made consistent with the contract's rule (rLVO = final eTICI 0-2a, stenosis > 50 % or rescue
treatment): an rLVO patient gets a stenosis or a rescue treatment (and, after a failed first pass, a final grade
of 0-2a half of the time); a non-rLVO patient gets neither, and a final grade of at least 2b.
``clinical_share`` in the manifest is the share of the logit's variance due to the clinical terms.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

RLVO_COEF = {
    "intercept": -1.2,
    "diabetes": 1.2,
    "hypertension": 0.7,
    "atrial_fibrillation": -1.3,
    "z_age": 0.5,
    "ivt": -0.3,
    "z_len": 0.4,
    "site_ica": 0.5,
}
CLINICAL_TERMS = ("diabetes", "hypertension", "atrial_fibrillation", "z_age", "ivt")
COMORBIDITIES = {"hypertension": 0.6, "diabetes": 0.25, "atrial_fibrillation": 0.35}


def rlvo_terms(patient: Dict) -> Dict[str, float]:
    """The model's terms (coefficient x value) for one patient (comorbidities drawn)."""
    truth = patient["_truth"]
    values = {
        "diabetes": patient["diabetes"],
        "hypertension": patient["hypertension"],
        "atrial_fibrillation": patient["atrial_fibrillation"],
        "z_age": (patient["age"] - 70) / 12,
        "ivt": patient["ivt"],
        "z_len": (np.log(truth["clot_length_mm"]) - np.log(12)) / 0.45,
        "site_ica": float(patient["location"] == "ICA"),
    }
    return {k: RLVO_COEF[k] * float(v) for k, v in values.items()}


def draw_rlvo(rng: np.random.Generator, patient: Dict) -> None:
    """Draw comorbidities and the rLVO outcome; set the outcome columns to agree with it (see module docstring)."""
    for name, p in COMORBIDITIES.items():
        patient[name] = int(rng.random() < p)
    terms = rlvo_terms(patient)
    prob = float(1 / (1 + np.exp(-(RLVO_COEF["intercept"] + sum(terms.values())))))
    rlvo = bool(rng.random() < prob)
    failed_first = patient["mtici_first_pass"] in ("0", "1", "2a")
    if rlvo:
        if failed_first and rng.random() < 0.5:
            patient["mtici_final"] = str(rng.choice(["0", "1", "2a"]))
            patient["rescue"], patient["stenosis_gt50"] = int(rng.random() < 0.4), int(rng.random() < 0.3)
        else:
            stenosis = bool(rng.random() < 0.5)
            patient["stenosis_gt50"], patient["rescue"] = int(stenosis), int(not stenosis or rng.random() < 0.5)
    else:
        patient["rescue"] = patient["stenosis_gt50"] = 0
        if patient["mtici_final"] in ("0", "1", "2a"):
            patient["mtici_final"] = str(rng.choice(["2b", "2c", "3"], p=(0.4, 0.3, 0.3)))
    patient["_truth"]["rlvo_probability"] = prob


def clinical_share(patients) -> float:
    """Share of the variance of the rLVO logit across ``patients`` due to the clinical terms."""
    terms = [rlvo_terms(p) for p in patients]
    clinical = np.array([sum(t[k] for k in CLINICAL_TERMS) for t in terms])
    total = np.array([sum(t.values()) for t in terms])
    return float(np.var(clinical) / np.var(total)) if np.var(total) > 0 else 0.0
