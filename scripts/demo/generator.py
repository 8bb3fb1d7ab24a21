"""A demo cohort on real anatomy with known truth, written in the cohort contract (CSV + NIfTI).

``python -m scripts.demo.generator --out DIR --patients N --seed S [--modalities ct,ctp,mr] [--spacing 2] [--native]``
writes ``DIR/cohort.csv``, the NIfTI files it points to and ``DIR/manifest.json``; add ``--unlabeled``
for an unlabeled pool (``DIR/unlabeled.csv``, patients ``pool0000``...: side and images) for pretraining.

Anatomy: nilearn's MNI152 GM/WM/brain maps mapped to Hounsfield units (GM 38, WM 27, CSF 6 HU)
with a CSF rim, a skull shell (1200 HU) and scalp; arterial territories from the JHU atlas (or the
fallback in :mod:`scripts.data.anatomy`). A schematic circle of Willis / MCA tree is drawn as tubes.

Per patient: occlusion site (ICA 20%, M1 55%, M2 25%) and side; a clot of length L (log-normal,
median 12 mm, 4-40 mm), density D (N(60, 10) HU, 40-90; red-cell-rich clots are hyperdense) drawn on NCCT and
perviousness V (Beta(2, 2), 0..1: contrast penetrating the clot, which reads D + 60 V HU on CTA); CTA with
enhanced vessels (350 HU), vessels distal to the clot filled later and fainter through collaterals (grade G in
0..3, to 42 + 308 x (0.5 + 0.45 G/3) HU: a share of the iodine over blood's 42 HU, always brighter than the
clot, so its distal end is visible); a hypoperfused
region: the part of the occluded territory (MCA; MCA and ACA for ICA) nearest the occlusion point, whose share of
the territory follows site and collaterals only (ICA 0.6, M1 0.5, M2 0.3, plus 0.3 (1 - G/3)): never clot length,
density or perviousness, so the territory-wide picture carries site and collaterals but none of the clot's own
properties. Its CTA parenchymal enhancement is 30 HU x (0.6 + 0.4 G/3) against 30 HU in normal brain (a faint
change); an infarct core inside it whose volume fraction grows with onset time and falls with G (hypodense on NCCT,
bright on DWI b1000, low ADC, FLAIR-bright after 4.5 h). ADC is computed from the noisy b0/b1000 as
-ln(S1000/S0)/1000 (stored in 1e-6 mm^2/s). Noise: NCCT 3 HU, CTA 6 HU, MR 2% of white matter; slices: NCCT, DWI
and FLAIR 5 mm thick, CTA 1 mm (z blur of the thickness).

CT perfusion maps (``ctp``): Tmax 2 s, delayed by 4-10 s in the hypoperfused region (more with poor
collaterals); CBF 60/25 ml/100 g/min in grey/white matter, reduced there and in the core; CBV 4.5/2.2 ml/100 g,
low in the core; MTT = 60 CBV/CBF. The refractory-LVO outcome with comorbidity columns (hypertension, diabetes,
atrial fibrillation) is drawn by :mod:`scripts.demo.rlvo` (clinical variables carry most of its signal).

Truth (the label rule, also in manifest.json): logit P(FPE) = 0.3 - 1.0 z_len + 0.6 z_dens + 0.6 z_perv
+ 0.6 z_coll + site (ICA -0.8, M1 0, M2 +0.3) - 0.15 z_age + 0.2 ivt, with z_len = (ln L - ln 12)/0.45,
z_dens = (D - 60)/10, z_perv = (V - 0.5)/0.22, z_coll = (G - 1.6)/0.95, z_age = (age - 70)/12: the mechanisms of
the first-pass literature (shorter, denser, more pervious clots and better collaterals are retrieved in one pass
more often; ICA occlusions less often). FPE ~ Bernoulli(P). FPE patients get one pass and first-pass
mTICI 2b/2c/3; the others 2-5 passes, first-pass 0/1/2a and a final grade drawn from 0..3. ``bayes_auc`` is the
ROC-AUC of the true P against the drawn labels (the best any model can do on this cohort), ``bayes_auc_expected``
its mean over redrawn labels.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import warnings
from typing import Dict, List, Sequence, Tuple

import fire
import nibabel as nib
import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from scripts import BundleInputError
from scripts.data.anatomy import DEFAULT_ATLAS_DIR, Anatomy, load_anatomy
from scripts.data.cohort import SEQUENCES, derive_labels
from scripts.data.io import atomic_write, atomic_write_json, atomic_write_text
from scripts.demo.rlvo import RLVO_COEF, clinical_share, draw_rlvo
from scripts.demo.scanner import ACQUISITIONS, add_headrest, session_poses, to_scanner

SITES = ("ICA", "M1", "M2")
SITE_PROB = (0.2, 0.55, 0.25)
SITE_EFFECT = {"ICA": -0.8, "M1": 0.0, "M2": 0.3}
COEF = {"intercept": 0.3, "z_len": -1.0, "z_dens": 0.6, "z_perv": 0.6, "z_coll": 0.6, "z_age": -0.15, "ivt": 0.2}
# share of the occluded territory that is hypoperfused: site + 0.3 (1 - G/3); no clot property enters it
EXTENT_SITE = {"ICA": 0.6, "M1": 0.5, "M2": 0.3}
BLOOD_HU = 42.0  # unenhanced blood on NCCT
PERVIOUS_HU = 60.0  # CTA attenuation increase of a fully pervious clot
CSV_COLUMNS = (
    "patient_id",
    "procedure_date",
    "passes",
    "mtici_first_pass",
    "mtici_final",
    "rescue",
    "stenosis_gt50",
    "location",
    "side",
    "age",
    "sex",
    "nihss",
    "onset_to_imaging_min",
    "ivt",
    "hypertension",
    "diabetes",
    "atrial_fibrillation",
    "ncct",
    "cta",
    "b0",
    "b1000",
    "adc",
    "flair",
    "tmax",
    "cbf",
    "cbv",
    "mtt",
)

# schematic vessel centre lines in MNI mm for the RIGHT hemisphere (x mirrored for the left): radius mm
ICA = ((16, -4, -45), (15, -2, -25), (15, 0, -12))
M1 = ((15, 0, -12), (28, 1, -8), (38, 2, -6))
M2 = ((38, 2, -6), (42, -8, 4), (45, -18, 12))
M2_UPPER = ((38, 2, -6), (42, 6, 10), (44, 8, 22))
MCA_DISTAL = (
    ((45, -18, 12), (55, -35, 25)),
    ((44, 8, 22), (50, 12, 38)),
    ((45, -18, 12), (52, -50, 18)),
    ((44, 8, 22), (56, -5, 24)),
)
ACA = ((15, 0, -12), (4, 15, -2), (4, 32, 22), (4, 10, 50))
PCA = ((0, -20, -22), (16, -35, -10), (22, -70, 5))
BASILAR = ((0, -30, -48), (0, -20, -22))
COURSE_PIVOT = np.array([15.0, 0.0, -12.0])  # the right ICA bifurcation: each hemisphere's tree turns about its own


def _mirror(points: Sequence[Sequence[float]], side: str) -> np.ndarray:
    p = np.asarray(points, dtype=float)
    if side == "L":
        p = p * np.array([-1.0, 1, 1])
    return p


def _tube(world: np.ndarray, spacing: float, points: np.ndarray, radius: float) -> np.ndarray:
    """Partial-volume occupancy (0..1) of a tube of ``radius`` mm around a polyline."""
    occ = np.zeros(world.shape[:3], dtype=np.float32)
    reach = radius + spacing
    for a, b in zip(points[:-1], points[1:]):
        lo = np.floor((np.minimum(a, b) - reach - world[0, 0, 0]) / spacing).astype(int).clip(0)
        hi = np.ceil((np.maximum(a, b) + reach - world[0, 0, 0]) / spacing).astype(int) + 1
        sl = tuple(slice(int(lo[i]), int(min(hi[i], world.shape[i]))) for i in range(3))
        w = world[sl]
        ab = b - a
        t = np.clip(((w - a) @ ab) / max(ab @ ab, 1e-9), 0, 1)
        dist = np.linalg.norm(w - (a + t[..., None] * ab), axis=-1)
        occ[sl] = np.maximum(occ[sl], np.clip((radius + spacing / 2 - dist) / spacing, 0, 1))
    return occ


def _cut(points: np.ndarray, start: float, stop: float) -> np.ndarray:
    """The part of a polyline between arclengths ``start`` and ``stop`` (mm)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    cum = np.concatenate([[0], np.cumsum(seg)])
    stop = min(stop, cum[-1])
    if stop <= start:
        return points[-1:].repeat(2, axis=0)

    def at(s: float) -> np.ndarray:
        i = int(np.clip(np.searchsorted(cum, s) - 1, 0, len(seg) - 1))
        return points[i] + (s - cum[i]) / max(seg[i], 1e-9) * (points[i + 1] - points[i])

    inner = [points[i] for i in range(len(points)) if start < cum[i] < stop]
    return np.array([at(start), *inner, at(stop)])


def _length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def draw_patient(rng: np.random.Generator, index: int, start: dt.date, days: int, prefix: str = "demo") -> Dict:
    """Draw one patient's hidden variables, clinical data and labels."""
    site = SITES[rng.choice(3, p=SITE_PROB)]
    length = float(np.clip(rng.lognormal(np.log(12), 0.45), 4, 40))
    density = float(np.clip(rng.normal(60, 10), 40, 90))
    perviousness = float(rng.beta(2, 2))
    coll = int(rng.choice(4, p=(0.15, 0.3, 0.35, 0.2)))
    age = float(np.clip(rng.normal(70, 12), 30, 99))
    ivt = int(rng.random() < 0.4)
    onset = float(np.clip(rng.lognormal(np.log(150), 0.6), 30, 1440))
    z = {
        "z_len": (np.log(length) - np.log(12)) / 0.45,
        "z_dens": (density - 60) / 10,
        "z_perv": (perviousness - 0.5) / 0.22,
        "z_coll": (coll - 1.6) / 0.95,
        "z_age": (age - 70) / 12,
        "ivt": ivt,
    }
    logit = COEF["intercept"] + SITE_EFFECT[site] + sum(COEF[k] * v for k, v in z.items())
    prob = float(1 / (1 + np.exp(-logit)))
    fpe = bool(rng.random() < prob)
    if fpe:
        first = final = str(rng.choice(["2b", "2c", "3"], p=(0.3, 0.3, 0.4)))
        passes = 1
    else:
        first = str(rng.choice(["0", "1", "2a"], p=(0.5, 0.2, 0.3)))
        passes = int(rng.integers(2, 6))
        final = str(rng.choice(["0", "1", "2a", "2b", "2c", "3"], p=(0.08, 0.04, 0.1, 0.33, 0.2, 0.25)))
    poor = final in ("0", "1", "2a")
    return {
        "patient_id": f"{prefix}{index:04d}",
        "procedure_date": (start + dt.timedelta(days=int(rng.integers(days)))).isoformat(),
        "passes": passes,
        "mtici_first_pass": first,
        "mtici_final": final,
        "rescue": int(rng.random() < (0.4 if poor else 0.05)),
        "stenosis_gt50": int(rng.random() < (0.3 if poor else 0.05)),
        "location": site,
        "side": str(rng.choice(["L", "R"])),
        "age": round(age),
        "sex": str(rng.choice(["M", "F"])),
        "nihss": int(np.clip(rng.normal(14 + 3 * (site == "ICA") - 2 * (coll - 1.6), 5), 0, 42)),
        "onset_to_imaging_min": round(onset),
        "ivt": ivt,
        "_truth": {
            "probability": prob,
            "clot_length_mm": length,
            "clot_density_hu": density,
            "clot_perviousness": perviousness,
            "collaterals": coll,
            "hypoperfusion_extent": hypoperfusion_extent(site, coll),
        },
    }


def draw_cohort(patients: int, seed: int, start: str = "2016-01-01", end: str = "2020-12-31") -> List[Dict]:
    """The patients :func:`generate` draws for these arguments (hidden variables under ``_truth``, clinical data,
    outcomes), without images: what the truth allows can be simulated over many cohorts in seconds."""
    first, last = dt.date.fromisoformat(str(start)), dt.date.fromisoformat(str(end))
    days = (last - first).days + 1
    return [draw_patient(np.random.default_rng([int(seed), i]), i, first, days) for i in range(int(patients))]


def hypoperfusion_extent(site: str, collaterals: int) -> float:
    """Share of the occluded territory that is hypoperfused: a function of site and collateral grade only."""
    return float(min(EXTENT_SITE[site] + 0.3 * (1 - collaterals / 3), 1.0))


WORLDS = ("varied", "uniform")
# dural venous sinuses in MNI mm (midline or per side): centre line, radius mm
SINUSES = (
    (((0, 60, 40), (0, 20, 72), (0, -40, 72), (0, -85, 40), (0, -100, 10)), 3.5),  # superior sagittal
    (((0, -30, 5), (0, -60, 10), (0, -90, 8)), 2.5),
)  # straight sinus
TRANSVERSE = ((2, -100, 8), (35, -90, 0), (55, -70, -10))  # right transverse-sigmoid sinus (x mirrored: left)
CAVERNOUS = (16, 0, -28)  # centre of the right cavernous sinus around the ICA (x mirrored: left)


def draw_scan(rng: np.random.Generator, age: float, world: str = "varied") -> Dict[str, object]:
    """One patient's acquisition and anatomy constants: the same for every patient in the ``uniform`` world (the
    tests' world), drawn per patient in the ``varied`` world from the ranges real scans show:

    - ``arterial_hu``: enhancement of the open arteries, 150-550 HU (bolus timing and cardiac output; Bae, Radiology
      2010;256:32-61); the contrast that penetrates a clot and the collateral filling scale with it;
    - ``blood_hu``: unenhanced blood (NCCT 42 HU, both worlds): the collateral filling of the vessels beyond the clot
      and the venous filling are shares of the iodine above it, not of the vessel's whole HU (which at a weak bolus
      would make a poorly filled vessel as dark as a clot);
    - ``venous``: venous sinus enhancement as a share of the arterial one, 0.2-1.0 (late acquisitions fill the
      sinuses; the cavernous sinus lies around the ICA);
    - ``calibre``: vessel radii x 0.75-1.25 (M1 diameter 2-4 mm; Rai et al., J NeuroIntervent Surg 2013;5:371-5);
    - ``courses``: per hemisphere a rigid perturbation of the vessel tree (rotation SD 3 degrees, shift SD 1.5 mm,
      each side its own: the circle of Willis is rarely symmetric; Krabbe-Hartkamp et al., Radiology 1998;207:103-11);
    - ``calcification``: calcified plaques of the carotid siphon, 300-900 HU on NCCT and CTA alike, with a
      probability rising with age (most patients over 70; Bos et al., Stroke 2012;43:1878-84);
    - ``noise``: NCCT 2-6 HU, CTA 4-12 HU (dose and reconstruction kernel); ``thickness``: NCCT 2.5-5 mm, CTA
      0.6-2 mm; ``hu_offset``: scanner calibration +-3 HU;
    - ``misregistration``: NCCT moved against the CTA by a rigid motion (rotation SD 1 degree, shift SD 1 mm per
      axis): patient motion between the two acquisitions that co-registration leaves.
    """
    if world not in WORLDS:
        raise BundleInputError(f"--world {world}: use one of {', '.join(WORLDS)}")
    if world == "uniform":
        return {
            "world": world,
            "arterial_hu": 350.0,
            "blood_hu": BLOOD_HU,
            "venous": 0.0,
            "calibre": 1.0,
            "courses": {},
            "plaques": [],
            "noise": (3.0, 6.0),
            "thickness": (5.0, 1.0),
            "hu_offset": 0.0,
            "misregistration": None,
        }
    courses = {side: (rng.normal(0, np.deg2rad(3), 3), rng.normal(0, 1.5, 3)) for side in ("L", "R")}
    plaques = []
    if rng.random() < float(np.clip((age - 40) / 40, 0.1, 0.9)):
        for _ in range(int(rng.integers(1, 5))):
            plaques.append(
                (
                    str(rng.choice(["L", "R"])),
                    float(rng.uniform(0.55, 0.95)),
                    float(rng.uniform(0.8, 1.8)),
                    float(rng.uniform(300, 900)),
                )
            )
    return {
        "world": world,
        "arterial_hu": float(np.clip(rng.lognormal(np.log(320), 0.3), 150, 550)),
        "blood_hu": BLOOD_HU,
        "venous": float(rng.uniform(0.2, 1.0)),
        "calibre": float(rng.uniform(0.75, 1.25)),
        "courses": courses,
        "plaques": plaques,  # (side, position along the ICA 0..1, radius mm, HU)
        "noise": (float(rng.uniform(2, 6)), float(rng.uniform(4, 12))),
        "thickness": (float(rng.choice([2.5, 3.0, 5.0])), float(rng.choice([0.625, 1.0, 1.25, 2.0]))),
        "hu_offset": float(rng.uniform(-3, 3)),
        "misregistration": (rng.normal(0, np.deg2rad(1), 3), rng.normal(0, 1.0, 3)),
    }


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _move(volume: np.ndarray, anatomy: Anatomy, motion: tuple, fill: float) -> np.ndarray:
    """``volume`` moved by a rigid ``motion`` (rotation angles, shift mm) about the MNI origin (trilinear)."""
    rotation, shift = _rotation(motion[0]), np.asarray(motion[1], float)
    affine = anatomy.affine
    # voxel -> world -> inverse motion -> voxel: the value at each output voxel comes from where it was before
    to_world, to_voxel = affine[:3, :3], np.linalg.inv(affine[:3, :3])
    matrix = to_voxel @ rotation.T @ to_world
    offset = to_voxel @ (rotation.T @ (affine[:3, 3] - shift) - affine[:3, 3])
    return ndimage.affine_transform(volume, matrix, offset, order=1, mode="constant", cval=fill)


def _territory_mask(anatomy: Anatomy, site: str, side: str) -> np.ndarray:
    right = side == "R"
    labels = [3 + right] + ([1 + right] if site == "ICA" else [])
    return np.isin(anatomy.territories, labels)


def _course(points: Sequence[Sequence[float]], hemisphere: str, scan: Dict[str, object]) -> np.ndarray:
    """A right-hemisphere centre line placed in ``hemisphere`` and moved by that tree's rigid motion in ``scan``."""
    placed = _mirror(points, hemisphere)
    if hemisphere not in scan["courses"]:
        return placed
    angles, shift = scan["courses"][hemisphere]
    centre = COURSE_PIVOT * np.array([-1.0 if hemisphere == "L" else 1.0, 1, 1])
    return (placed - centre) @ _rotation(angles).T + centre + shift


def _arteries(
    patient: Dict, rng: np.random.Generator, scan: Dict[str, object]
) -> Tuple[Dict[str, List], np.ndarray, float]:
    """The arterial tubes ({"open", "clot", "distal"}: [(centre line, radius mm)]): the contralateral tree fully
    enhanced, the ipsilateral one split at the clot; the ipsilateral ICA-M1-M2 path and the clot's start on it (mm)."""
    side, site = patient["side"], patient["location"]
    path = np.concatenate([_course(ICA, side, scan), _course(M1, side, scan)[1:], _course(M2, side, scan)[1:]])
    ica_len, m1_len = _length(_course(ICA, side, scan)), _length(_course(M1, side, scan))
    offset = {"ICA": ica_len - 8, "M1": ica_len + rng.uniform(2, 8), "M2": ica_len + m1_len + rng.uniform(2, 6)}[site]
    clot_end = offset + patient["_truth"]["clot_length_mm"]
    proximal = [(_cut(path, 0, offset), 2.0)]
    clot = [(_cut(path, offset, clot_end), 2.0)]
    distal = [(_cut(path, clot_end, 1e9), 1.5)]
    branch_at = ica_len + m1_len  # M2 upper division leaves at the end of M1
    (distal if clot_end > branch_at or offset < branch_at else proximal).append((_course(M2_UPPER, side, scan), 1.3))
    distal += [(_course(seg, side, scan), 1.0) for seg in MCA_DISTAL]
    (distal if site == "ICA" else proximal).append((_course(ACA, side, scan), 1.3))
    other = "L" if side == "R" else "R"
    trees = ((ICA, 2.0), (M1, 2.0), (M2, 1.5), (M2_UPPER, 1.3), (ACA, 1.3))
    normal = [(_course(p, other, scan), r) for p, r in trees]
    normal += [(_course(seg, other, scan), 1.0) for seg in MCA_DISTAL]
    normal += [(_course(PCA, "R", scan), 1.3), (_course(PCA, "L", scan), 1.3), (np.asarray(BASILAR, float), 1.8)]
    return {"open": proximal + normal, "clot": clot, "distal": distal}, path, offset


def _vessels(
    anatomy: Anatomy, patient: Dict, rng: np.random.Generator, scan: Dict[str, object]
) -> Tuple[Dict[str, np.ndarray], np.ndarray, np.ndarray, float]:
    """Partial-volume occupancies of the arteries ("open", "clot", "distal"), veins and calcified plaques, the plaques'
    HU, the ipsilateral path and the clot's start on it."""
    world, s, calibre = anatomy.world(), anatomy.spacing, float(scan["calibre"])
    tubes, path, offset = _arteries(patient, rng, scan)
    occ = {name: np.zeros(anatomy.gm.shape, np.float32) for name in ("open", "clot", "distal", "vein", "plaque")}
    for name, parts in tubes.items():
        for pts, radius in parts:
            occ[name] = np.maximum(occ[name], _tube(world, s, pts, radius * calibre))
    plaque_hu = np.zeros(anatomy.gm.shape, np.float32)
    if scan["venous"] > 0:  # dural sinuses and the cavernous sinuses beside the ICA, each side its own size
        veins = [(np.asarray(p, float), r) for p, r in SINUSES]
        for hemisphere in ("L", "R"):
            size = float(rng.uniform(0.6, 1.2))
            veins.append((_mirror(TRANSVERSE, hemisphere), 3.0 * size))
            centre = _mirror([CAVERNOUS], hemisphere)[0]
            veins.append((np.array([centre - (0, 6, 0), centre + (0, 6, 0)]), 3.0 * size))
        for pts, radius in veins:
            occ["vein"] = np.maximum(occ["vein"], _tube(world, s, pts, radius))
        occ["vein"] *= 1 - np.maximum(occ["open"], occ["clot"])
    for hemisphere, where, radius, hu in scan["plaques"]:  # calcified siphon plaques on the ICA's wall
        ica = _course(ICA, hemisphere, scan)
        centre = _cut(ica, where * _length(ica), where * _length(ica) + 0.1)[0] + rng.normal(0, 1.0, 3)
        blob = np.clip((radius + s / 2 - np.linalg.norm(world - centre, axis=-1)) / s, 0, 1).astype(np.float32)
        plaque_hu = np.maximum(plaque_hu, blob * hu)
        occ["plaque"] = np.maximum(occ["plaque"], blob)
    return occ, plaque_hu, path, offset


def _hypoperfusion(
    anatomy: Anatomy, patient: Dict, rng: np.random.Generator, at: np.ndarray, contrast: float
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hypoperfused region (bool): the part of the occluded territory nearest the occlusion point ``at`` (mm),
    whose share follows site and collaterals only (so it carries nothing of the clot's length, density or
    perviousness); the smoothed infarct core inside it; the CTA parenchymal enhancement factor (1 in normal brain,
    1 - c + c G/3 where hypoperfused, c = ``contrast``)."""
    truth, brain = patient["_truth"], anatomy.brain
    territory = _territory_mask(anatomy, patient["location"], patient["side"]) & (brain > 0.5)
    reach = np.linalg.norm(anatomy.world() - at, axis=-1)
    hypo = np.zeros(brain.shape, bool)
    if territory.any():
        hypo = territory & (reach <= np.quantile(reach[territory], truth["hypoperfusion_extent"]))
    onset_h = patient["onset_to_imaging_min"] / 60
    core_frac = float(np.clip(0.05 + 0.06 * onset_h * (1 - truth["collaterals"] / 4) + rng.normal(0, 0.02), 0.02, 0.7))
    field = ndimage.gaussian_filter(rng.standard_normal(brain.shape), 8 / anatomy.spacing)
    core = np.zeros(brain.shape, bool)
    if hypo.any():
        core = hypo & (field >= np.quantile(field[hypo], 1 - core_frac))
    core_soft = ndimage.gaussian_filter(core.astype(np.float32), 1.0)
    perfusion = ndimage.gaussian_filter(np.where(hypo, 1 - contrast + contrast * truth["collaterals"] / 3, 1.0), 1.0)
    return hypo, core_soft, perfusion


def _head(anatomy: Anatomy) -> Dict[str, np.ndarray]:
    """Tissue classes of the head around the brain: CSF, a 2 mm CSF rim, a 6 mm skull shell, a 4 mm scalp."""
    brain = anatomy.brain
    outside = ndimage.distance_transform_edt(brain < 0.5, sampling=anatomy.spacing)
    return {
        "csf": np.clip(brain - anatomy.gm - anatomy.wm, 0, 1),
        "skull": ((outside > 2) & (outside <= 8)).astype(np.float32),
        "scalp": ((outside > 8) & (outside <= 12)).astype(np.float32),
        "rim": ((outside > 0) & (outside <= 2)).astype(np.float32),
    }


def _ct(
    anatomy: Anatomy,
    patient: Dict,
    rng: np.random.Generator,
    scan: Dict[str, object],
    head: Dict[str, np.ndarray],
    vessels: Tuple[Dict[str, np.ndarray], np.ndarray],
    core_soft: np.ndarray,
    perfusion: np.ndarray,
) -> Dict[str, np.ndarray]:
    """NCCT and CTA in HU: the head, the vessels (one bolus fills the arteries, the clot's pervious part and the
    collaterals), the plaques, misregistration, slice thickness and noise."""
    (occ, plaque_hu), truth = vessels, patient["_truth"]
    gm, wm, brain, s = anatomy.gm, anatomy.wm, anatomy.brain, anatomy.spacing
    onset_h = patient["onset_to_imaging_min"] / 60
    tissue = 38 * gm + 27 * wm + 6 * head["csf"] + 6 * head["rim"] + 1200 * head["skull"] + 40 * head["scalp"]
    air = 1 - np.clip(brain + head["rim"] + head["skull"] + head["scalp"], 0, 1)
    base = tissue - 1000 * air + scan["hu_offset"] * (1 - air)
    ncct = base - 6 * min(onset_h / 6, 1) * core_soft
    blood = np.maximum.reduce([occ["open"], occ["distal"], occ["vein"]])
    ncct = ncct * (1 - blood) + BLOOD_HU * blood
    ncct = ncct * (1 - occ["clot"]) + truth["clot_density_hu"] * occ["clot"]
    arterial = float(scan["arterial_hu"])
    cta = base + 30 * (arterial / 350) * brain * perfusion
    # collaterals and the venous phase scale the iodine over the blood's own density, not the vessel's whole HU
    blood_hu = float(scan["blood_hu"])
    iodine = arterial - blood_hu
    filling = 0.5 + 0.45 * truth["collaterals"] / 3
    vessel = (occ["open"] + occ["distal"] * filling + occ["vein"] * float(scan["venous"])) * iodine
    vessel = vessel + (occ["open"] + occ["distal"] + occ["vein"]) * blood_hu
    cta = cta * (1 - blood) + vessel
    clot_cta = truth["clot_density_hu"] + PERVIOUS_HU * (arterial / 350) * truth["clot_perviousness"]
    cta = cta * (1 - occ["clot"]) + clot_cta * occ["clot"]
    ncct = ncct * (1 - occ["plaque"]) + plaque_hu
    cta = cta * (1 - occ["plaque"]) + plaque_hu
    if scan["misregistration"] is not None:
        ncct = _move(ncct, anatomy, scan["misregistration"], -1000.0)
    (ncct_noise, cta_noise), (ncct_thick, cta_thick) = scan["noise"], scan["thickness"]
    return {
        "ncct": _slices(ncct, ncct_thick, s) + rng.normal(0, ncct_noise, gm.shape),
        "cta": _slices(cta, cta_thick, s) + rng.normal(0, cta_noise, gm.shape),
    }


def _ctp(
    anatomy: Anatomy, patient: Dict, rng: np.random.Generator, csf: np.ndarray, hypo: np.ndarray, core_soft: np.ndarray
) -> Dict[str, np.ndarray]:
    """CT perfusion maps: delayed, reduced flow where hypoperfused, low volume in the core."""
    gm, wm, brain = anatomy.gm, anatomy.wm, anatomy.brain
    g = patient["_truth"]["collaterals"] / 3
    hypo_soft = ndimage.gaussian_filter(hypo.astype(np.float32), 1.0)
    tissue_in = np.clip(brain, 0, 1)
    maps = {
        "tmax": tissue_in * (2 + hypo_soft * (4 + 6 * (1 - g))),  # s
        "cbf": tissue_in * (60 * gm + 25 * wm + 5 * csf) * (1 - hypo_soft * (0.6 - 0.3 * g)) * (1 - 0.7 * core_soft),
        "cbv": tissue_in * (4.5 * gm + 2.2 * wm + 0.5 * csf) * (1 - 0.65 * core_soft),  # ml/100 g
    }
    maps["mtt"] = np.where(maps["cbf"] > 1, 60 * maps["cbv"] / np.maximum(maps["cbf"], 1), 0)  # s
    images = {}
    for name, noise in (("tmax", 0.3), ("cbf", 3.0), ("cbv", 0.2), ("mtt", 0.3)):
        images[name] = np.clip(maps[name] + tissue_in * rng.normal(0, noise, gm.shape), 0, None)
    return images


def _mr(
    anatomy: Anatomy, patient: Dict, rng: np.random.Generator, head: Dict[str, np.ndarray], core_soft: np.ndarray
) -> Dict[str, np.ndarray]:
    """b0, b1000 (magnitude of complex noise), ADC from them (1e-6 mm^2/s) and FLAIR (bright core after 4.5 h)."""
    gm, wm, brain, s = anatomy.gm, anatomy.wm, anatomy.brain, anatomy.spacing
    csf, rim, scalp = head["csf"], head["rim"], head["scalp"]
    onset_h = patient["onset_to_imaging_min"] / 60
    extent = np.clip(brain + rim + scalp * 0.6, 0, 1)
    s0 = 850 * gm + 700 * wm + 1800 * (csf + rim) + 300 * scalp
    s0 = s0 * (1 + 0.1 * core_soft * min(onset_h / 6, 1))
    adc_true = np.where(
        extent > 0, (0.85 * gm + 0.75 * wm + 3.0 * (csf + rim)) / np.maximum(gm + wm + csf + rim, 1e-3), 1.0
    )
    adc_true = adc_true * (1 - core_soft) + 0.45 * core_soft
    s1000 = s0 * np.exp(-adc_true)  # b = 1000 s/mm^2, ADC in 1e-3 mm^2/s
    sigma = 0.02 * 700
    b0 = np.abs(_slices(s0, 5, s) + rng.normal(0, sigma, gm.shape) + 1j * rng.normal(0, sigma, gm.shape))
    b1000 = np.abs(_slices(s1000, 5, s) + rng.normal(0, sigma / 2, gm.shape) + 1j * rng.normal(0, sigma / 2, gm.shape))
    flair = 750 * gm + 600 * wm + 150 * (csf + rim) + 250 * scalp
    flair = flair * (1 + (0.4 if onset_h > 4.5 else 0.1) * core_soft)
    with np.errstate(divide="ignore", invalid="ignore"):
        adc = -np.log(np.maximum(b1000, 1e-3) / np.maximum(b0, 1e-3)) / 1000
    return {
        "b0": b0,
        "b1000": b1000,
        "adc": np.where(b0 > 5 * sigma, np.clip(adc, 0, 5e-3), 0) * 1e6,
        "flair": np.abs(_slices(flair, 5, s) + rng.normal(0, sigma, gm.shape)),
    }


def render(
    anatomy: Anatomy,
    patient: Dict,
    rng: np.random.Generator,
    modalities: Sequence[str],
    hypoperfusion_contrast: float = 0.4,
    scan: Dict[str, object] | None = None,
    truth: bool = False,
) -> Dict[str, np.ndarray]:
    """Images of one patient in the anatomy's grid: NCCT/CTA in HU, b0/b1000/ADC/FLAIR in scanner units.

    ``scan``: the acquisition and anatomy constants of :func:`draw_scan` (None: the uniform world's). ``truth``: also
    ``clot``, the clot's partial-volume occupancy (0-1) in the same grid (what a clot segmentation is checked on).

    ``hypoperfusion_contrast`` c: the hypoperfused region's CTA enhancement is 30 HU x (1 - c + c G/3); the default
    0.4 is a faint change; tests raise it to 0.9 so that the occlusion side is visible on a coarse grid (it never
    carries the outcome, which does not depend on the region).
    """
    scan = scan or draw_scan(rng, 70.0, "uniform")
    occ, plaque_hu, path, offset = _vessels(anatomy, patient, rng, scan)
    at = _cut(path, offset, offset + 1)[0]
    hypo, core_soft, perfusion = _hypoperfusion(anatomy, patient, rng, at, hypoperfusion_contrast)
    head = _head(anatomy)
    images: Dict[str, np.ndarray] = {}
    if "ct" in modalities:
        images.update(_ct(anatomy, patient, rng, scan, head, (occ, plaque_hu), core_soft, perfusion))
    if "ctp" in modalities:
        images.update(_ctp(anatomy, patient, rng, head["csf"], hypo, core_soft))
    if "mr" in modalities:
        images.update(_mr(anatomy, patient, rng, head, core_soft))
    if truth:
        images["clot"] = occ["clot"]
    return images


def _slices(volume: np.ndarray, thickness: float, spacing: float) -> np.ndarray:
    """Blur along z to mimic a slice ``thickness`` (mm) thicker than the grid."""
    sigma = max(thickness - spacing, 0) / 2.355 / spacing
    return ndimage.gaussian_filter1d(volume, sigma, axis=2) if sigma > 0 else volume


def _save(path: str, data: np.ndarray, affine: np.ndarray, ct: bool) -> None:
    arr = np.round(data).clip(-1024, 3071).astype(np.int16) if ct else data.astype(np.float32)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")

    atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=".nii.gz")


def generate(
    out: str,
    patients: int = 250,
    seed: int = 0,
    modalities: str = "ct,mr",
    spacing: float = 2.0,
    start: str = "2016-01-01",
    end: str = "2020-12-31",
    atlas_dir: str = DEFAULT_ATLAS_DIR,
    unlabeled: bool = False,
    native: bool = False,
    hypoperfusion_contrast: float = 0.4,
    world: str = "varied",
) -> str:
    """Write a demo cohort to ``out``; the same arguments always give identical files. Returns the CSV path.

    ``world``: ``varied`` (default) draws each patient's acquisition and anatomy constants (:func:`draw_scan`);
    ``uniform`` gives every patient the same ones. The patients, their hidden variables and
    outcomes are the same in both worlds (the scan constants come from a seed stream of their own).

    ``unlabeled=True`` writes an unlabeled pool for self-supervised pretraining instead: patients
    ``pool0000``... (drawn from seed streams of their own, never a cohort patient) in ``unlabeled.csv``
    with only ``patient_id``, ``side`` and the image columns, and ``unlabeled_manifest.json`` with the settings.
    ``hypoperfusion_contrast``: see :func:`render` (tests only; the demo keeps the faint default).
    """
    mods = [m.strip() for m in (modalities.split(",") if isinstance(modalities, str) else modalities)]
    if not mods or any(m not in ("ct", "ctp", "mr") for m in mods):
        raise BundleInputError(f"--modalities '{modalities}': a list of ct, ctp (CT perfusion maps), mr")
    if native and "ctp" in mods:
        raise BundleInputError("--modalities ctp: perfusion maps are written in MNI space only (not with --native)")
    if int(patients) < 20:
        raise BundleInputError(f"--patients {patients}: at least 20 patients are needed for 5 folds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anatomy = load_anatomy(float(spacing), atlas_dir)
    first, last = dt.date.fromisoformat(str(start)), dt.date.fromisoformat(str(end))
    rows: List[Dict] = []
    truth: Dict[str, Dict] = {}
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    for i in range(int(patients)):
        patient = _patient(
            anatomy, out, int(seed), i, (first, last), mods, unlabeled, native, world, float(hypoperfusion_contrast)
        )
        truth[patient["patient_id"]] = patient.pop("_truth")
        rows.append(patient)
    settings = dict(
        patients=int(patients),
        seed=int(seed),
        modalities=mods,
        spacing=float(spacing),
        start=str(first),
        end=str(last),
        atlas_used=anatomy.atlas_used,
        native=bool(native),
        hypoperfusion_contrast=float(hypoperfusion_contrast),
        world=str(world),
    )
    return _write_tables(out, rows, truth, settings, unlabeled)


def _patient(
    anatomy: Anatomy,
    out: str,
    seed: int,
    i: int,
    dates: Tuple[dt.date, dt.date],
    mods: List[str],
    unlabeled: bool,
    native: bool,
    world: str,
    hypoperfusion_contrast: float,
) -> Dict:
    """Patient ``i``: drawn from its own seed streams, rendered, written under ``out/images``; its cohort row with the
    image paths and its rounded truth under ``_truth``."""
    rng = np.random.default_rng([seed, i, 1] if unlabeled else [seed, i])
    first, last = dates
    patient = draw_patient(rng, i, first, (last - first).days + 1, prefix="pool" if unlabeled else "demo")
    draw_rlvo(np.random.default_rng([seed, i, 3]), patient)
    scan = draw_scan(np.random.default_rng([seed, i, 4]), patient["age"], world)
    images = render(anatomy, patient, rng, mods, hypoperfusion_contrast, scan)
    patient["_truth"]["scan"] = _scan_record(scan)
    affines = {seq: anatomy.affine for seq in images}
    if native:
        _to_scanner(anatomy, images, affines, patient["_truth"], np.random.default_rng([seed, i, 2]))
    for seq, data in images.items():
        rel = os.path.join("images", f"{patient['patient_id']}_{seq}.nii.gz")
        _save(os.path.join(out, rel), data, affines[seq], seq in ("ncct", "cta"))
        patient[seq] = rel
    patient["_truth"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in patient["_truth"].items()}
    return patient


def _to_scanner(
    anatomy: Anatomy, images: Dict[str, np.ndarray], affines: Dict, truth: Dict, rng: np.random.Generator
) -> None:
    """Each acquisition's images moved into scanner space in place (random head pose, its slice thickness, a
    headrest on CT); the poses recorded in ``truth``."""
    poses = session_poses(rng)
    truth["mni_to_scanner"] = {}
    for acquisition, (sequences, thickness) in ACQUISITIONS.items():
        for seq in (q for q in sequences if q in images):
            ct = seq in ("ncct", "cta")
            images[seq], affines[seq] = to_scanner(
                images[seq],
                anatomy.affine,
                poses[acquisition],
                anatomy.spacing,
                max(thickness, anatomy.spacing),
                -1024.0 if ct else 0.0,
            )
            images[seq] = add_headrest(images[seq], affines[seq]) if ct else images[seq]
            truth["mni_to_scanner"][seq] = np.round(poses[acquisition], 6).tolist()


def _write_tables(out: str, rows: List[Dict], truth: Dict[str, Dict], settings: Dict, unlabeled: bool) -> str:
    """``cohort.csv`` and ``manifest.json`` (or, for an unlabeled pool, ``unlabeled.csv`` with the occlusion side, read
    off the CTA by the radiologist, and the image columns only, and ``unlabeled_manifest.json``); returns the CSV path.
    """
    images = [c for c in CSV_COLUMNS if c in rows[0] and c in SEQUENCES]
    columns = ["patient_id", "side"] + images if unlabeled else CSV_COLUMNS
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = os.path.join(out, "unlabeled.csv" if unlabeled else "cohort.csv")
    atomic_write_text(csv_path, buf.getvalue())
    if unlabeled:
        atomic_write_json(
            os.path.join(out, "unlabeled_manifest.json"), {"generator": "scripts.demo.generator", "settings": settings}
        )
        return csv_path
    atomic_write_json(os.path.join(out, "manifest.json"), _manifest(rows, truth, locals_=settings))
    return csv_path


def _scan_record(scan: Dict[str, object]) -> Dict[str, object]:
    """The scan constants of :func:`draw_scan` as the manifest records them (numbers rounded, arrays as lists)."""
    motion = scan["misregistration"]
    return {
        "arterial_hu": round(float(scan["arterial_hu"]), 1),
        "venous": round(float(scan["venous"]), 3),
        "calibre": round(float(scan["calibre"]), 3),
        "plaques": len(scan["plaques"]),
        "noise_hu": [round(v, 2) for v in scan["noise"]],
        "thickness_mm": list(scan["thickness"]),
        "misregistration_mm": None if motion is None else round(float(np.linalg.norm(motion[1])), 2),
    }


def _manifest(rows: List[Dict], truth: Dict[str, Dict], locals_: Dict) -> Dict:
    prob = np.array([truth[r["patient_id"]]["probability"] for r in rows])
    fpe = np.array([r["mtici_first_pass"] in ("2b", "2c", "3") for r in rows], dtype=int)
    rlvo = np.array([derive_labels(r)["rlvo"] for r in rows])
    rlvo_prob = np.array([truth[r["patient_id"]]["rlvo_probability"] for r in rows])
    redraw = np.random.default_rng(12345).random((200, len(prob))) < prob
    expected = float(np.mean([roc_auc_score(y, prob) for y in redraw if 0 < y.sum() < len(y)]))
    return {
        "generator": "scripts.demo.generator",
        "settings": locals_,
        "label": "fpe",
        "label_rule": (__doc__ or "")
        .split("Truth (the label rule, also in manifest.json): ")[1]
        .split("``bayes")[0]
        .strip(),
        "coefficients": {**COEF, "site": SITE_EFFECT},
        "fpe_rate": float(fpe.mean()),
        "bayes_auc": float(roc_auc_score(fpe, prob)),
        "bayes_auc_by_label": {"fpe": float(roc_auc_score(fpe, prob)), "rlvo": float(roc_auc_score(rlvo, rlvo_prob))},
        "rlvo": {
            "coefficients": RLVO_COEF,
            "rate": float(rlvo.mean()),
            "clinical_share": clinical_share([{**r, "_truth": truth[r["patient_id"]]} for r in rows]),
        },
        "bayes_auc_expected": expected,
        "truth": truth,
    }


if __name__ == "__main__":
    fire.Fire(generate)
