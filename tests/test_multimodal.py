"""Clinical variables fused into the image network: the DAFT formula, the per-fold tabular fit, the clear errors,
and a multimodal MNT-DL trained through monai.bundle whose saved fold model carries the fitted transform."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from scripts import BundleInputError
from scripts.data.clinical import fit_tabular, fold_training_rows, raw_clinical
from scripts.networks.daft import DAFT
from scripts.networks.multimodal import MultimodalMNTDL, MultimodalResNet
from scripts.networks.tabular import TabularEncoder
from tests.helpers import config_list, run_bundle
from tests.test_workflow import FIT, TINY, train_recording_losses

COLUMNS = {"age": "numeric", "sex": ["M", "F"], "nihss": "numeric"}


def test_daft_equals_the_hand_formula():
    torch.manual_seed(0)
    daft = DAFT(channels=3, tabular_features=2, bottleneck=4)
    for p in daft.parameters():
        torch.nn.init.normal_(p)
    features, tabular = torch.randn(2, 3, 4, 5), torch.randn(2, 2)
    f, x = features.numpy().astype(np.float64), tabular.numpy().astype(np.float64)
    w1 = daft.squeeze.weight.detach().numpy()
    w2, b2 = daft.expand.weight.detach().numpy(), daft.expand.bias.detach().numpy()
    s = f.mean(axis=(2, 3))
    h = np.maximum(np.concatenate([s, x], axis=1) @ w1.T, 0)  # no bias in W1
    alpha, beta = np.split(h @ w2.T + b2, 2, axis=1)
    expected = alpha[:, :, None, None] * f + beta[:, :, None, None]
    np.testing.assert_allclose(daft(features, tabular).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert DAFT(64, 5).squeeze.out_features == int((4 * 64 + 5) / 7)  # the paper's bottleneck
    fresh = DAFT(3, 2)
    assert torch.equal(fresh(features, tabular), features)  # starts as the identity


def _rows(ages, sexes, nihss):
    return [
        {"patient_id": f"p{i}", "age": a, "sex": s, "nihss": n} for i, (a, s, n) in enumerate(zip(ages, sexes, nihss))
    ]


def test_tabular_transform_is_fitted_on_the_fold_training_rows_only():
    train = _rows([60, 70, 80, 90], ["M", "M", "M", "M"], [4, 8, "", 12])
    inner, outer = _rows([50], ["M"], [2]), _rows([20, 30], ["F", "M"], [40, 30])  # F only outside training
    for r in inner:
        r["patient_id"] = "inner"
    datalist = {
        "settings": {"folds": 2},
        "inner_validation": {"0": ["inner"], "1": []},
        "training": [{**r, "fold": 1} for r in train + inner] + [{**r, "fold": 0} for r in outer],
    }
    network = TabularEncoderHolder(COLUMNS)
    fit_tabular(network, fold_training_rows(datalist, 0))
    enc = network.tabular
    assert enc.mean.tolist() == pytest.approx([75.0, 8.0]) and enc.sd.tolist() == pytest.approx(
        [np.std([60, 70, 80, 90]), np.std([4, 8, 12])]
    )
    assert enc.seen.tolist() == [1.0, 0.0]  # F never seen in training
    raw = torch.as_tensor(np.stack([raw_clinical(r, COLUMNS) for r in outer + train[2:3]]))
    out = enc(raw).numpy()  # [age z, nihss z, age missing, nihss missing, M, F, sex missing]
    assert out.shape == (3, 7)
    assert out[0, 5] == 0 and out[0, 4] == 0  # the unseen category F: no one-hot weight, not "missing" either
    assert out[1, 4] == 1 and out[0, 0] == pytest.approx((20 - 75) / np.std([60, 70, 80, 90]))
    assert out[2, 1] == 0 and out[2, 3] == 1  # missing NIHSS: training mean (z = 0) and the indicator
    with pytest.raises(
        BundleInputError, match="patient p0: the model needs the clinical values smoker, bmi: give"
    ) as err:
        raw_clinical(train[0], {"smoker": "numeric", "age": "numeric", "bmi": "numeric"})  # every missing one named
    assert str(err.value).endswith("--clinical \"{'smoker': VALUE, 'bmi': VALUE}\"")  # how to give them
    with pytest.raises(BundleInputError, match="unknown category 'X' \\(declared: M, F\\)"):
        raw_clinical({**train[0], "sex": "X"}, COLUMNS)


class TabularEncoderHolder(torch.nn.Module):
    def __init__(self, columns):
        super().__init__()
        self.tabular = TabularEncoder(columns)


@pytest.mark.parametrize("fusion", ["daft", "late"])
def test_multimodal_networks_use_the_clinical_vector(fusion):
    torch.manual_seed(0)
    columns = {"age": "numeric", "sex": ["M", "F"]}
    x = torch.randn(2, 2, 24, 24, 10)
    a, b = torch.tensor([[60.0, 0.0], [60.0, 0.0]]), torch.tensor([[90.0, 1.0], [90.0, 1.0]])
    tiny = dict(in_channels=2, widths=(4, 8, 8, 16), fusion=fusion, dropout=0.0)
    for net in (MultimodalMNTDL(columns, num_slices=10, num_heads=2, **tiny), MultimodalResNet(columns, **tiny)):
        net.tabular.fit(np.array([[50.0, 0], [80, 1]]))
        if fusion == "daft":
            torch.nn.init.normal_(net.daft.expand.weight)  # leave the identity start
        net.eval()
        out_a, out_b = net(x, a), net(x, b)
        assert out_a.shape == (2, 1) and not torch.allclose(out_a, out_b)
        if isinstance(net, MultimodalMNTDL):
            assert net.forward_all(x, a).shape == (2, 3) and torch.allclose(net.forward_all(x, a)[:, :1], out_a)


def test_multimodal_training_through_the_bundle(side_datalist, tmp_path):
    """DAFT MNT-DL through monai.bundle (train + evaluate + inference): the loss falls, the fold model holds the
    encoder fitted on that fold's training rows, and inference predicts from images and clinical values."""
    ckpt = str(tmp_path / "models")
    overrides = {0: {**TINY, **FIT, "max_epochs": 30}, 1: {**TINY, "max_epochs": 1}}
    losses = train_recording_losses(["train.json", "experiments/multimodal.json"], side_datalist, ckpt, overrides)
    assert np.mean(losses[0][-3:]) < 0.8 * np.mean(losses[0][:3]), losses[0]
    from scripts.data.split import load_datalist

    datalist = load_datalist(side_datalist)
    state = torch.load(os.path.join(ckpt, "fold0", "model.pt"), map_location="cpu")
    ages = [r["age"] for r in fold_training_rows(datalist, 0)]
    assert state["tabular.mean"][0].item() == pytest.approx(np.mean(ages), rel=1e-5)
    assert state["tabular.fitted"].item() == 1
    keys = ("spatial_size", "num_slices", "widths", "num_heads", "dropout", "cta_window")
    shape = [f"--{k}={json.dumps(TINY[k])}" for k in keys]
    data = ["--datalist_file", side_datalist, "--ckpt_dir", ckpt, *shape, "--explain", "true"]
    evaluate = config_list("configs/train.json", "configs/experiments/multimodal.json", "configs/evaluate.json")
    result = run_bundle("--config_file", evaluate, *data, "--output_dir", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr[-2000:]
    infer = config_list("configs/inference.json", "configs/experiments/multimodal.json")
    result = run_bundle("--config_file", infer, *data, "--output_dir", str(tmp_path / "infer"), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    predicted = {r["patient_id"]: float(r["probability"]) for r in _read(tmp_path / "infer" / "predictions.csv")}
    evaluated = {
        r["patient_id"]: float(r["probability"])
        for r in _read(tmp_path / "eval" / "predictions.csv")
        if r["fold"] == "ensemble"
    }
    assert predicted.keys() == evaluated.keys()
    assert all(predicted[k] == pytest.approx(evaluated[k], abs=1e-5) for k in predicted)
    # explanations: one file per patient with clinical attributions, and the summary over the patients, written by
    # inference (every patient given) and by the evaluation (the test set)
    assert json.load(open(tmp_path / "eval" / "explanations" / "summary.json"))["patients"] == len(predicted)
    summary = json.load(open(tmp_path / "infer" / "explanations" / "summary.json"))
    assert summary["patients"] == len(predicted)
    assert set(summary["mean_abs_clinical_attribution"]) == {"age", "sex", "nihss", "onset_to_imaging_min", "ivt"}


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
