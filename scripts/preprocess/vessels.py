"""An automated vessel map from CTA: multi-scale Hessian vesselness (Frangi, scikit-image) inside the brain.

Bright tubular structures (contrast-filled arteries) score high, flat tissue and plate-like edges low. Used as an
extra image channel (``vessels``; Canals et al. 2025 fed an automated vascular segmentation to their model).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

VESSEL_HU = (100.0, 600.0)  # contrast-filled vessels; the CTA is clipped to this window before filtering


def vesselness(
    cta: np.ndarray,
    spacing: Sequence[float],
    brain_mask: np.ndarray | None = None,
    radii_mm: Sequence[float] = (1.0, 2.0, 3.0),
) -> np.ndarray:
    """Frangi vesselness of a CTA in HU (X, Y, Z) with voxel ``spacing`` (mm), scaled to 0..1 (the 99.9th
    percentile inside the brain -> 1), zero outside ``brain_mask``. ``radii_mm``: vessel radii looked for.

    The volume is resampled to isotropic voxels of the finest spacing for the Hessian (Frangi assumes
    isotropic voxels) and back."""
    from skimage.filters import frangi

    spacing = np.asarray(spacing, dtype=float)
    step = float(spacing.min())
    zoom = spacing / step
    window = np.clip(np.asarray(cta, dtype=np.float32), *VESSEL_HU) - VESSEL_HU[0]
    iso = ndimage.zoom(window, zoom, order=1) if np.any(zoom != 1) else window
    sigmas = [r / step for r in radii_mm]
    score = frangi(iso, sigmas=sigmas, black_ridges=False, alpha=0.5, beta=0.5, gamma=None)
    if np.any(zoom != 1):
        score = ndimage.zoom(score, np.asarray(window.shape) / np.asarray(iso.shape), order=1)
        score = score[tuple(slice(0, n) for n in window.shape)]
    inside = np.ones(window.shape, bool) if brain_mask is None else np.asarray(brain_mask) > 0.5
    score = np.where(inside, score, 0)
    top = np.percentile(score[inside], 99.9) if inside.any() else 0
    return np.clip(score / top, 0, 1).astype(np.float32) if top > 0 else np.zeros_like(score, np.float32)
