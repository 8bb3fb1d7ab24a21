"""SimSiam pieces: the loss by hand and its stop-gradient, the collapse score, gradients reach the encoder."""

from __future__ import annotations

import math

import pytest
import torch

from scripts import BundleInputError
from scripts.losses import SimSiamLoss
from scripts.networks import MNTDL
from scripts.networks.simsiam import SimSiam, collapse_score
from scripts.pretraining import encoder_state, leakage_guard, load_pretrained_encoder


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_loss_by_hand_and_stop_gradient():
    p1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    p2 = torch.tensor([[0.0, 2.0], [3.0, -1.0]], requires_grad=True)
    z1 = torch.tensor([[1.0, 1.0], [0.0, 1.0]], requires_grad=True)
    z2 = torch.tensor([[2.0, 0.0], [-1.0, 1.0]], requires_grad=True)
    loss = SimSiamLoss()(p1, p2, z1, z2)
    expected = -0.5 * (
        (_cos([1, 0], [2, 0]) + _cos([1, 1], [-1, 1])) / 2 + (_cos([0, 2], [1, 1]) + _cos([3, -1], [0, 1])) / 2
    )
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    loss.backward()
    assert z1.grad is None and z2.grad is None  # stop-gradient: the targets get nothing
    assert p1.grad is not None and p1.grad.abs().sum() > 0


def test_collapse_score():
    torch.manual_seed(0)
    healthy = collapse_score(torch.randn(512, 64))
    assert abs(healthy - 1 / math.sqrt(64)) < 0.01
    assert collapse_score(torch.ones(512, 64) + 1e-4 * torch.randn(512, 64)) < 1e-3


def test_simsiam_shapes_and_gradients_reach_the_encoder():
    encoder = MNTDL(in_channels=2, num_slices=10, widths=(4, 8, 8, 16), num_heads=2)
    model = SimSiam(encoder, dim=32)
    x1, x2 = torch.randn(4, 2, 24, 24, 10), torch.randn(4, 2, 24, 24, 10)
    p1, p2, z1, z2 = model(x1, x2)
    assert p1.shape == p2.shape == z1.shape == z2.shape == (4, 32)
    assert model.predictor[0].out_features == 8  # bottleneck dim / 4
    SimSiamLoss()(p1, p2, z1, z2).backward()
    stem = dict(encoder.named_parameters())["stem.0.weight"]
    assert stem.grad is not None and stem.grad.abs().sum() > 0


def test_pretrained_encoder_loads_strictly(tmp_path):
    torch.manual_seed(0)
    pretrained = SimSiam(MNTDL(in_channels=2, num_slices=10, widths=(4, 8, 8, 16), num_heads=2), dim=32)
    path = str(tmp_path / "pretrained.pt")
    torch.save({"model": pretrained.state_dict()}, path)
    classifier = MNTDL(in_channels=2, num_slices=10, widths=(4, 8, 8, 16), num_heads=2)
    head_before = classifier.classifier.fc.weight.clone()
    load_pretrained_encoder(classifier, path)
    for key, value in encoder_state(classifier.state_dict()).items():
        assert torch.equal(value, pretrained.encoder.state_dict()[key]), key
    assert torch.equal(classifier.classifier.fc.weight, head_before)  # heads are not touched
    wider = MNTDL(in_channels=2, num_slices=10, widths=(4, 8, 8, 32), num_heads=2)
    with pytest.raises(BundleInputError, match=r"shape mismatch local\.2\.0\.bn1\.bias \(16,\) vs \(32,\)"):
        load_pretrained_encoder(wider, path)
    mri = MNTDL(in_channels=3, num_slices=10, widths=(4, 8, 8, 16), num_heads=2, share_slice_attention=False)
    with pytest.raises(BundleInputError, match=r"missing slice_attention\.1\..*shape mismatch stem\.0\.weight"):
        load_pretrained_encoder(mri, path)


def test_leakage_guard():
    datalist = {
        "training": [{"patient_id": f"p{i}", "fold": i % 5} for i in range(10)],
        "test": [{"patient_id": "t0"}, {"patient_id": "t1"}],
    }
    pool = [{"patient_id": pid} for pid in ("u0", "u1", "p0", "p1", "t1")]
    kept, dropped = leakage_guard(pool, datalist, folds=[0])
    assert [d["patient_id"] for d in kept] == ["u0", "u1", "p1"] and dropped == ["p0", "t1"]
    kept, dropped = leakage_guard(pool, datalist, folds=range(5))
    assert [d["patient_id"] for d in kept] == ["u0", "u1"]
    with pytest.raises(BundleInputError, match="holds 3 patient"):
        leakage_guard(pool, datalist, folds=range(5), on_overlap="refuse")
