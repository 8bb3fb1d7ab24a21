"""scripts.data.resize.AntiAliasedResized: the values of MONAI's Resized with anti-aliasing, by another route."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Resized

from scripts.data.resize import AntiAliasedResized


@pytest.mark.parametrize(
    "shape, size",
    [((2, 91, 109, 91), (112, 112, 13)), ((1, 40, 50, 60), (30, 60, 12)), ((2, 67, 46, 43), (33, 46, 43))],
)
def test_same_values_as_monai_resized(shape, size):
    """Shrinking along one or several axes, enlarging along others: the same image, affine and type as MONAI's
    ``Resized(anti_aliasing=True)`` (float32 rounding only)."""
    torch.manual_seed(0)
    image = MetaTensor(torch.rand(*shape) * 400 - 50, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    expected = Resized("image", size, mode="trilinear", anti_aliasing=True)({"image": image})["image"]
    got = AntiAliasedResized("image", size, mode="trilinear", anti_aliasing=True)({"image": image})["image"]
    plain = Resized("image", size, mode="trilinear", anti_aliasing=False)({"image": image})["image"]
    assert isinstance(got, MetaTensor) and got.shape == expected.shape == (shape[0], *size)
    assert torch.allclose(got.affine, expected.affine)
    assert (got - expected).abs().max() < 1e-4  # values up to 350: float32 rounding
    assert (plain - expected).abs().max() > 1.0  # the smoothing itself is there and matters


def test_nothing_shrinks_or_no_anti_aliasing():
    image = MetaTensor(torch.rand(1, 10, 12, 14))
    for kwargs in ({"anti_aliasing": True}, {"anti_aliasing": False}):
        expected = Resized("image", (20, 12, 28), **kwargs)({"image": image})["image"]
        assert torch.equal(AntiAliasedResized("image", (20, 12, 28), **kwargs)({"image": image})["image"], expected)
    for size, kwargs in (((5, -1, 7), {}), ((5, 6, 7), {"anti_aliasing_sigma": 2.0})):  # MONAI's own path
        expected = Resized("image", size, anti_aliasing=True, **kwargs)({"image": image})["image"]
        got = AntiAliasedResized("image", size, anti_aliasing=True, **kwargs)({"image": image})["image"]
        assert torch.equal(got, expected)
