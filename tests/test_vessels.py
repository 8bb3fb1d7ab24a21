"""The CTA vessel map: high along a contrast-filled tube, low on flat tissue and on a bright slab."""

from __future__ import annotations

import numpy as np

from scripts.preprocess.vessels import vesselness


def test_vesselness_is_high_on_a_tube_and_low_on_flat_tissue():
    rng = np.random.default_rng(0)
    shape, spacing = (48, 48, 24), (1.0, 1.0, 2.0)  # anisotropic voxels, as a thick-slice CTA
    x, y, z = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    cta = 35 + rng.normal(0, 5, shape)  # brain parenchyma in HU
    tube = (y - 20) ** 2 + (z - 24) ** 2 <= 2.0**2  # an artery of radius 2 mm along x, 350 HU
    slab = (x >= 30) & (x < 40)  # a 10 mm plate of mildly enhancing tissue
    cta[slab] = 60
    cta[tube] = 350
    brain = np.ones(shape, bool)
    brain[:, :, :2] = False
    score = vesselness(cta, spacing, brain)
    assert score.shape == shape and score.min() >= 0 and score.max() <= 1
    away = np.abs(y - 20) > 6
    assert np.median(score[5:43, 20, 12]) > 0.9  # the centre line
    assert score[away].max() < 0.05 and score[slab & away].mean() < 0.01
    assert (score[~brain] == 0).all()
