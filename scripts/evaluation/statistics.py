"""Statistics a reviewer asks for: bootstrap confidence intervals, calibration, DeLong's paired test, net benefit.

- :func:`bootstrap_ci`: patient-level bootstrap stratified by outcome (each resample keeps the numbers of
  positives and negatives), percentile 95% interval, seeded.
- :func:`hanley_mcneil_ci`: the analytic 95% interval of a ROC-AUC from its value and the class counts alone
  (Hanley & McNeil 1982, Radiology 143:29), for results whose predictions were not kept.
- :func:`calibration`: Brier score, expected calibration error (equal-width bins), calibration slope (logistic
  regression of the outcome on the predicted logit) and intercept (calibration-in-the-large: the logit as an
  offset, slope fixed at 1), both with statsmodels.
- :func:`delong`: the fast DeLong test of two correlated ROC-AUCs on the same patients (Sun & Xu 2014, IEEE
  Signal Processing Letters 21:1389); scipy and scikit-learn have none.
- :func:`fit_platt`: Platt scaling of a model's logit, fitted on inner validation only (inference applies it with
  :func:`scripts.inference.predict.apply_platt`).
- :func:`net_benefit`: decision-curve net benefit (Vickers & Elkin 2006) of the model, treat-all, treat-none.
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
from scipy import stats

from scripts.inference.predict import logit


def fast_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC (Mann-Whitney, ties count one half) of each row of ``scores`` (R, N) against ``labels`` (R, N)."""
    labels = np.atleast_2d(labels).astype(bool)
    scores = np.atleast_2d(scores)
    ranks = stats.rankdata(scores, axis=1)
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    return ((ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_indices(labels: Sequence[int], n: int = 1000, seed: int = 0) -> np.ndarray:
    """``n`` stratified resamples (n, N) of patient indices: positives drawn from positives, negatives from
    negatives, so every resample keeps the outcome prevalence and both classes."""
    y = np.asarray(labels, dtype=int)
    rng = np.random.default_rng(seed)
    parts = [np.flatnonzero(y == c) for c in (0, 1) if (y == c).any()]
    return np.concatenate([rng.choice(p, size=(n, len(p)), replace=True) for p in parts], axis=1)


def bootstrap_ci(
    labels: Sequence[int],
    probabilities: Sequence[float],
    metric: Callable[[np.ndarray, np.ndarray], float] | None = None,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Tuple[float, float]:
    """Percentile confidence interval of ``metric(labels, probabilities)`` (ROC-AUC when None) over stratified
    patient-level bootstrap resamples."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    idx = bootstrap_indices(y, n, seed)
    if metric is None:
        values = fast_auc(y[idx], p[idx])
    else:
        values = np.array([metric(y[i], p[i]) for i in idx], dtype=float)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def hanley_mcneil_ci(auc: float, positives: int, negatives: int, level: float = 0.95) -> Tuple[float, float]:
    """Normal-approximation interval of a ROC-AUC from Hanley & McNeil's standard error (exponential
    approximation Q1 = A / (2 - A), Q2 = 2 A^2 / (1 + A)), clipped to [0, 1]."""
    a = float(auc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt(
        (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (positives * negatives)
    )
    z = stats.norm.ppf(1 - (1 - level) / 2)
    return float(max(0.0, a - z * se)), float(min(1.0, a + z * se))


def bootstrap_metric_cis(
    labels: Sequence[int],
    probabilities: Sequence[float],
    predictions: Sequence[int],
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Dict[str, list]:
    """Percentile CIs of ROC-AUC and the confusion-matrix metrics (at the given per-patient ``predictions``) over
    the same stratified resamples, vectorised: {metric: [low, high]}."""
    y = np.asarray(labels, dtype=int)
    idx = bootstrap_indices(y, n, seed)
    yy, pp = y[idx], np.asarray(predictions, dtype=int)[idx]
    tp = ((pp == 1) & (yy == 1)).sum(axis=1).astype(float)
    fp = ((pp == 1) & (yy == 0)).sum(axis=1).astype(float)
    fn = ((pp == 0) & (yy == 1)).sum(axis=1).astype(float)
    tn = ((pp == 0) & (yy == 0)).sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {
            "roc_auc": fast_auc(yy, np.asarray(probabilities, dtype=float)[idx]),
            "accuracy": (tp + tn) / y.size,
            "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "f1": np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
        }
    alpha = (1 - level) / 2
    return {k: [float(q) for q in np.nanquantile(v, [alpha, 1 - alpha])] for k, v in values.items()}


def expected_calibration_error(labels: Sequence[int], probabilities: Sequence[float], bins: int = 10) -> float:
    """Sum over equal-width probability bins of (bin share) x |observed rate - mean prediction|."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return float(ece)


def calibration(labels: Sequence[int], probabilities: Sequence[float], bins: int = 10) -> Dict[str, float]:
    """Brier score, ECE, calibration slope and intercept (see the module docstring)."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    z = logit(p)
    out = {"brier": float(np.mean((p - y) ** 2)), "ece": expected_calibration_error(y, p, bins)}
    if 0 < y.sum() < len(y):
        binomial = sm.families.Binomial()
        with warnings.catch_warnings():  # small or separable sets still get their (large) estimates
            warnings.simplefilter("ignore", PerfectSeparationWarning)
            slope = sm.GLM(y, sm.add_constant(z), family=binomial).fit().params[1]
            intercept = sm.GLM(y, np.ones_like(z), family=binomial, offset=z).fit().params[0]
        out.update(slope=float(slope), intercept=float(intercept))
    else:
        out.update(slope=float("nan"), intercept=float("nan"))
    return out


def fit_platt(labels: Sequence[int], probabilities: Sequence[float]) -> Tuple[float, float]:
    """Platt scaling on the logit: (slope a, intercept b) of the logistic regression of the outcome on
    logit(p), so that sigmoid(a logit(p) + b) is calibrated on these patients; (1, 0) for a single class.

    Recalibration corrects the scale, never the order: where these patients rank against the model (a <= 0, as a
    few dozen inner-validation patients can by chance), only the intercept is fitted (a = 1), so that the fold
    model's ranking, which its outer fold is scored on, is kept rather than reversed or flattened."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    y = np.asarray(labels, dtype=float)
    if not 0 < y.sum() < len(y):
        return 1.0, 0.0
    z = logit(probabilities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        slope, intercept = sm.GLM(y, sm.add_constant(z), family=sm.families.Binomial()).fit().params[::-1]
        if slope <= 0:
            ones = np.ones((len(y), 1))
            slope, intercept = 1.0, sm.GLM(y, ones, family=sm.families.Binomial(), offset=z).fit().params[0]
    return float(slope), float(intercept)


def _placements(labels: np.ndarray, scores: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    """AUC and the DeLong structural components V10 (per positive) and V01 (per negative), via midranks."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    m, n = len(pos), len(neg)
    rank_all = stats.rankdata(np.concatenate([pos, neg]))
    rank_pos, rank_neg = stats.rankdata(pos), stats.rankdata(neg)
    v10 = (rank_all[:m] - rank_pos) / n
    v01 = 1 - (rank_all[m:] - rank_neg) / m
    auc = (rank_all[:m].sum() - m * (m + 1) / 2) / (m * n)
    return float(auc), v10, v01


def delong(labels: Sequence[int], scores_a: Sequence[float], scores_b: Sequence[float]) -> Dict[str, float]:
    """DeLong's test of AUC(a) - AUC(b) on the same patients: both AUCs, the difference with its 95% CI and the
    two-sided p-value (normal approximation of the fast DeLong covariance)."""
    y = np.asarray(labels, dtype=int)
    if not 0 < y.sum() < len(y):
        raise ValueError("DeLong needs both outcome classes")
    auc_a, v10_a, v01_a = _placements(y, np.asarray(scores_a, dtype=float))
    auc_b, v10_b, v01_b = _placements(y, np.asarray(scores_b, dtype=float))
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    cov = s10 / len(v10_a) + s01 / len(v01_a)
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = auc_a - auc_b
    se = np.sqrt(max(var, 0.0))
    p = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    half = stats.norm.ppf(0.975) * se
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": diff,
        "ci95": [diff - half, diff + half],
        "p": p,
        "se": float(se),
    }


def net_benefit(labels: Sequence[int], probabilities: Sequence[float], thresholds: Sequence[float]) -> Dict[str, list]:
    """Net benefit TP/N - FP/N x t/(1-t) at each threshold t for the model and for treating everyone (treat-none
    is 0 everywhere)."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    t = np.asarray(thresholds, dtype=float)
    odds = t / (1 - t)
    treat = p[None, :] >= t[:, None]
    tp = (treat & (y == 1)).sum(axis=1) / len(y)
    fp = (treat & (y == 0)).sum(axis=1) / len(y)
    prevalence = y.mean()
    return {
        "threshold": t.tolist(),
        "model": (tp - fp * odds).tolist(),
        "treat_all": (prevalence - (1 - prevalence) * odds).tolist(),
        "treat_none": [0.0] * len(t),
    }
