"""Deep-supervision loss against a hand computation."""

from __future__ import annotations

import math

import torch

from scripts.training.losses import DeepSupervisionBCELoss


def _bce(logit: float, y: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_loss_matches_hand_computation():
    logits = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 0.7, 0.0]])
    target = torch.tensor([1.0, 0.0])
    main = (_bce(0.5, 1) + _bce(-0.3, 0)) / 2
    aux1 = (_bce(-1.0, 1) + _bce(0.7, 0)) / 2
    aux2 = (_bce(2.0, 1) + _bce(0.0, 0)) / 2
    for gamma in (0.5, 0.0, 2.0):
        loss = DeepSupervisionBCELoss(gamma)(logits, target)
        assert math.isclose(loss.item(), main + gamma * (aux1 + aux2), rel_tol=1e-6)


def test_loss_main_only_and_column_target():
    logits = torch.tensor([[1.5], [-2.0]])
    loss = DeepSupervisionBCELoss()(logits, torch.tensor([[0.0], [1.0]]))
    assert math.isclose(loss.item(), (_bce(1.5, 0) + _bce(-2.0, 1)) / 2, rel_tol=1e-6)
