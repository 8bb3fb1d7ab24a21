"""SimSiam pieces: the loss by hand and its stop-gradient, the collapse score, gradients reach the encoder."""

from __future__ import annotations

import math

import pytest
import torch

from scripts import BundleInputError
from scripts.networks import MNTDL
from scripts.networks.simsiam import SimSiam, collapse_score
from scripts.training.losses import SimSiamLoss
from scripts.training.pretraining import encoder_state, leakage_guard, load_pretrained_encoder


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


def test_views_are_augmented_independently():
    from monai.transforms import Compose, CopyItemsd

    from scripts.training.pretraining import view_transforms

    pipeline = Compose(
        [CopyItemsd("image", times=2, names=["view1", "view2"])]
        + view_transforms("view1", [24, 24], 10)
        + view_transforms("view2", [24, 24], 10)
    )
    pipeline.set_random_state(seed=0)
    image = torch.rand(2, 32, 32, 10)
    out = pipeline({"image": image})
    assert out["view1"].shape == out["view2"].shape == (2, 24, 24, 10)
    assert not torch.allclose(out["view1"], out["view2"])


def test_collapse_monitor_warns_only_on_collapse(caplog):
    from types import SimpleNamespace

    from scripts.training.pretraining import CollapseMonitor

    torch.manual_seed(0)
    for z, collapsed in ((torch.randn(16, 64), False), (torch.ones(16, 64) + 1e-5 * torch.randn(16, 64), True)):
        monitor = CollapseMonitor(threshold=0.2)
        engine = SimpleNamespace(state=SimpleNamespace(output={"z": z}, metrics={}, epoch=1))
        caplog.clear()
        monitor._iteration(engine)
        monitor._epoch(engine)
        assert ("SimSiam collapse" in caplog.text) == collapsed
        assert (engine.state.metrics["collapse_score"] < 0.01) == collapsed


def test_simsiam_iteration_in_a_monai_trainer_lowers_the_loss():
    from ignite.engine import Events
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer

    from scripts.training.pretraining import CollapseMonitor, simsiam_iteration

    torch.manual_seed(0)
    base = torch.rand(16, 2, 24, 24, 10)
    data = [{"view1": v + 0.05 * torch.randn_like(v), "view2": v + 0.05 * torch.randn_like(v)} for v in base]
    model = SimSiam(MNTDL(in_channels=2, num_slices=10, widths=(4, 8, 8, 16), num_heads=2, dropout=0.0), dim=32)
    losses: list = []
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=6,
        train_data_loader=DataLoader(data, batch_size=8, shuffle=True),
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        loss_function=SimSiamLoss(),
        iteration_update=simsiam_iteration,
        decollate=False,
        train_handlers=[CollapseMonitor()],
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    trainer.run()
    assert -1.0 <= min(losses) and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05
    assert trainer.state.metrics["collapse_score"] > 0.2 / 32**0.5
