"""The comparison models: SCANet and MONAI's ResNet34 on MNT-DL's inputs, the label switch, the table command."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow

from scripts import BundleInputError
from scripts.data.split import load_datalist, with_label
from scripts.evaluation.compare import compare
from scripts.networks import SCANet
from tests.conftest import NO_MODELS, ROOT

# the parenchymal CTA window: the side_datalist task (occlusion side) shows as hypoperfusion
TINY = {"spatial_size": [24, 24], "widths": [4, 8, 8, 16], "num_heads": 2, "dropout": 0.0, "cta_window": [0, 150]}


def _network(overlay: str, **override) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config([os.path.join(ROOT, "configs", "inference.json"), os.path.join(ROOT, "configs", overlay)])
    parser.update({**TINY, **override})
    return parser.get_parsed_content("network_def")


def _train_fold(overlay: str, datalist: str, ckpt_dir, **override) -> ConfigWorkflow:
    """An initialised ``train_fold`` workflow of train.json + ``overlay`` at the tiny test size."""
    os.chdir(ROOT)
    wf = ConfigWorkflow(
        config_file=["configs/train.json", os.path.join("configs", overlay)],
        meta_file="configs/metadata.json",
        logging_file="configs/logging.conf",
        workflow_type="train",
        run_id="train_fold",
        datalist_file=datalist,
        ckpt_dir=str(ckpt_dir),
        batch_size=4,
        num_slices=10,
        **{**TINY, **override},
    )
    wf.initialize()
    return wf


def test_scanet_shapes_determinism_and_identity_start():
    torch.manual_seed(0)
    net = SCANet(
        in_channels=2,
        num_slices=8,
        spatial_size=(24, 24),
        neighbourhood_size=4,
        widths=(4, 8, 8, 16),
        num_heads=2,
        sat_patch_size=2,
        dropout=0.5,
    )
    x = torch.randn(3, 2, 24, 24, 8)
    net.eval()
    out, all_logits = net(x), net.forward_all(x)
    assert out.shape == (3, 1) and all_logits.shape == (3, 3)
    assert torch.equal(net(x), out)  # dropout off in eval mode: two passes agree
    # the weighted softmax layer: equal weights at start -> the mean of the branch logits
    assert torch.allclose(all_logits[:, :1], all_logits[:, 1:].mean(dim=1, keepdim=True), atol=1e-6)
    feature_map = torch.randn(2, 4, 6, 6)
    assert torch.equal(net.sat(feature_map), feature_map)  # SAT starts as the identity (zero output conv)
    with pytest.raises(ValueError, match=r"expected input \(B, 2, H, W, 8\)"):
        net(torch.randn(1, 2, 24, 24, 10))
    with pytest.raises(ValueError, match="multiple of patch size"):
        SCANet(spatial_size=(24, 24), widths=(4, 8, 8, 16), sat_patch_size=4)


@pytest.mark.parametrize(
    "overlay,slices,branches", [("experiments/scanet.json", 26, 2), ("experiments/resnet34.json", 25, 0)]
)
def test_config_networks_shapes_and_eval_determinism(overlay, slices, branches):
    torch.manual_seed(0)
    net = _network(overlay).eval()
    x = torch.randn(2, 2, 24, 24, slices)
    assert net(x).shape == (2, 1) and torch.equal(net(x), net(x))
    from scripts.networks import WithAuxiliaryLogits

    assert WithAuxiliaryLogits(net)(x).shape == (2, 1 + branches)


def test_label_switch(side_datalist):
    data = load_datalist(side_datalist)
    switched = with_label(data, "mtici_2c")
    assert switched["settings"]["label"] == "mtici_2c"
    assert [d["label"] for d in switched["training"]] == [d["mtici_2c"] for d in data["training"]]
    assert [d["patient_id"] for d in switched["training"]] == [d["patient_id"] for d in data["training"]]
    assert with_label(data, None) is data
    with pytest.raises(BundleInputError, match="label 'tici' is unknown"):
        with_label(data, "tici")


def test_scanet_trains_through_the_bundle_and_lowers_the_loss(side_datalist, tmp_path):
    no_augmentation = {f"train#random_transforms#{i}#prob": 0.0 for i in (0, 1, 2, 3)}
    wf = _train_fold(
        "experiments/scanet.json",
        side_datalist,
        tmp_path,
        fold=0,
        max_epochs=30,
        learning_rate=0.003,
        patience=50,
        label="fpe",
        **no_augmentation,
    )
    assert wf.parser.get_parsed_content("datalist")["settings"]["label"] == "fpe"
    wf.parser.update({"network_def#neighbourhood_size": 5})
    assert isinstance(wf.parser.get_parsed_content("network"), SCANet)
    trainer = wf.parser.get_parsed_content("train#trainer")
    losses: list = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: losses.append([]))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses[-1].append(float(e.state.output[0]["loss"])))
    wf.run()
    wf.finalize()
    epochs = [float(np.mean(x)) for x in losses]
    assert np.mean(epochs[-3:]) < np.mean(epochs[:3]) - 0.05, epochs
    assert os.path.isfile(os.path.join(str(tmp_path), "fold0", "model.pt"))


def _metrics(path, folds, test_auc, label="fpe"):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump(
            {"label": label, "bayes_auc": 0.9, "cv": {"folds": folds}, "test": {"ensemble": {"roc_auc": test_auc}}}, f
        )
    return str(path)


def test_comparison_table(tmp_path):
    keys = ("roc_auc", "accuracy", "precision", "sensitivity", "specificity", "f1")
    a = [dict.fromkeys(keys, v) for v in (0.6, 0.7, 0.8)]
    b = [dict(zip(keys, (0.5, 0.5, 0.4, 1.0, 0.0, 0.6))), dict(zip(keys, (0.7, 0.6, 0.6, 0.5, 0.7, 0.55)))]
    runs = {"A": _metrics(tmp_path / "a", a, 0.75), "B": _metrics(tmp_path / "b", b, 0.65)}
    text = compare(runs, out=str(tmp_path / "cmp"))
    assert "| A | 0.7000 (0.100) | 0.7000 (0.100) |" in text
    row_b = "| B | 0.6000 (0.141) | 0.5500 (0.071) | 0.5000 (0.141) | 0.7500 (0.354) | 0.3500 (0.495) | "
    row_b += "0.5750 (0.035) |"
    assert row_b + " n/a | 0.650 |" in text  # no predictions.csv: no pooled value, no CI
    assert "Bayes ROC-AUC of the cohort (true probabilities): 0.9000" in text
    with open(tmp_path / "cmp" / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["A", "B"]
    assert math.isclose(float(rows[1]["roc_auc_sd"]), math.sqrt(0.02), rel_tol=1e-9)
    _metrics(tmp_path / "c", a, 0.7, label="rlvo")
    with pytest.raises(BundleInputError, match="different labels"):
        compare({"A": runs["A"], "C": str(tmp_path / "c")}, out=str(tmp_path / "cmp2"))
    with pytest.raises(BundleInputError, match="no metrics.json for run 'D'"):
        compare({"D": str(tmp_path / "missing")}, out=str(tmp_path / "cmp3"))


@pytest.mark.parametrize("base,sequence,channels", [([], "ncct", 2), (["mri.json"], "adc", 3)])
def test_single_sequence_ablation_fills_the_channels(demo_cohort, base, sequence, channels):
    """The documented single-sequence override (``--image_keys "['ncct']" --channel_keys "['ncct','ncct']"``): the
    one sequence in every input channel, equal to its channel of the full input."""
    from scripts.data.cohort import read_cohort

    row = read_cohort(demo_cohort)[0]
    images = {}
    for ablated in (True, False):
        parser = ConfigParser()
        parser.read_config([os.path.join(ROOT, "configs", f) for f in ["inference.json", *base]])
        parser.update({**TINY, "ckpt_dir": NO_MODELS})
        if ablated:
            parser.update({"image_keys": [sequence], "channel_keys": [sequence] * channels})
        item = {k: row[k] for k in ("ncct", "cta", "adc", "b1000", "flair")}  # all sequences, as in a datalist
        images[ablated] = parser.get_parsed_content("preprocessing")(item)["image"]
    ablated, full = images[True], images[False]
    assert ablated.shape == full.shape == (channels, 24, 24, 25)
    assert all(torch.equal(ablated[0], ablated[c]) for c in range(channels))  # one sequence in every channel
    assert torch.equal(ablated[0], full[0]) and not torch.equal(full[0], full[1])


def test_resnet34_trains_one_epoch_through_the_bundle(side_datalist, tmp_path):
    wf = _train_fold("experiments/resnet34.json", side_datalist, tmp_path, fold=1, max_epochs=1)
    wf.run()
    wf.finalize()
    state = torch.load(os.path.join(str(tmp_path), "fold1", "model.pt"), weights_only=True)
    assert "fc.weight" in state and state["fc.weight"].shape == (1, 16)  # MONAI ResNet head on the last width


def _predictions(path, ids, labels, cv_scores, test_scores):
    with open(os.path.join(path, "predictions.csv"), "w") as f:
        f.write("patient_id,set,fold,probability,label,cutoff,prediction\n")
        for i, (pid, y, p) in enumerate(zip(ids, labels, cv_scores)):
            f.write(f"{pid},cv,{i % 2},{p},{y},0.5,{int(p >= 0.5)}\n")
        for pid, y, p in zip(ids, labels, test_scores):
            f.write(f"t{pid},test,0,{p},{y},0.5,{int(p >= 0.5)}\n")  # a fold model's row: not the ensemble
            f.write(f"t{pid},test,ensemble,{p},{y},0.5,{int(p >= 0.5)}\n")


def test_comparison_pairs_runs_with_delong(tmp_path):
    from scripts.evaluation.statistics import delong

    keys = ("roc_auc", "accuracy", "precision", "sensitivity", "specificity", "f1")
    folds = [dict.fromkeys(keys, 0.7), dict.fromkeys(keys, 0.8)]
    rng = np.random.default_rng(0)
    ids, y = [f"p{i:03d}" for i in range(60)], rng.integers(0, 2, 60)
    scores = {name: np.clip(y * w + rng.random(60), 0, 1.5) / 1.5 for name, w in (("A", 0.8), ("B", 0.2))}
    runs = {}
    for name, s in scores.items():
        runs[name] = _metrics(tmp_path / name, folds, 0.7)
        _predictions(runs[name], ids, y, s, s[::-1])
    compare(runs, out=str(tmp_path / "cmp"))
    rows = json.load(open(tmp_path / "cmp" / "comparison.json"))["rows"]
    expected = delong(y, scores["B"], scores["A"])
    assert rows[1]["cv_delong_p"] == pytest.approx(expected["p"]) and rows[1]["cv_auc_diff"] < 0
    assert rows[1]["test_delong_p"] == pytest.approx(delong(y, scores["B"][::-1], scores["A"][::-1])["p"])
    assert rows[0]["cv_delong_p"] is None  # the reference itself
    assert "Paired against A (DeLong)" in open(tmp_path / "cmp" / "comparison.md").read()
    other = _metrics(tmp_path / "C", folds, 0.7)
    _predictions(other, ids[:-1] + ["p999"], y, scores["B"], scores["B"])
    with pytest.raises(BundleInputError, match="run 'C': cv patients differ from run 'A'"):
        compare({"A": runs["A"], "C": other}, out=str(tmp_path / "cmp2"))


def test_comparison_cis_test_fold_table_and_test_roc_overlay(tmp_path):
    """Pooled and test-ensemble ROC-AUCs with the stratified bootstrap CI of their predictions; the test set as mean
    (SD) over the fold models; the mean test-set ROC of each run's fold models drawn (AJNR Fig 4 layout)."""
    from sklearn.metrics import roc_auc_score

    from scripts.evaluation.statistics import bootstrap_ci

    keys = ("roc_auc", "accuracy", "precision", "sensitivity", "specificity", "f1")
    rng = np.random.default_rng(1)
    ids, y = [f"p{i:03d}" for i in range(80)], rng.integers(0, 2, 80)
    runs = {}
    for name, w in (("CT", 0.8), ("MR", 0.3)):
        test_folds = [dict.fromkeys(keys, v) for v in (0.6, 0.8)]
        path = _metrics(tmp_path / name, [dict.fromkeys(keys, 0.7)] * 2, 0.7)
        metrics = json.load(open(os.path.join(path, "metrics.json")))
        metrics["test"]["folds"] = test_folds
        json.dump(metrics, open(os.path.join(path, "metrics.json"), "w"))
        s = np.clip(y * w + rng.random(80), 0, 1.5) / 1.5
        _predictions(path, ids, y, s, s[::-1])
        runs[name] = path
    text = compare(runs, out=str(tmp_path / "cmp"))
    rows = json.load(open(tmp_path / "cmp" / "comparison.json"))["rows"]
    cv = [r for r in csv.DictReader(open(os.path.join(runs["CT"], "predictions.csv"))) if r["set"] == "cv"]
    y_cv, p_cv = [int(r["label"]) for r in cv], [float(r["probability"]) for r in cv]
    assert rows[0]["cv_pooled_roc_auc"] == pytest.approx(roc_auc_score(y_cv, p_cv))
    assert [rows[0]["cv_ci_low"], rows[0]["cv_ci_high"]] == pytest.approx(list(bootstrap_ci(y_cv, p_cv)))
    assert rows[0]["cv_ci_low"] < rows[0]["cv_pooled_roc_auc"] < rows[0]["cv_ci_high"]
    assert rows[0]["test_roc_auc_mean"] == pytest.approx(0.7)
    assert rows[0]["test_roc_auc_sd"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert "Test set: mean (SD) over the fold models" in text and "| CT | 0.7000 (0.141) |" in text
    assert f"| {rows[0]['cv_pooled_roc_auc']:.3f} ({rows[0]['cv_ci_low']:.3f}-{rows[0]['cv_ci_high']:.3f}) |" in text
    assert (tmp_path / "cmp" / "roc_test.png").read_bytes()[:4] == b"\x89PNG" and "roc_test.png" in text
