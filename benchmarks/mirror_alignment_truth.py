"""How often the aligned mirror has a vessel where the clot is, against the generator's own truth.

``python benchmarks/mirror_alignment_truth.py --dataset_dir DIR [--patients 80]`` (a varied demo cohort that
``python -m scripts.demo`` wrote, with manifest.json and datalist.json).

ClotReadingNet finds a clot where the mirror has a vessel and the patient's own side does not, so the readings are only
as good as the mirror's alignment at the clot. For the first ``patients`` of the cohort the clot is rendered again
without noise at perviousness 0 and 1 (the CTA changes in the clot only) and put through the bundle's preprocessing
(train.json + clot_readings.json): the clot voxels are where the CTA rose by more than half
of a fully pervious clot's enhancement. Printed: the share of clot voxels whose mirror enhances by more than half the
patient's arterial enhancement (coverage) after the plain flip, after MirrorAlignd, and with the mirror moved by the
generator's own relative motion of the two vessel trees (the most an alignment can reach), each as the mean over
patients and the number of patients under 0.1 (a mirror that misses the clot reads vessels elsewhere as clot).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import sys
import tempfile

import fire
import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts.data.anatomy import DEFAULT_ATLAS_DIR, load_anatomy  # noqa: E402
from scripts.data.mirror_align import enhancement_maps, sample_at  # noqa: E402
from scripts.data.split import load_datalist  # noqa: E402
from scripts.demo import generator as g  # noqa: E402

CONFIGS = ["configs/train.json", "configs/clot_readings.json"]
PLAIN = "$@channel_transforms + @mirror_transforms + @resize_transforms"
FLIP_X = np.diag([-1.0, 1.0, 1.0])


def _parser(dataset_dir: str, work: str, plain: bool) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([os.path.join(ROOT, c) for c in CONFIGS])
    parser.update({"dataset_dir": dataset_dir, "ckpt_dir": work})
    if plain:
        parser["shape_transforms"] = PLAIN
    parser.get_parsed_content("imports")
    return parser


def true_scan(seed: int, first: dt.date, days: int, patient_id: str) -> tuple:
    """The demo's draws for ``patient_id`` (cohort ``seed``, admission dates from ``first`` over ``days``): the
    patient, its scan constants (:func:`scripts.demo.generator.draw_scan`) and the render's random generator."""
    i = int(patient_id[len("demo") :])
    rng = np.random.default_rng([seed, i])
    patient = g.draw_patient(rng, i, first, days)
    g.draw_rlvo(np.random.default_rng([seed, i, 3]), patient)
    return patient, g.draw_scan(np.random.default_rng([seed, i, 4]), patient["age"], "varied"), rng


def true_alignment(
    box: torch.Tensor, scan: dict, side: str, box_mm: list, spacing: float, order: int = 1
) -> torch.Tensor:
    """The plain-flip box (4, H, W, D) with the occluded half's mirror channels moved by the generator's relative
    motion of the two trees (each turned about its own ICA bifurcation), resampled by a B-spline of ``order`` (1 =
    trilinear), then turned like MirrorAlignd."""
    other = "L" if side == "R" else "R"
    (a_own, t_own), (a_other, t_other) = scan["courses"][side], scan["courses"][other]
    rot_own, rot_mirror = g._rotation(a_own), FLIP_X @ g._rotation(a_other) @ FLIP_X
    centre = g.COURSE_PIVOT * np.array([-1.0 if side == "L" else 1.0, 1, 1])
    shape = box.shape[1:]
    lo = np.array([b[0] for b in box_mm], float)
    voxels = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    own_mm = lo + spacing * voxels
    mirror_mm = (rot_mirror @ rot_own.T @ (own_mm - centre - np.asarray(t_own)).T).T + centre + FLIP_X @ t_other
    coords = torch.from_numpy((mirror_mm - lo) / spacing).float()
    half = torch.zeros(shape, dtype=torch.bool)
    half[slice(0, shape[0] // 2) if side == "L" else slice(shape[0] // 2, shape[0])] = True
    out = box.clone().float()
    for c in (2, 3):
        out[c] = torch.where(half, sample_at(box[c], coords, order).view(shape), out[c])
    return out.flip(1) if side == "R" else out


def _coverage(box: torch.Tensor, clot: torch.Tensor, windows: list) -> float:
    _, mirror, _, arterial = enhancement_maps(box[None], windows, 0.95, 0.999)
    return float((mirror[0][clot] > 0.5 * arterial[0]).float().mean())


def main(dataset_dir: str, patients: int = 80) -> None:
    """Print the coverage of the clot by the mirror's vessels: plain flip, MirrorAlignd, the true motion."""
    with open(os.path.join(dataset_dir, "manifest.json")) as f:
        settings = json.load(f)["settings"]
    if settings["world"] != "varied" or settings["native"]:
        raise SystemExit("a varied-world demo cohort in MNI space is needed (scripts.demo --world varied)")
    seed, first = settings["seed"], dt.date.fromisoformat(settings["start"])
    days = (dt.date.fromisoformat(settings["end"]) - first).days + 1
    datalist = load_datalist(os.path.join(dataset_dir, "datalist.json"))
    items = (datalist["training"] + datalist["test"])[: int(patients)]
    anatomy = load_anatomy(settings["spacing"], DEFAULT_ATLAS_DIR)
    box_mm = ConfigParser.load_config_file(os.path.join(ROOT, "configs/clot_readings.json"))["vessel_box_mm"]
    with tempfile.TemporaryDirectory() as work:
        parser = _parser(dataset_dir, work, False)
        windows = [parser["ncct_window"], parser["cta_window"]]
        aligned = parser.get_parsed_content("validate#preprocessing")
        plain = _parser(dataset_dir, work, True).get_parsed_content("validate#preprocessing")
        results = {"plain flip": [], "MirrorAlignd": [], "the true motion": []}
        for item in items:
            patient, scan, rng = true_scan(seed, first, days, item["patient_id"])
            scan["noise"] = (0.0, 0.0)
            cta = []
            for perviousness in (0.0, 1.0):
                p = copy.deepcopy(patient)
                p["_truth"]["clot_perviousness"] = perviousness
                images = g.render(anatomy, p, copy.deepcopy(rng), ["ct"], 0.4, scan)
                paths = {}
                for key in ("ncct", "cta"):
                    paths[key] = os.path.join(work, f"truth_{key}.nii.gz")
                    nib.save(nib.Nifti1Image(images[key].astype(np.float32), anatomy.affine), paths[key])
                own = plain({**item, **paths})["image"][1].float()  # the CTA channel: not moved by MirrorAlignd
                own = own.flip(0) if item["side"] == "R" else own  # turned like it
                cta.append(own * (windows[1][1] - windows[1][0]) + windows[1][0])
            clot = (cta[1] - cta[0]) > 0.5 * g.PERVIOUS_HU * scan["arterial_hu"] / 350
            if int(clot.sum()) == 0:
                continue
            item = {k: (os.path.join(dataset_dir, v) if k in ("ncct", "cta") else v) for k, v in item.items()}
            box = plain(dict(item))["image"]
            flipped = box.flip(1) if item["side"] == "R" else box
            results["plain flip"].append(_coverage(flipped, clot, windows))
            results["MirrorAlignd"].append(_coverage(aligned(dict(item))["image"], clot, windows))
            moved = true_alignment(box, scan, item["side"], box_mm, settings["spacing"])
            results["the true motion"].append(_coverage(moved, clot, windows))
    for name, values in results.items():
        v = np.array(values)
        print(
            f"{name}: coverage of the clot by the mirror's vessels {v.mean():.3f}, under 0.1 in {(v < 0.1).sum()}"
            f" of {len(v)} patients",
            flush=True,
        )


if __name__ == "__main__":
    fire.Fire(main)
