"""The mirrored hemisphere aligned to the patient's own, vessel tree on vessel tree, before any voxel comparison.

The vessel box of ``configs/clot_readings.json`` holds NCCT, CTA and their left-right mirrors: each voxel's counterpart
in the other hemisphere is the patient's own control. Real circles of Willis are not symmetric to the millimetre, so a
plain flip puts a vessel beside its counterpart (2-4 mm on the varied demo) and a voxel-to-voxel comparison then reads
every normal vessel as occluded. :func:`align_mirror` moves the mirror channels of each hemisphere onto that
hemisphere's own vessels:

1. the vessel maps: CTA minus NCCT (the iodine), as a share of the patient's own arterial enhancement (its
   ``arterial_quantile`` over the soft tissue: thresholds relative to the scan, not to one scanner's HU), bone and
   calcification (dense on NCCT) left out;
2. per hemisphere, the integer shift (up to ``max_shift`` voxels per axis) that best overlaps the two maps (an FFT
   cross-correlation: every shift at once), then a rigid refinement (rotation up to ``max_angle`` rad, sub-voxel
   shift) maximising their normalised cross-correlation, Gaussian-smoothed by ``sigma`` voxels for capture range,
   over the voxels where either map has a vessel;
3. the mirror channels resampled through that motion by a cubic B-spline (``order``): trilinear interpolation
   averages a vessel a voxel or two wide with its surroundings wherever the motion is not a whole voxel, so the
   mirror's vessels would read fainter and wider than the patient's own, and the clot's density and perviousness
   readings with them (docs/performance.md, "Not the alignment").

ANTsPy's rigid registration (``ants.registration(type_of_transform="Rigid")``, mean squares, masked to the
hemisphere) diverged on 3 of 6 hemispheres of the varied demo in a test, so the search is done here, in torch (a few
milliseconds per iteration on the 67 x 46 x 43 box). ``MirrorAlignd`` also turns every patient so that the occluded
hemisphere (the cohort's ``side``) is the box's first half: a reader then looks only there.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Hashable, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage

from scripts import BundleInputError


def gaussian(v: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, H, W, D) smoothed by a separable Gaussian of ``sigma`` voxels (edges replicated); 0 = unchanged."""
    if sigma <= 0:
        return v
    r = int(math.ceil(2.5 * sigma))
    t = torch.arange(-r, r + 1, dtype=v.dtype, device=v.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    out = v[:, None]
    for axis in range(3):
        pad = [0, 0, 0, 0, 0, 0]
        pad[4 - 2 * axis], pad[5 - 2 * axis] = r, r
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = -1
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape))
    return out[:, 0]


def enhancement_maps(
    x: torch.Tensor, windows: Sequence[Sequence[float]], bone_level: float, arterial_quantile: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 4, H, W, D) windowed NCCT, CTA, mirrored NCCT, mirrored CTA -> own and mirrored enhancement (CTA - NCCT,
    HU), soft tissue (B, H, W, D; bone, dense on either NCCT, grown by a voxel) and the arterial enhancement (B,)."""
    (n_lo, n_hi), (c_lo, c_hi) = windows
    x = x.float()
    own = (x[:, 1] * (c_hi - c_lo) + c_lo) - (x[:, 0] * (n_hi - n_lo) + n_lo)
    mirror = (x[:, 3] * (c_hi - c_lo) + c_lo) - (x[:, 2] * (n_hi - n_lo) + n_lo)
    bone = ((x[:, 0] >= bone_level) | (x[:, 2] >= bone_level)).float()
    soft = F.max_pool3d(bone[:, None], 3, 1, 1)[:, 0] < 0.5
    both = torch.where(soft, torch.maximum(own, mirror), torch.zeros_like(own))
    arterial = torch.quantile(both.flatten(1), arterial_quantile, dim=1).clamp_min(50.0)
    return own, mirror, soft, arterial


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    ax, ay, az = angles.unbind(-1)
    one, zero = torch.ones_like(ax), torch.zeros_like(ax)
    rx = torch.stack([one, zero, zero, zero, ax.cos(), -ax.sin(), zero, ax.sin(), ax.cos()]).view(3, 3)
    ry = torch.stack([ay.cos(), zero, ay.sin(), zero, one, zero, -ay.sin(), zero, ay.cos()]).view(3, 3)
    rz = torch.stack([az.cos(), -az.sin(), zero, az.sin(), az.cos(), zero, zero, zero, one]).view(3, 3)
    return rz @ ry @ rx


def best_shift(own: torch.Tensor, mirror: torch.Tensor, max_shift: int) -> torch.Tensor:
    """(H, W, D) maps -> the integer shift t (3,) within ``max_shift`` maximising sum own(p) mirror(p + t)."""
    shape = own.shape
    corr = torch.fft.irfftn(torch.fft.rfftn(own).conj() * torch.fft.rfftn(mirror), s=shape)
    steps = torch.arange(-max_shift, max_shift + 1, device=own.device)
    sub = corr[steps % shape[0]][:, steps % shape[1]][:, :, steps % shape[2]]
    n = len(steps)
    i = int(sub.argmax())
    return torch.stack([steps[i // (n * n)], steps[(i // n) % n], steps[i % n]]).float()


def sample_at(image: torch.Tensor, coords: torch.Tensor, order: int = 3) -> torch.Tensor:
    """``image`` (H, W, D) at the voxel coordinates ``coords`` (N, 3) -> (N,): a B-spline of ``order`` (1 =
    trilinear), edges replicated, kept within the image's own range (a cubic spline overshoots at a sharp edge)."""
    if order == 1:
        size = torch.tensor(list(image.shape), dtype=coords.dtype, device=coords.device)
        grid = (2 * coords / (size - 1) - 1).flip(-1).view(1, 1, 1, -1, 3).to(image.device)
        return F.grid_sample(image.float()[None, None], grid, "bilinear", "border", align_corners=True).flatten()
    source = image.detach().float().cpu()
    values = ndimage.map_coordinates(source.numpy(), coords.T.cpu().numpy(), order=int(order), mode="nearest")
    return torch.from_numpy(values).to(image.device).clamp(float(source.min()), float(source.max()))


def resample(
    image: torch.Tensor, points: torch.Tensor, motion: torch.Tensor, centre: torch.Tensor, order: int = 3
) -> torch.Tensor:
    """``image`` (H, W, D) at the voxel ``points`` (N, 3) moved by ``motion`` about ``centre`` -> (N,)
    (:func:`sample_at`)."""
    return sample_at(image, (points - centre) @ _rotation(motion[:3]).T + centre + motion[3:], order)


def rigid_motion(
    own: torch.Tensor,
    mirror: torch.Tensor,
    half: torch.Tensor,
    start: torch.Tensor,
    iterations: int = 40,
    sigma: float = 1.0,
    max_angle: float = 0.15,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(H, W, D) vessel maps and the hemisphere ``half`` (bool) -> the rigid motion (angles rad, shift voxels; (6,))
    and its centre (3,) that carry ``mirror`` onto ``own`` there, starting from the shift ``start`` (3,)."""
    own_s, mirror_s = gaussian(own[None], sigma)[0], gaussian(mirror[None], sigma)[0]
    everywhere = torch.nonzero(torch.ones_like(half)).float()
    zero = start.new_zeros(3)
    at_start = resample(mirror_s, everywhere, torch.cat([zero, start]), zero, 1).view(own.shape)
    region = ((own_s > 0.02) | (at_start > 0.02)) & half  # where either hemisphere has a vessel
    if int(region.sum()) < 20:
        return torch.cat([zero, start]), zero
    points = torch.nonzero(region).float()
    centre = points.mean(0)
    target = own_s[region] - own_s[region].mean()
    angles = zero.clone().requires_grad_(True)
    shift = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [angles], "lr": 0.02}, {"params": [shift], "lr": 0.2}])
    for _ in range(int(iterations)):
        moved = resample(mirror_s, points, torch.cat([angles.clamp(-max_angle, max_angle), shift]), centre, 1)
        moved = moved - moved.mean()
        ncc = (target * moved).sum() / (target.norm() * moved.norm() + 1e-6)
        optimizer.zero_grad()
        (-ncc).backward()
        optimizer.step()
    return torch.cat([angles.clamp(-max_angle, max_angle), shift]).detach(), centre


def align_mirror(
    x: torch.Tensor,
    windows: Sequence[Sequence[float]] = ((0.0, 100.0), (0.0, 400.0)),
    bone_level: float = 0.95,
    arterial_quantile: float = 0.999,
    max_shift: int = 3,
    iterations: int = 40,
    sigma: float = 1.0,
    max_angle: float = 0.15,
    order: int = 3,
) -> torch.Tensor:
    """(4, H, W, D) NCCT, CTA, mirrored NCCT, mirrored CTA in [0, 1] -> the same with the mirror channels of each
    hemisphere (the first and second half along H, the left-right axis) moved onto that hemisphere's own vessels,
    resampled by a B-spline of ``order`` (1 = trilinear)."""
    if x.ndim != 4 or x.shape[0] != 4:
        raise ValueError(f"expected (4, H, W, D): NCCT, CTA and their mirrors, got {list(x.shape)}")
    own, mirror, soft, arterial = enhancement_maps(x[None], windows, bone_level, arterial_quantile)
    own_map = ((own[0] / arterial[0] - 0.3).clamp(0, 1)) * soft[0]
    mirror_map = ((mirror[0] / arterial[0] - 0.3).clamp(0, 1)) * soft[0]
    out = x.clone().float()
    h = x.shape[1]
    everywhere = torch.nonzero(torch.ones(x.shape[1:], dtype=torch.bool)).float()
    with torch.enable_grad():
        for first in (True, False):
            half = torch.zeros(x.shape[1:], dtype=torch.bool)
            half[slice(0, h // 2) if first else slice(h // 2, h)] = True
            start = best_shift(own_map * half, mirror_map, int(max_shift))
            motion, centre = rigid_motion(own_map, mirror_map, half, start, iterations, sigma, max_angle)
            for c in (2, 3):
                moved = resample(x[c], everywhere, motion, centre, order).view(x.shape[1:])
                out[c] = torch.where(half, moved, out[c])
    return out.to(x.dtype)


class MirrorAlignd(MapTransform):
    """:func:`align_mirror` on ``keys`` (the 4-channel mirrored vessel box), then, with ``side_key``, the box flipped
    left-right (all four channels) when the occluded side is ``"R"``, so that the occluded hemisphere is always the
    first half along the left-right axis (RAS: index 0 is the patient's left).

    Args:
        keys: the image key(s), (4, H, W, D) NCCT, CTA, mirrored NCCT, mirrored CTA, windowed to [0, 1].
        windows: the NCCT and CTA windows in HU.
        side_key: the item's occlusion side ("L" / "R"); None = not turned.
        kwargs: :func:`align_mirror`'s search settings.
    """

    def __init__(
        self,
        keys: KeysCollection,
        windows: Sequence[Sequence[float]] = ((0.0, 100.0), (0.0, 400.0)),
        side_key: str | None = "side",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.windows, self.side_key, self.kwargs = windows, side_key, kwargs

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        side = d.get(self.side_key) if self.side_key else "L"
        if side not in ("L", "R"):
            raise BundleInputError(f"patient {d.get('patient_id')}: side '{side}': the occluded side must be L or R")
        for key in self.key_iterator(d):
            image = d[key]
            aligned = align_mirror(torch.as_tensor(image), self.windows, **self.kwargs)
            if side == "R":
                aligned = aligned.flip(1)
            d[key] = aligned if not hasattr(image, "meta") else type(image)(aligned, meta=image.meta)
        return d
