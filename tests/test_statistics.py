"""Bootstrap CIs, calibration, DeLong and net benefit against simulations, hand computations and direct formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from scripts.evaluation.statistics import (
    bootstrap_ci,
    calibration,
    delong,
    expected_calibration_error,
    fast_auc,
    net_benefit,
)


def test_fast_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(5, 40))
    s = rng.integers(0, 6, size=(5, 40)).astype(float)  # many ties
    np.testing.assert_allclose(fast_auc(y, s), [roc_auc_score(a, b) for a, b in zip(y, s)])


def test_bootstrap_ci_covers_the_true_auc_about_95_percent():
    """200 simulated score sets (binormal, 60 positives / 90 negatives, true AUC = Phi(1/sqrt 2) = 0.760)."""
    true_auc = stats.norm.cdf(1 / np.sqrt(2))
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(60, int), np.zeros(90, int)]
    covered = []
    for k in range(200):
        s = np.r_[rng.normal(1, 1, 60), rng.normal(0, 1, 90)]
        low, high = bootstrap_ci(y, s, n=1000, seed=k)
        covered.append(low <= true_auc <= high)
    assert 0.92 <= np.mean(covered) <= 0.98


def test_hanley_mcneil_interval_by_hand_and_against_the_bootstrap():
    from scripts.evaluation.statistics import hanley_mcneil_ci

    # A 0.8, 50 + 50: Q1 = 0.8 / 1.2, Q2 = 1.28 / 1.8; SE^2 = (0.16 + 49 (Q1 - 0.64) + 49 (Q2 - 0.64)) / 2500
    se = np.sqrt((0.16 + 49 * (0.8 / 1.2 - 0.64) + 49 * (1.28 / 1.8 - 0.64)) / 2500)
    assert se == pytest.approx(0.044502, abs=1e-6)
    assert hanley_mcneil_ci(0.8, 50, 50) == pytest.approx((0.8 - 1.959964 * se, 0.8 + 1.959964 * se), abs=1e-6)
    assert hanley_mcneil_ci(0.99, 10, 10)[1] == 1.0
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 120)
    p = rng.normal(y * 1.2, 1.0)
    low, high = bootstrap_ci(y, p, n=2000)
    hm_low, hm_high = hanley_mcneil_ci(roc_auc_score(y, p), 120, 120)
    assert abs((hm_high - hm_low) - (high - low)) < 0.2 * (high - low)  # the same width within 20%


def test_bootstrap_keeps_both_classes_and_is_seeded():
    y = np.r_[np.ones(3, int), np.zeros(30, int)]  # rare outcome: an unstratified resample could hold no positive
    s = np.linspace(0, 1, 33)
    assert bootstrap_ci(y, s, seed=4) == bootstrap_ci(y, s, seed=4)
    low, high = bootstrap_ci(y, s, seed=4)
    assert 0 <= low <= high <= 1 and not np.isnan(low)


def _delong_by_pairs(y, a, b):
    """Direct placement values by comparing every positive with every negative (O(mn)), DeLong 1988 eq. 3-5."""
    pos, neg = y == 1, y == 0

    def place(s):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = place(a), place(b)
    m, n = pos.sum(), neg.sum()
    var = (np.var(v10a, ddof=1) + np.var(v10b, ddof=1) - 2 * np.cov(v10a, v10b)[0, 1]) / m
    var += (np.var(v01a, ddof=1) + np.var(v01b, ddof=1) - 2 * np.cov(v01a, v01b)[0, 1]) / n
    z = (auc_a - auc_b) / np.sqrt(var)
    return auc_a, auc_b, 2 * stats.norm.sf(abs(z))


def test_delong_equals_the_placement_computation_and_is_symmetric():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    a = y * 0.8 + rng.normal(0, 1, 80)
    b = np.round(y * 0.4 + rng.normal(0, 1, 80), 1)  # ties within b
    result = delong(y, a, b)
    auc_a, auc_b, p = _delong_by_pairs(y, a, b)
    assert result["auc_a"] == pytest.approx(auc_a) and result["auc_b"] == pytest.approx(auc_b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert result["p"] == pytest.approx(p, rel=1e-9)
    back = delong(y, b, a)
    assert back["p"] == pytest.approx(result["p"]) and back["difference"] == pytest.approx(-result["difference"])
    assert result["ci95"][0] < result["difference"] < result["ci95"][1]
    assert delong(y, a, a + 1)["p"] == 1.0  # same ranking, no difference


def test_delong_rejects_about_5_percent_under_the_null():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(50, int), np.zeros(50, int)]
    rejections = []
    for _ in range(300):
        latent = y * 1.0 + rng.normal(0, 1, 100)
        a, b = latent + rng.normal(0, 0.7, 100), latent + rng.normal(0, 0.7, 100)  # equal true AUCs, correlated
        rejections.append(delong(y, a, b)["p"] < 0.05)
    assert 0.02 <= np.mean(rejections) <= 0.09


def test_brier_and_ece_by_hand():
    y = [1, 0, 1, 1, 0, 0]
    p = [0.9, 0.15, 0.55, 0.35, 0.32, 0.05]
    out = calibration(y, p)
    assert out["brier"] == pytest.approx((0.01 + 0.0225 + 0.2025 + 0.4225 + 0.1024 + 0.0025) / 6)
    # bins of width 0.1: [0.9] -> |1-0.9|; [0.15] -> 0.15; [0.55] -> 0.45; [0.35, 0.32] -> |0.5-0.335|; [0.05] -> 0.05
    hand = (0.1 + 0.15 + 0.45 + 2 * 0.165 + 0.05) / 6
    assert expected_calibration_error(y, p) == pytest.approx(hand)
    assert out["ece"] == pytest.approx(hand)


def test_slope_and_intercept_recover_a_known_miscalibration():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 20000)
    y = rng.random(20000) < 1 / (1 + np.exp(-z))  # the truth
    calibrated = calibration(y, 1 / (1 + np.exp(-z)))
    assert calibrated["slope"] == pytest.approx(1, abs=0.05) and calibrated["intercept"] == pytest.approx(0, abs=0.05)
    overconfident = calibration(y, 1 / (1 + np.exp(-(2 * z + 0.5))))  # logit doubled and shifted
    assert overconfident["slope"] == pytest.approx(0.5, abs=0.03)
    assert overconfident["intercept"] < -0.2  # predictions too high on average


def test_net_benefit_by_hand():
    y = [1, 1, 0, 0, 0]
    p = [0.9, 0.4, 0.6, 0.2, 0.1]
    out = net_benefit(y, p, [0.5, 0.3])
    # t=0.5: treated {0.9 (TP), 0.6 (FP)} -> 1/5 - 1/5 * 1 = 0; t=0.3: + 0.4 (TP) -> 2/5 - 1/5 * 3/7
    assert out["model"] == pytest.approx([0.0, 0.4 - 0.2 * 3 / 7])
    assert out["treat_all"] == pytest.approx([0.4 - 0.6, 0.4 - 0.6 * 3 / 7])
    assert out["treat_none"] == [0.0, 0.0]


def test_metric_cis_agree_with_sklearn_on_each_resample():
    """The vectorised CIs equal percentiles of scikit-learn metrics computed resample by resample."""
    from sklearn.metrics import f1_score, precision_score

    from scripts.evaluation.statistics import bootstrap_indices, bootstrap_metric_cis

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    p = np.clip(y * 0.3 + rng.random(60) * 0.7, 0, 1)
    pred = (p >= 0.5).astype(int)
    cis = bootstrap_metric_cis(y, p, pred, n=200, seed=7)
    idx = bootstrap_indices(y, 200, 7)
    direct = {
        "roc_auc": [roc_auc_score(y[i], p[i]) for i in idx],
        "precision": [precision_score(y[i], pred[i], zero_division=0) for i in idx],
        "f1": [f1_score(y[i], pred[i], zero_division=0) for i in idx],
        "sensitivity": [pred[i][y[i] == 1].mean() for i in idx],
    }
    for name, values in direct.items():
        np.testing.assert_allclose(cis[name], np.quantile(values, [0.025, 0.975]))


def noisy_fold_predictor(k):
    """Fold k's model as a known score: the label plus seeded noise per patient and fold (logistic)."""
    import zlib

    def run(items):
        noise = [np.random.default_rng(zlib.crc32(f"{d['patient_id']}{k}".encode())).normal() for d in items]
        return 1 / (1 + np.exp(-(np.array([d["label"] for d in items]) * 1.0 - 0.5 + 1.5 * np.array(noise))))

    return run


def test_evaluation_writes_cis_calibration_and_decision_curve(demo_cohort, tmp_path):
    """The evaluation protocol on a known score (label + seeded noise per patient): every pooled and ensemble
    metric carries a CI around its value, calibration and the decision curve are written and agree by hand."""
    import csv
    import json

    from scripts.data.cohort import read_cohort
    from scripts.data.split import make_datalist
    from scripts.evaluation.evaluate import evaluate_predictions

    data = make_datalist(read_cohort(demo_cohort), label="fpe", folds=2, seed=0, inner_val=0.25)

    metrics = evaluate_predictions(data, noisy_fold_predictor, str(tmp_path / "models"), str(tmp_path / "eval"))
    for part in (metrics["cv"]["pooled"], metrics["test"]["ensemble"]):
        for name in ("roc_auc", "sensitivity", "specificity", "f1"):
            low, high = part["ci95"][name]
            assert low <= part[name] <= high and high - low > 0.01
        assert set(part["calibration"]) == {"brier", "ece", "slope", "intercept"}
    assert metrics["cv"]["pooled"]["roc_auc"] == pytest.approx(metrics["cv"]["pooled_roc_auc"])
    saved = json.load(open(tmp_path / "eval" / "metrics.json"))
    assert saved["test"]["ensemble"]["ci95"] == metrics["test"]["ensemble"]["ci95"]
    text = (tmp_path / "eval" / "metrics.md").read_text()
    assert "(95% CI " in text and "Calibration, CV pooled: Brier" in text
    rows = [r for r in csv.DictReader(open(tmp_path / "eval" / "decision_curve.csv")) if r["set"] == "test_ensemble"]
    prevalence = np.mean([d["label"] for d in data["test"]])
    at_20 = next(r for r in rows if r["threshold"] == "0.20")
    assert float(at_20["treat_all"]) == pytest.approx(prevalence - (1 - prevalence) * 0.25, abs=1e-6)
    for image in ("calibration.png", "decision_curve.png"):
        assert (tmp_path / "eval" / image).read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "eval" / "table1.md").read_text()
    n_pos = sum(d["label"] for d in data["training"] + data["test"])
    assert f"| Patients | n | {n_pos} |" in table
    report = (tmp_path / "eval" / "report.md").read_text()
    for part in (
        "## Table 1",
        "inner validation",
        "(95% CI ",
        "[reliability diagram](calibration.png)",
        "Calibration, CV",
    ):
        assert part in report
    assert "2 stratified outer folds of the patients before 2020-01-01" in report
    from scripts.evaluation.evaluate import report_markdown

    held_out = make_datalist(read_cohort(demo_cohort), folds=2, seed=0, test_fraction=0.3)
    split_line = next(line for line in report_markdown(held_out, metrics, "").splitlines() if "- Split:" in line)
    assert "random hold-out of 0.3 of the patients stratified by outcome" in split_line and "before" not in split_line


def test_platt_recovers_a_known_scaling_and_combine_folds_applies_it():
    from scripts.evaluation.statistics import fit_platt
    from scripts.inference.predict import apply_platt, combine_folds

    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20000)
    y = rng.random(20000) < apply_platt(p, (0.5, -0.3))
    a, b = fit_platt(y, p)
    assert a == pytest.approx(0.5, abs=0.03) and b == pytest.approx(-0.3, abs=0.05)
    assert fit_platt([1, 1, 1], [0.2, 0.5, 0.9]) == (1.0, 0.0)  # one class: identity
    # inner-validation patients that rank against the model: the order is kept, only the level moves
    p = rng.uniform(0.3, 0.9, 40)
    y = (p < np.median(p)).astype(int)
    a, b = fit_platt(y, p)
    assert a == 1.0 and np.mean(apply_platt(p, (a, b))) == pytest.approx(y.mean(), abs=0.02)
    probs = [[0.2, 0.8], [0.6, 0.9]]
    mean, sd = combine_folds(probs, {"ensemble": 0.5})
    np.testing.assert_allclose(mean, [0.4, 0.85])
    scaled = {"ensemble": 0.5, "platt": {"0": [1.0, 0.0], "1": [2.0, -1.0]}}
    mean, _ = combine_folds(probs, scaled)
    np.testing.assert_allclose(mean, [(0.2 + apply_platt(0.6, (2, -1))) / 2, (0.8 + apply_platt(0.9, (2, -1))) / 2])


def test_platt_recalibration_aligns_folds_of_different_scale(demo_cohort, tmp_path):
    """Fold k's model ranks patients well but outputs on its own scale (logit x 2^k, shifted by 2.5k): pooled ROC-AUC
    suffers until each fold is Platt-scaled on its inner validation; parameters go to cutoffs.json."""
    import json
    import zlib

    from scripts.data.cohort import read_cohort
    from scripts.data.split import make_datalist
    from scripts.evaluation.evaluate import evaluate_predictions

    data = make_datalist(read_cohort(demo_cohort), label="fpe", folds=2, seed=0, inner_val=0.4)

    def fold_predictor(k):
        def run(items):
            noise = np.array([np.random.default_rng(zlib.crc32(d["patient_id"].encode())).normal() for d in items])
            z = np.array([d["label"] for d in items]) - 0.5 + 0.8 * noise
            return 1 / (1 + np.exp(-(z * 2.0**k + 2.5 * k)))

        return run

    plain = evaluate_predictions(data, fold_predictor, str(tmp_path / "m1"), str(tmp_path / "e1"))
    platt = evaluate_predictions(
        data, fold_predictor, str(tmp_path / "m2"), str(tmp_path / "e2"), recalibration="platt"
    )
    assert platt["cv"]["summary"]["roc_auc"]["mean"] == pytest.approx(plain["cv"]["summary"]["roc_auc"]["mean"])
    assert platt["cv"]["pooled_uncalibrated"]["roc_auc"] == pytest.approx(plain["cv"]["pooled_roc_auc"])
    assert platt["cv"]["pooled_roc_auc"] > plain["cv"]["pooled_roc_auc"] + 0.02  # 0.690 -> 0.722
    stored = json.load(open(tmp_path / "m2" / "cutoffs.json"))
    assert stored["platt"]["1"][0] < stored["platt"]["0"][0] / 2  # the steeper fold is flattened
    assert "platt" not in json.load(open(tmp_path / "m1" / "cutoffs.json"))


def test_subgroup_metrics_by_site_side_and_modality():
    from scripts.evaluation.evaluate import subgroup_metrics

    items = [{"patient_id": f"p{i}", "location": ("ICA", "M1")[i % 2], "side": "L"} for i in range(40)]
    labels = [int(i % 4 < 2) for i in range(40)]
    probs = [0.9 if y else 0.1 for y in labels]
    probs[1] = 0.05  # one M1 positive ranked below every negative
    rows = [
        {"patient_id": f"p{i}", "set": "cv", "fold": 0, "label": y, "probability": p}
        for i, (y, p) in enumerate(zip(labels, probs))
    ]
    out = subgroup_metrics(rows, items)["cv_pooled"]
    assert out["location"]["ICA"] == {"n": 20, "positives": 10, "roc_auc": 1.0, "ci95": [1.0, 1.0]}
    m1 = [(y, p) for i, (y, p) in enumerate(zip(labels, probs)) if i % 2]
    assert out["location"]["M1"]["roc_auc"] == pytest.approx(roc_auc_score(*zip(*m1)))
    assert out["side"]["L"]["n"] == 40 and "test_ensemble" not in subgroup_metrics(rows, items)
    assert "modality" not in out  # every patient has the same imaging (none here)
    for i, item in enumerate(items):  # a mixed cohort: even patients with CT, odd ones with MR, p0 with both
        item.update({"ncct": "a.nii.gz"} if i % 2 == 0 else {"adc": "b.nii.gz", "cta": ""})
    items[0]["flair"] = "c.nii.gz"
    by_modality = subgroup_metrics(rows, items)["cv_pooled"]["modality"]
    assert {k: v["n"] for k, v in by_modality.items()} == {"CT": 19, "CT+MR": 1, "MR": 20}
    assert by_modality["MR"]["roc_auc"] == out["location"]["M1"]["roc_auc"]  # the odd patients again


def test_bayes_reference_on_the_reported_patients():
    from scripts.evaluation.evaluate import bayes_on_reported

    rng = np.random.default_rng(0)
    truth = {f"p{i}": {"probability": float(p)} for i, p in enumerate(rng.uniform(0, 1, 60))}
    labels = {pid: int(rng.random() < t["probability"]) for pid, t in truth.items()}
    ids = list(truth)
    rows = [{"patient_id": p, "set": "cv", "fold": i % 3, "label": labels[p]} for i, p in enumerate(ids[:45])]
    rows += [
        {"patient_id": p, "set": "test", "fold": f, "label": labels[p]} for p in ids[45:] for f in (0, 1, "ensemble")
    ]
    same = bayes_on_reported({"truth": truth}, rows, "fpe")
    score = {p: truth[p]["probability"] for p in ids}
    folds = [[p for i, p in enumerate(ids[:45]) if i % 3 == k] for k in range(3)]
    expected = np.mean([roc_auc_score([labels[p] for p in f], [score[p] for p in f]) for f in folds])
    assert same["cv_fold_mean"] == pytest.approx(expected)
    assert same["cv_pooled"] == pytest.approx(
        roc_auc_score([labels[p] for p in ids[:45]], [score[p] for p in ids[:45]])
    )
    assert same["test"] == pytest.approx(roc_auc_score([labels[p] for p in ids[45:]], [score[p] for p in ids[45:]]))
    assert bayes_on_reported({}, rows, "fpe") == {} and bayes_on_reported({"truth": truth}, rows, "mtici_2c") == {}
    del truth["p3"]  # a reported patient without truth: no like-for-like reference rather than a partial one
    assert bayes_on_reported({"truth": truth}, rows, "fpe") == {}


def test_optimistic_protocol_is_reported_beside_and_labelled(demo_cohort, tmp_path):
    """``optimistic``: the papers' Youden cut-off on each reported set, beside the inner-validation protocol and
    labelled; fold models whose checkpoint was chosen on the outer fold label every output OPTIMISTIC."""
    import json
    import os

    from scripts.data.cohort import read_cohort
    from scripts.data.split import fold_data, make_datalist
    from scripts.evaluation.evaluate import binary_metrics, evaluate_predictions, youden_cutoff

    data = make_datalist(read_cohort(demo_cohort), label="fpe", folds=2, seed=0, inner_val=0.25)

    honest = evaluate_predictions(data, noisy_fold_predictor, str(tmp_path / "m1"), str(tmp_path / "e1"))
    assert "optimistic" not in honest and "protocol" not in honest
    metrics = evaluate_predictions(
        data, noisy_fold_predictor, str(tmp_path / "m2"), str(tmp_path / "e2"), optimistic=True
    )
    assert metrics["cv"] == honest["cv"]  # the honest protocol is unchanged beside it
    for k in range(2):
        outer = fold_data(data, k, "outer")
        y, p = [d["label"] for d in outer], noisy_fold_predictor(k)(outer)
        assert metrics["optimistic"]["cv"]["folds"][k] == pytest.approx(binary_metrics(y, p, youden_cutoff(y, p)))
        paper, inner = metrics["optimistic"]["cv"]["folds"][k], metrics["cv"]["folds"][k]
        assert paper["sensitivity"] + paper["specificity"] >= inner["sensitivity"] + inner["specificity"] - 1e-9
    assert "OPTIMISTIC cut-offs" in (tmp_path / "e2" / "metrics.md").read_text()
    assert "OPTIMISTIC" not in (tmp_path / "e1" / "report.md").read_text()
    for k in range(2):  # fold models trained with configs/experiments/optimistic.json
        os.makedirs(tmp_path / "m3" / f"fold{k}")
        (tmp_path / "m3" / f"fold{k}" / "done.json").write_text(json.dumps({"validated_on": "outer"}))
    labelled = evaluate_predictions(data, noisy_fold_predictor, str(tmp_path / "m3"), str(tmp_path / "e3"))
    assert labelled["protocol"].startswith("OPTIMISTIC: the checkpoint of 2 of 2 fold models")
    for name in ("metrics.md", "report.md"):
        assert "**OPTIMISTIC: the checkpoint" in (tmp_path / "e3" / name).read_text()
    assert json.load(open(tmp_path / "e3" / "metrics.json"))["protocol"] == labelled["protocol"]
    from scripts.evaluation.compare import compare

    text = compare(
        {"A": str(tmp_path / "e1"), "B": str(tmp_path / "e2"), "C": str(tmp_path / "e3")}, out=str(tmp_path / "cmp")
    )
    rows = {r["model"]: r for r in json.load(open(tmp_path / "cmp" / "comparison.json"))["rows"]}
    assert list(rows) == ["A", "B", "B, OPTIMISTIC cut-offs", "C (OPTIMISTIC checkpoints)"]
    paper = metrics["optimistic"]["cv"]["summary"]["sensitivity"]["mean"]
    assert rows["B, OPTIMISTIC cut-offs"]["sensitivity_mean"] == pytest.approx(paper)
    assert rows["B, OPTIMISTIC cut-offs"]["cv_pooled_roc_auc"] == rows["A"]["cv_pooled_roc_auc"]
    assert "| C (OPTIMISTIC checkpoints) |" in text
    report = (tmp_path / "cmp" / "report.md").read_text()  # the first run's report with the comparison added
    assert report.startswith("# Evaluation report") and "## Model comparison" in report and "Paired against A" in report
    import re

    links = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert "../e1/roc.png" in links and all((tmp_path / "cmp" / link).exists() for link in links)
