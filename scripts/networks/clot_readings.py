"""ClotReadingNet: the thrombus literature's four clot and collateral readings, fixed, and one learned linear layer.

Built for the mirrored vessel box of ``configs/clot_readings.json`` (NCCT and CTA windowed to [0, 1], each followed by
its left-right mirror) at the crop's own grid (``configs/clot_readings.json``: no resampling blur). The first-pass
literature reads a few numbers off the clot and the vessels beyond it; this network reads them the same way on every
patient, without a learned segmentation:

- **enhancement** = CTA minus NCCT in HU (the iodine; the clot's own density cancels); **vessels**: voxels whose
  mirror enhances by more than ``vessel_level`` HU (the core of a contrast-filled vessel; the other hemisphere is the
  patient's own control), bone and calcification excluded (dense on NCCT or its mirror); each one's **enhancement
  ratio** = enhancement / the mirror's (the same in a thin and a thick vessel);
- **clot** = vessels enhancing less than ``cut`` of their mirror (an occluded vessel holds only the contrast that
  penetrates the clot; the vessels beyond it fill through collaterals to at least about 0.4 of their mirror, so they
  are not counted as clot). Readings: log(1 + clot voxels) (thrombus length, voxels along the vessel), mean NCCT
  minus mirror in it (hyperdensity: red-cell-rich clots), mean enhancement in it in HU / 100 (perviousness: contrast
  penetrating the clot);
- **collaterals**: the mean enhancement ratio, weighted by the mirrored CTA, of the vessels enhancing ``cut`` to 0.95
  of their mirror (retrograde filling beyond the occlusion); 1 when there are none.

With ``distal_cut`` the clot's ``cut`` is, per patient, that share of the collateral reading: the vessels beyond the
clot fill to a share of their mirror that depends on the collaterals, and a fixed cut reads the poorly filled ones as
clot (the length reading then follows the collateral grade nearly as much as the clot's length; docs/performance.md).

Both memberships (vessel, clot) ramp linearly over ``vessel_width`` HU and ``cut_width`` around their levels, so a
partial-volume voxel at a clot's end or a vessel's edge counts in part instead of flipping in or out with the noise.

The main job (``configs/clot_readings.json``) reads them ``relative``: after
:class:`scripts.data.mirror_align.MirrorAlignd` has aligned each hemisphere's mirror onto its own vessels and turned
the occluded side to the box's first half, the levels are shares of the patient's own arterial enhancement, both
sides' enhancement is smoothed, the own side compared within a voxel, only the occluded hemisphere counts, and the
collateral reading has settings of its own (``collateral``): the HU levels above hold only when every scan has the
same bolus, calibre and symmetry (docs/README.md Performance, the varied world).

With ``reading_net`` (the main job's, ``configs/clot_readings.json``), the four readings of a small CNN trained on
generated patients' true values (:mod:`scripts.networks.reading_net`) join the rules' four: where the two hemispheres'
vessels are not mirror images to the voxel, the rules' length follows the clot at r 0.5, the network's at about 0.87,
while the rules read the density better. ``linear_readings`` picks which of the eight the linear layer takes: the main
job takes each quantity once, from the reading that follows it best on generated cohorts the reader never saw.

No clot found: length, density and perviousness read 0. The readings (and, with ``clinical_columns``, the encoded
clinical vector of :class:`TabularEncoder`) go through BatchNorm and one linear layer: a logistic regression whose
image terms are the literature's, trained through the bundle like every network. Why this and not learned masks:
on the clot demo, learning the outcome from many learned measurements and ~170 labels costs most of the gap to the
Bayes ROC-AUC, reading the image little (``benchmarks/clot_measurements.py``, docs/README.md Performance).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from scripts.data.mirror_align import enhancement_maps, gaussian
from scripts.networks.reading_net import ReadingNet
from scripts.networks.tabular import ColumnSpec, TabularEncoder

# the relative readings' settings, in the order of _relative_maps' parameters
RELATIVE_SETTINGS = ("cut", "vessel_level", "bone_level", "windows", "cut_width", "vessel_width", "tolerance")
RELATIVE_SETTINGS += ("arterial_quantile", "smooth", "occluded_half", "distal_high", "midline")
RELATIVE_SETTINGS += ("density_top", "density_reach")
READINGS = ("log clot voxels", "clot NCCT asymmetry", "clot CTA - NCCT (HU/100)", "collateral enhancement")
# the quantities the rules' four and the learned reader's four readings measure, in the order of both
QUANTITIES = ("length", "density", "perviousness", "collaterals")
# the arteries' region of the hyperdensity reading: where the aligned mirror enhances above this share of the patient's
# arterial enhancement (wider than a vessel core, so the clot's own artery is inside even where the clot is long)
DENSITY_REGION = 0.4


def clot_readings(
    x: torch.Tensor,
    cut: float | torch.Tensor = 0.3,
    vessel_level: float = 200.0,
    bone_level: float = 0.95,
    windows: Sequence[Sequence[float]] = ((0.0, 100.0), (0.0, 400.0)),
    cut_width: float = 0.1,
    vessel_width: float = 100.0,
    relative: bool = False,
    tolerance: int = 1,
    arterial_quantile: float = 0.999,
    smooth: float = 0.0,
    occluded_half: bool = False,
    distal_high: float = 0.95,
    midline: int = 0,
    density_top: int = 0,
    density_reach: int = 2,
) -> torch.Tensor:
    """(B, 4, H, W, D) NCCT, CTA, mirrored NCCT, mirrored CTA in [0, 1] -> the four readings (B, 4), in fp32.

    ``relative``: ``vessel_level`` and ``vessel_width`` are shares of the patient's own arterial enhancement (the
    ``arterial_quantile`` of CTA - NCCT over the box's soft tissue: its brightest vessels), bone is grown by a voxel,
    and the perviousness reading is the clot's CTA minus its NCCT as a share of that enhancement (bolus timing moves
    all three together); otherwise HU. ``smooth``: the enhancement of both sides Gaussian-smoothed by this
    many voxels before they are compared (a vessel's cross-section summed, so a sub-voxel offset or a thinner slice
    changes it little). ``tolerance`` t: the patient's own enhancement and density are their largest value over
    2 t - 1 voxels per axis before they are compared with the mirror (1 = voxel to voxel; without ``relative`` the
    mirror's as well, and bone grown as much). ``occluded_half``: only the first half along H counts (the occluded
    hemisphere, where :class:`scripts.data.mirror_align.MirrorAlignd` put it). ``distal_high``: the vessels beyond the
    clot enhance from ``cut`` up to this share of their mirror (relative readings only). ``midline``: the voxels
    within this many of the box's midline read no vessel (relative readings only): the basilar artery, the anterior
    communicating artery and the A2 segments lie on the midline and are their own mirrors, so the comparison cannot
    read them, while the clot sites it reads (ICA, M1, M2) lie 12 mm or more from it. ``density_top`` k > 0 (relative
    readings only): the density reading is the hyperdense artery sign instead of the clot's mean NCCT asymmetry: the
    mean of the k densest voxels of the NCCT (smoothed by ``smooth``) within ``density_reach`` voxels of the aligned
    mirror's arteries in the occluded half (bone and calcification, grown as far, left out), minus the same of the
    mirrored NCCT: no voxel-to-voxel match, so it holds where the alignment leaves the mirror's artery a voxel or two
    beside the clot.

    ``cut``: enhancement ratio below which a vessel voxel is clot (relative readings: a float or one per patient, (B,));
    ``vessel_level``: the mirror's enhancement (HU) above which a voxel is a vessel; ``bone_level``: windowed NCCT at or
    above which a voxel is bone; ``windows``: the NCCT and CTA intensity windows in HU (to read the enhancement in HU).
    ``cut_width`` and ``vessel_width``: both memberships ramp linearly over this width around their level (a
    partial-volume voxel at the clot's end or a vessel's edge counts in part instead of flipping in or out with the
    noise; 0 = a hard threshold)."""
    if x.ndim != 5 or x.shape[1] != 4:
        raise ValueError(f"expected input (B, 4, H, W, D): NCCT, CTA and their mirrors, got {list(x.shape)}")
    if relative:
        cuts = cut.split(2) if torch.is_tensor(cut) else [cut] * len(x.split(2))
        settings = (vessel_level, bone_level, windows, cut_width, vessel_width, int(tolerance))
        extra = (arterial_quantile, float(smooth), bool(occluded_half), float(distal_high), int(midline))
        extra += (int(density_top), int(density_reach))
        return torch.cat([_relative_readings(part, c, *settings, *extra) for part, c in zip(x.split(2), cuts)])
    if torch.is_tensor(cut):
        raise ValueError("a cut per patient needs the relative readings (relative=True)")
    args = (cut, vessel_level, bone_level, windows, cut_width, vessel_width, int(tolerance))
    # two patients at a time: the temporaries stay small enough to be reused instead of mapped afresh for every
    # operation (a full-batch call over 170 patients took 7x longer on 2 CPU cores, most of it in the kernel)
    return torch.cat([_patient_readings(part, *args) for part in x.split(2)])


def reader_readings(x: torch.Tensor, settings: Dict[str, Any]) -> torch.Tensor:
    """(B, 4, H, W, D) -> the four readings (B, 4) with :func:`clot_readings`' ``settings``; the collateral reading
    with ``settings["collateral"]`` overriding them when given, and the clot cut a share ``settings["distal_cut"]`` of
    that reading when given (as :class:`ClotReadingNet` reads them: :func:`patient_cut`)."""
    plain = {k: v for k, v in settings.items() if k not in ("collateral", "distal_cut")}
    distal = _distal_filling(x, settings) if settings.get("collateral") or settings.get("distal_cut") else None
    if settings.get("distal_cut"):
        plain["cut"] = patient_cut(x, settings, distal)
    readings = clot_readings(x, **plain)
    if settings.get("collateral"):
        readings = torch.cat([readings[:, :3], distal[:, None]], 1)
    return readings


def patient_cut(x: torch.Tensor, settings: Dict[str, Any], distal: torch.Tensor | None = None) -> float | torch.Tensor:
    """The clot cut of (B, 4, H, W, D) under :func:`reader_readings`' ``settings``: ``settings["cut"]``, or with
    ``distal_cut`` that share of each patient's collateral reading (B,) (``distal`` when already read)."""
    if not settings.get("distal_cut"):
        return settings["cut"]
    return float(settings["distal_cut"]) * (_distal_filling(x, settings) if distal is None else distal)


def _distal_filling(x: torch.Tensor, settings: Dict[str, Any]) -> torch.Tensor:
    """The collateral reading (B,) under :func:`reader_readings`' ``settings`` (``collateral`` overriding them)."""
    plain = {k: v for k, v in settings.items() if k not in ("collateral", "distal_cut")}
    return clot_readings(x, **{**plain, **(settings.get("collateral") or {})})[:, 3]


def _patient_readings(
    x: torch.Tensor,
    cut: float,
    vessel_level: float,
    bone_level: float,
    windows: Sequence[Sequence[float]],
    cut_width: float,
    vessel_width: float,
    tolerance: int = 1,
) -> torch.Tensor:
    x = x.float()
    (n_lo, n_hi), (c_lo, c_hi) = windows
    enhancement = (x[:, 1:4:2] * (c_hi - c_lo) + c_lo) - (x[:, 0:4:2] * (n_hi - n_lo) + n_lo)  # own, mirror (HU)
    bone = (x[:, 0:4:2] >= bone_level).any(1, keepdim=True).float()
    if tolerance > 1:  # the largest enhancement within reach, and bone grown by as much
        size = 2 * tolerance - 1
        enhancement = nn.functional.max_pool3d(enhancement, size, 1, size // 2)
        bone = nn.functional.max_pool3d(bone, size, 1, size // 2)
        density = nn.functional.max_pool3d(x[:, 0:4:2], size, 1, size // 2)
    else:
        density = x[:, 0:4:2]
    n, mn = density.flatten(2).unbind(1)
    mc = x[:, 3].flatten(1)
    own, mirror_enhancement = enhancement.flatten(2).unbind(1)
    soft = bone.flatten(1) < 0.5
    ratio = own / mirror_enhancement.clamp_min(1.0)
    margin = mirror_enhancement - vessel_level
    vessel = (margin / vessel_width + 0.5).clamp(0.0, 1.0) if vessel_width > 0 else (margin > 0).float()
    vessel = vessel * soft
    in_clot = _ramp(cut - ratio, cut_width)
    clot = vessel * in_clot
    distal = vessel * (1 - in_clot) * (ratio < 0.95) * mc
    return _four_readings(clot, n - mn, _mean(own / 100.0, clot, 0.0), ratio, distal)


def _relative_readings(x: torch.Tensor, *settings: Any) -> torch.Tensor:
    """:func:`clot_readings` with ``relative``: ``settings`` in the order of :data:`RELATIVE_SETTINGS`."""
    m = _relative_maps(x, *settings)
    clot, distal = m["clot"].flatten(1), m["distal"].flatten(1)
    pervious = (_mean(m["cta"].flatten(1), clot, 0.0) - _mean(m["ncct_reach"].flatten(1), clot, 0.0)) / m["arterial"]
    asymmetry = (m["ncct_reach"] - m["mirror_ncct_reach"]).flatten(1)
    readings = _four_readings(clot, asymmetry, pervious, m["ratio"].flatten(1), distal)
    if "hyperdensity" in m:
        readings[:, 1] = m["hyperdensity"]
    return readings


def _relative_maps(
    x: torch.Tensor,
    cut: float | torch.Tensor,
    vessel_level: float,
    bone_level: float,
    windows: Sequence[Sequence[float]],
    cut_width: float,
    vessel_width: float,
    tolerance: int,
    arterial_quantile: float,
    smooth: float,
    occluded_half: bool,
    distal_high: float,
    midline: int = 0,
    density_top: int = 0,
    density_reach: int = 2,
) -> Dict[str, torch.Tensor]:
    """The relative readings' voxel maps (B, H, W, D): vessel, clot and distal memberships, enhancement ratio, NCCT
    and CTA in HU (``ncct_reach``, ``mirror_ncct_reach``: the largest within ``tolerance``), and the arterial
    enhancement (B,); with ``density_top``, ``hyperdensity`` and ``dense_ncct`` (B,): the density reading of
    :func:`clot_readings` and the own k densest voxels' mean NCCT (HU)."""
    own, mirror, soft, arterial = enhancement_maps(x, windows, bone_level, arterial_quantile)
    (n_lo, n_hi), (c_lo, c_hi) = windows
    n, mn = (x[:, c].float() * (n_hi - n_lo) + n_lo for c in (0, 2))
    c, mc = (x[:, c].float() * (c_hi - c_lo) + c_lo for c in (1, 3))
    maps = {"ncct": n, "mirror_ncct": mn, "cta": c}
    if smooth > 0:  # the arterial enhancement read again on the smoothed maps: the level they are compared at
        own, mirror = gaussian(own * soft, smooth), gaussian(mirror * soft, smooth)
        both = torch.where(soft, torch.maximum(own, mirror), torch.zeros_like(own))
        arterial = torch.quantile(both.flatten(1), arterial_quantile, dim=1).clamp_min(20.0)
    scale = arterial[:, None, None, None]
    if tolerance > 1:
        size = 2 * tolerance - 1
        own, n, mn = (nn.functional.max_pool3d(v[:, None], size, 1, size // 2)[:, 0] for v in (own, n, mn))
    vessel = ((mirror - vessel_level * scale) / (vessel_width * scale) + 0.5).clamp(0.0, 1.0) * soft
    if occluded_half:
        vessel[:, x.shape[2] // 2 :] = 0
    if midline > 0:
        vessel[:, x.shape[2] // 2 - midline : x.shape[2] // 2 + midline + 1] = 0
    ratio = own / mirror.clamp_min(1.0)
    if torch.is_tensor(cut):  # one per patient
        cut = cut.to(ratio).reshape(-1, 1, 1, 1)
    in_clot = _ramp(cut - ratio, cut_width)
    clot, distal = vessel * in_clot, vessel * (1 - in_clot) * (ratio < distal_high) * mc
    maps.update(vessel=vessel, clot=clot, distal=distal, ratio=ratio)
    maps.update(ncct_reach=n, mirror_ncct_reach=mn, arterial=arterial)
    if density_top > 0:
        size = 2 * density_reach + 1  # the mirror's arteries grown, and bone and calcification grown as far
        near = nn.functional.max_pool3d((mirror > DENSITY_REGION * scale).float()[:, None], size, 1, density_reach)
        bone = nn.functional.max_pool3d((~soft).float()[:, None], size, 1, density_reach)
        region = (near[:, 0] > 0.5) & (bone[:, 0] < 0.5)
        region[:, x.shape[2] // 2 - midline :] = False  # the occluded half, off the midline
        dense = [_top_mean(gaussian(maps[k], smooth), region, density_top) for k in ("ncct", "mirror_ncct")]
        maps.update(hyperdensity=dense[0] - dense[1], dense_ncct=dense[0])
    return maps


def _top_mean(values: torch.Tensor, region: torch.Tensor, k: int) -> torch.Tensor:
    """(B, H, W, D) -> the mean of the k largest ``values`` within ``region`` per row (B,); 0 where it is empty."""
    inside = torch.where(region, values, torch.full_like(values, float("-inf"))).flatten(1)
    top = inside.topk(min(k, inside.shape[1]), dim=1).values
    found = torch.isfinite(top)
    return torch.where(found, top, torch.zeros_like(top)).sum(1) / found.sum(1).clamp_min(1)


def clot_measurements(x: torch.Tensor, voxel_mm: float, **settings: Any) -> Dict[str, torch.Tensor]:
    """The relative readings in physical units, for a neuroradiologist to check (B, 4, H, W, D) -> {name: (B,)}.

    Args:
        x: NCCT, CTA, mirrored NCCT, mirrored CTA in [0, 1], the occluded hemisphere first (``MirrorAlignd``).
        voxel_mm: the box's voxel size in mm.
        settings: :func:`clot_readings`' settings (``relative`` ones).

    Returns:
        ``clot_length_mm``: the extent of the clot's largest connected part along its main axis (:func:`_extent`);
        ``clot_ncct_hu``: the clot's mean NCCT density (with ``density_top``: that of the occluded side's densest
        arterial voxels, the density reading's); ``clot_asymmetry_hu``: that minus its mirror's;
        ``clot_perviousness_hu``: its mean CTA minus NCCT (the contrast inside the clot); ``arterial_enhancement_hu``:
        the patient's arterial enhancement the levels are shares of. NaN where no clot is found (length 0), except
        the densest arterial voxels' (``density_top``), which need no clot.
    """
    names = RELATIVE_SETTINGS
    defaults = {k: p.default for k, p in inspect.signature(clot_readings).parameters.items() if k in names}
    values = {**defaults, **{k: v for k, v in settings.items() if k in names}}
    m = _relative_maps(x.float(), *[values[k] for k in names])
    clot = m["clot"].flatten(1)
    nan = torch.full_like(m["arterial"], float("nan"))
    found = clot.sum(1) > 0.5
    ncct, mirror, cta = (m[k].flatten(1) for k in ("ncct", "mirror_ncct", "cta"))
    means = {k: torch.where(found, _mean(v, clot, 0.0), nan) for k, v in (("n", ncct), ("m", mirror), ("c", cta))}
    dense, asymmetry = (
        (m["dense_ncct"], m["hyperdensity"]) if "hyperdensity" in m else (means["n"], means["n"] - means["m"])
    )
    return {
        "clot_length_mm": torch.stack([_extent(w) for w in m["clot"]]) * voxel_mm,
        "clot_ncct_hu": dense,
        "clot_asymmetry_hu": asymmetry,
        "clot_perviousness_hu": means["c"] - means["n"],
        "arterial_enhancement_hu": m["arterial"],
    }


def _extent(weight: torch.Tensor) -> torch.Tensor:
    """(H, W, D) clot membership -> the extent in voxels of its largest connected part (membership > 0.5, 26-connected)
    along that part's main axis (5th to 95th weighted percentile, plus a voxel); 0 without one. Scattered voxels read
    as clot elsewhere (a vessel beside its mirror) would otherwise stretch the extent."""
    labels, count = ndimage.label(weight.cpu().numpy() > 0.5, structure=np.ones((3, 3, 3)))
    if count == 0:
        return weight.new_zeros(())
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    part = torch.from_numpy(labels == largest).to(weight.device)
    points = torch.nonzero(part).float()
    w = weight[part].float()
    centre = (points * w[:, None]).sum(0) / w.sum()
    spread = ((points - centre) * w[:, None]).T @ (points - centre) / w.sum()
    along = (points - centre) @ torch.linalg.eigh(spread)[1][:, -1]
    order = torch.argsort(along)
    cumulative = torch.cumsum(w[order], 0) / w.sum()
    index = torch.searchsorted(cumulative, torch.tensor([0.05, 0.95], dtype=cumulative.dtype)).clamp_max(len(w) - 1)
    low, high = along[order][index].unbind()
    return high - low + 1.0


def _four_readings(
    clot: torch.Tensor, asymmetry: torch.Tensor, pervious: torch.Tensor, ratio: torch.Tensor, distal: torch.Tensor
) -> torch.Tensor:
    """(B, N) clot and distal memberships, NCCT asymmetry and enhancement ratio, (B,) perviousness -> (B, 4)."""
    return torch.stack([torch.log1p(clot.sum(1)), _mean(asymmetry, clot, 0.0), pervious, _mean(ratio, distal, 1.0)], 1)


def _mean(values: torch.Tensor, weight: torch.Tensor, empty: float) -> torch.Tensor:
    """Weighted mean per row of (B, N) ``values``; ``empty`` where the weights sum below half a voxel."""
    total = weight.sum(1)
    return torch.where(total > 0.5, (values * weight).sum(1) / total.clamp_min(1e-6), torch.full_like(total, empty))


def _reading_columns(names: Sequence[str] | None, learned: bool) -> List[int]:
    """The columns of :meth:`ClotReadingNet.measurements` that ``linear_readings`` ``names`` select (all for None)."""
    sources = ("rules", "learned") if learned else ("rules",)
    columns = [f"{source} {quantity}" for source in sources for quantity in QUANTITIES]
    if names is None:
        return list(range(len(columns)))
    unknown = [n for n in names if n not in columns]
    if unknown or not names:
        raise ValueError(f"linear_readings: {unknown or 'none'} not among {columns}")
    return [columns.index(n) for n in names]


def _ramp(margin: torch.Tensor, width: float) -> torch.Tensor:
    """Membership 0..1 of ``margin`` (> 0 inside): a linear ramp of ``width`` centred on 0, a step when 0."""
    if width <= 0:
        return (margin > 0).float()
    return (margin / width + 0.5).clamp(0.0, 1.0)


class ClotReadingNet(nn.Module):
    """Logistic regression on the fixed clot and collateral readings (+ clinical values) of a mirrored vessel box.

    ``forward(x[, clinical])``: ``x`` (B, 4, H, W, D): NCCT, CTA, mirrored NCCT, mirrored CTA, each windowed to
    [0, 1] (``configs/clot_readings.json``); ``clinical`` (B, R) raw clinical values when ``clinical_columns`` is
    given.
    Output: the logit, (B, 1).

    Args:
        cut: enhancement ratio ((CTA - NCCT) / the mirror's) below which a vessel voxel is clot.
        vessel_level: the mirror's enhancement (CTA - NCCT, HU) above which a voxel is a vessel.
        bone_level: windowed NCCT at or above which a voxel is bone or calcification (0.95 of [0, 100] HU).
        windows: the NCCT and CTA windows in HU, [[lo, hi], [lo, hi]].
        cut_width, vessel_width: the widths of the linear ramps of both memberships (0 = hard thresholds).
        dropout: dropout before the linear layer (inactive in eval mode).
        clinical_columns: {name: "numeric" | [categories]}; None = image only.
        relative, tolerance, arterial_quantile, smooth, occluded_half, distal_high: see :func:`clot_readings`.
        collateral: settings that differ for the collateral reading (e.g. ``{"smooth": 1.0, "cut": 0.4}``).
        distal_cut: when > 0 (relative readings), the clot cut of each patient is this share of the patient's own
            collateral reading instead of ``cut``: a clot enhances less than the vessels the collaterals fill beyond
            it, and how far those fill depends on the collaterals.
        voxel_mm: the box's voxel size in mm (the clot length of :meth:`clinical_measurements`).
        midline_mm: the band on either side of the box's midline that reads no vessel, mm (``midline`` of
            :func:`clot_readings`, in voxels of ``voxel_mm``).
        density_mm3: when > 0 (relative readings), the density reading is the hyperdense artery sign over the
            densest ``density_mm3`` of the occluded half's arteries (``density_top`` of :func:`clot_readings`, in
            voxels of ``voxel_mm``).
        density_reach_mm: how far from the mirror's arteries the hyperdensity reading looks (``density_reach``).
        reading_net: a :class:`scripts.networks.reading_net.ReadingNet` file (``scripts.training.reading_net``):
            when given (relative readings), that network's four readings, read off the box and this reader's
            memberships, join the rules' four before the linear layer; it is frozen (kept in eval mode, not trained
            with the linear layer) and travels inside this network's state.
        linear_readings: which readings enter the linear layer, as "rules QUANTITY" or "learned QUANTITY" (QUANTITY
            one of :data:`QUANTITIES`); None = all that :meth:`measurements` gives. Each quantity once, from the
            reading that follows it best, is fewer terms to fit on a cohort of a few hundred patients.
    """

    def __init__(
        self,
        cut: float = 0.3,
        vessel_level: float = 200.0,
        bone_level: float = 0.95,
        windows: Sequence[Sequence[float]] = ((0.0, 100.0), (0.0, 400.0)),
        cut_width: float = 0.1,
        vessel_width: float = 100.0,
        dropout: float = 0.0,
        clinical_columns: Dict[str, ColumnSpec] | None = None,
        relative: bool = False,
        tolerance: int = 1,
        arterial_quantile: float = 0.999,
        smooth: float = 0.0,
        occluded_half: bool = False,
        distal_high: float = 0.95,
        collateral: Dict[str, float] | None = None,
        distal_cut: float = 0.0,
        voxel_mm: float = 2.0,
        midline_mm: float = 0.0,
        density_mm3: float = 0.0,
        density_reach_mm: float = 4.0,
        reading_net: str | None = None,
        linear_readings: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.settings = dict(
            cut=float(cut),
            vessel_level=float(vessel_level),
            bone_level=float(bone_level),
            windows=[[float(v) for v in w] for w in windows],
            cut_width=float(cut_width),
            vessel_width=float(vessel_width),
            relative=bool(relative),
            tolerance=int(tolerance),
            arterial_quantile=float(arterial_quantile),
            smooth=float(smooth),
            occluded_half=bool(occluded_half),
            distal_high=float(distal_high),
            midline=int(round(float(midline_mm) / float(voxel_mm))),
            density_top=int(round(float(density_mm3) / float(voxel_mm) ** 3)),
            density_reach=int(round(float(density_reach_mm) / float(voxel_mm))),
        )
        self.collateral = dict(collateral or {})
        self.distal_cut = float(distal_cut)
        self.voxel_mm = float(voxel_mm)
        self.readings = len(READINGS) * (2 if reading_net else 1)  # what measurements gives per patient
        self.linear_readings = _reading_columns(linear_readings, bool(reading_net))
        features = len(self.linear_readings)
        if clinical_columns:
            self.tabular = TabularEncoder(clinical_columns)
            features += self.tabular.out_features
        self.head = nn.Sequential(nn.BatchNorm1d(features), nn.Dropout(dropout), nn.Linear(features, 1))
        self.reading_net = None
        if reading_net:
            if not relative:
                raise ValueError("reading_net reads the relative readings' memberships: set relative=True")
            self.reading_net = ReadingNet.load(reading_net).requires_grad_(False)

    def train(self, mode: bool = True) -> "ClotReadingNet":
        """As :meth:`nn.Module.train`; the frozen ``reading_net`` stays in eval mode."""
        super().train(mode)
        if self.reading_net is not None:
            self.reading_net.eval()
        return self

    @property
    def reader_settings(self) -> Dict[str, Any]:
        """:func:`reader_readings`' settings of this reader (plain values: another module or a cached transform reads
        with them without holding this network)."""
        return {**self.settings, "collateral": dict(self.collateral), "distal_cut": self.distal_cut}

    def _patient_settings(self, x: torch.Tensor) -> Dict[str, Any]:
        """:attr:`settings` with the clot cut of each patient of (B, 4, H, W, D) ``x`` (:func:`patient_cut`)."""
        return {**self.settings, "cut": patient_cut(x, self.reader_settings)}

    def measurements(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W, D) -> the rules' readings (B, 4) (the collateral one with ``collateral``'s settings if given),
        followed by ``reading_net``'s four when given (B, 8).

        The readings have no parameters: those of the last input are kept and given again for the same input (the
        full-batch training set, every epoch), recognised by its shape, device and a checksum of its values."""
        key = (tuple(x.shape), x.device, float(x.float().sum()), float(x.flatten()[::97].float().sum()))
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] == key and not x.requires_grad:
            return memo[1]
        readings = reader_readings(x, self.reader_settings)
        if self.reading_net is not None:
            with torch.no_grad():
                learned = [self.reading_net(torch.cat([p.float(), self.membership_maps(p)], 1)) for p in x.split(16)]
            readings = torch.cat([readings, torch.cat(learned)], 1)
        self._memo = (key, readings.detach())
        return readings

    @torch.no_grad()
    def clinical_measurements(self, x: torch.Tensor) -> List[Dict[str, float]]:
        """(B, 4, H, W, D) -> per patient the readings in physical units (:func:`clot_measurements`) and
        ``distal_filling_ratio``, the collateral reading (the vessels beyond the clot against their mirror). Only
        the relative readings (the main job's) have physical units; otherwise an empty dict per patient."""
        if not self.settings["relative"]:
            return [{} for _ in range(len(x))]
        with torch.autocast(x.device.type, enabled=False):
            values = clot_measurements(x, self.voxel_mm, **self._patient_settings(x.float()))
            values["distal_filling_ratio"] = reader_readings(x.float(), self.reader_settings)[:, 3]
        return [{k: round(float(v[b]), 3) for k, v in values.items()} for b in range(len(x))]

    @torch.no_grad()
    def membership_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W, D) -> (B, 2, H, W, D) in [0, 1]: the vessel membership (where the aligned mirror shows an
        artery, in the occluded half) and the clot membership the readings measure, on the input's grid (the occluded
        side first, ``MirrorAlignd``). Relative readings only (the main job's)."""
        with torch.autocast(x.device.type, enabled=False):
            settings = self._patient_settings(x.float())
            maps = _relative_maps(x.float(), *[settings[k] for k in RELATIVE_SETTINGS])
        return torch.stack([maps["vessel"], maps["clot"]], 1)

    @torch.no_grad()
    def key_views(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W, D) -> (B, W, H, 3) RGB in [0, 1]: the axial maximum-intensity projection of the occluded
        half's iodine (CTA minus NCCT outside bone, as a share of the patient's arterial enhancement) on the left
        beside its aligned mirror's on the right, the clot membership's projection in red: the key image a reader
        checks the measurements on. Relative readings only (the main job's); the occluded side first
        (``MirrorAlignd``)."""
        with torch.autocast(x.device.type, enabled=False):
            clot = self.membership_maps(x)[:, 1]
            settings = self.settings
            iodine, mirrored, soft, arterial = enhancement_maps(
                x.float(), settings["windows"], settings["bone_level"], settings["arterial_quantile"]
            )
            scale = arterial[:, None, None, None]
            half = x.shape[2] // 2
            own, mirror = ((v * soft / scale)[:, :half].amax(-1) for v in (iodine, mirrored))  # (B, half, W)
            red = clot[:, :half].amax(-1)
            grey = torch.cat([own, mirror], 1).clamp(0, 1)  # (B, 2 half, W): own left, mirror right
            marks = torch.cat([red, torch.zeros_like(red)], 1)
            rgb = torch.stack([torch.maximum(grey, marks), grey * (1 - marks), grey * (1 - marks)], -1)
        return rgb.transpose(1, 2).flip(1)  # rows: anterior at the top

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 4, H, W, D) [and (B, R) raw clinical values] -> logit (B, 1)."""
        with torch.autocast(x.device.type, enabled=False):  # counts and means over 10^5 voxels: fp32
            features = self.measurements(x)[:, self.linear_readings]
            tabular = getattr(self, "tabular", None)
            if tabular is not None:
                if clinical is None:
                    raise ValueError("this ClotReadingNet was built with clinical_columns: pass the clinical values")
                features = torch.cat([features, tabular(clinical).float()], 1)
            return self.head(features)
