"""What the mirror's alignment and its resampling cost the main job's readings, against the generator's own truth.

``python benchmarks/alignment_ceiling.py --dataset_dir DIR [--symmetric_dir DIR2]``

``DIR``: a varied demo cohort that ``python -m scripts.demo`` wrote (manifest.json, datalist.json). Its plain-flip
vessel boxes (``benchmarks/clot_readings_ablation.py``'s cache) have each hemisphere's mirror moved by MirrorAlignd's
motion and by the generator's own relative motion of the two vessel trees (the best any rigid alignment can do), each
resampled trilinearly (order 1) and by the cubic B-spline (order 3, MirrorAlignd's); printed: the main job's readings
and logistic regression on the cohort's folds (fold mean / pooled ROC-AUC) and each reading's correlation with its
hidden variable (log clot length, density, perviousness, collateral grade).

``DIR2``: a cohort whose two vessel trees are exact mirror images (``benchmarks/world_factors.py``'s ``no_courses``):
the mirror of its aligned boxes moved a quarter voxel along every axis and back, at each order: what the resampling
alone costs where the alignment is exact.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

import fire
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from monai.bundle import ConfigParser  # noqa: E402

from benchmarks.clot_readings_ablation import CONFIGS, PLAIN  # noqa: E402
from benchmarks.mirror_alignment_truth import true_alignment, true_scan  # noqa: E402
from benchmarks.replica_ablation import cached_inputs  # noqa: E402
from benchmarks.world_factors import score_readings  # noqa: E402
from scripts.data.mirror_align import align_mirror, resample  # noqa: E402
from scripts.data.split import load_datalist  # noqa: E402

ORDERS = {1: "trilinear", 3: "cubic B-spline"}


def _report(name: str, x: torch.Tensor, data: dict, folder: str) -> None:
    datalist = load_datalist(os.path.join(folder, "datalist.json"))
    with open(os.path.join(folder, "manifest.json")) as f:
        truth = json.load(f)["truth"]
    (mean, pooled), r = score_readings(x, data, datalist, truth)
    print(f"{name}: {mean:.3f} / {pooled:.3f}; readings vs truth r {r}", flush=True)


def _round_trip(x: torch.Tensor, order: int, step: float = 0.25) -> torch.Tensor:
    """The mirror channels of (N, 4, H, W, D) moved ``step`` voxels along every axis and back."""
    shape = x.shape[2:]
    everywhere = torch.nonzero(torch.ones(shape, dtype=torch.bool)).float()
    there, centre, out = torch.tensor([0.0, 0.0, 0.0] + [step] * 3), torch.zeros(3), x.clone()
    for box in out:
        for c in (2, 3):
            once = resample(box[c], everywhere, there, centre, order).view(shape)
            box[c] = resample(once, everywhere, -there, centre, order).view(shape)
    return out


def main(dataset_dir: str, symmetric_dir: str | None = None) -> None:
    """Print one line per alignment and resampling (and per round trip on ``symmetric_dir``)."""
    with open(os.path.join(dataset_dir, "manifest.json")) as f:
        settings = json.load(f)["settings"]
    plain = cached_inputs(dataset_dir, CONFIGS, PLAIN, "clot_readings_cache", "ablation_models")
    sides = [it["side"] for it in plain["items"]]
    box_mm = ConfigParser.load_config_file(os.path.join(ROOT, "configs/clot_readings.json"))["vessel_box_mm"]
    first = dt.date.fromisoformat(settings["start"])
    days = (dt.date.fromisoformat(settings["end"]) - first).days + 1
    scans = [true_scan(settings["seed"], first, days, it["patient_id"])[1] for it in plain["items"]]
    for order, name in ORDERS.items():
        found = torch.stack([align_mirror(x, order=order) for x in plain["X"]])
        found = torch.stack([b.flip(1) if s == "R" else b for b, s in zip(found, sides)])
        _report(f"MirrorAlignd's motion, {name}", found, plain, dataset_dir)
        moved = [
            true_alignment(x, scan, side, box_mm, settings["spacing"], order)
            for x, scan, side in zip(plain["X"], scans, sides)
        ]
        _report(f"the generator's true motion, {name}", torch.stack(moved), plain, dataset_dir)
    if symmetric_dir:
        aligned = cached_inputs(symmetric_dir, CONFIGS, {}, "clot_readings_cache_aligned", "ablation_models")
        _report("mirror-image trees, as aligned", aligned["X"], aligned, symmetric_dir)
        for order, name in ORDERS.items():
            trip = _round_trip(aligned["X"], order)
            _report(f"mirror-image trees, mirror a quarter voxel there and back, {name}", trip, aligned, symmetric_dir)


if __name__ == "__main__":
    fire.Fire(main)
