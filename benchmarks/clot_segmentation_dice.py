"""How well the clot SEG of the DICOM answer lies on the generator's clot: Dice on the CTA's own slices.

``python benchmarks/clot_segmentation_dice.py [--patients 40] [--seed 11] [--worlds uniform,varied]``

Per world, ``patients`` demo patients drawn as ``scripts.demo`` draws them (2 mm, seed streams ``[seed, i]``) are
rendered with the clot's occupancy (``render(..., truth=True)``), their CTA written as a DICOM series
(``tests/dicom_series.py``), and the main job's preprocessing and readings (``configs/inference.json`` +
``configs/clot_readings.json``) give the clot membership that :func:`scripts.inference.dicom_images.on_source_frames`
puts on the CTA's slices, as the SEG holds it (membership >= 0.5). Printed per world: the patients whose clot was
found, the Dice against the true clot (occupancy >= 0.5 on the same slices; 0 where none was found), its median and
quartiles, and the share of patients with Dice >= 0.5.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile

import fire
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from monai.bundle import ConfigParser  # noqa: E402
from monai.transforms import Compose, Orientationd  # noqa: E402
from pydicom import dcmread  # noqa: E402

from scripts.data.anatomy import load_anatomy  # noqa: E402
from scripts.data.checks import LoadScand  # noqa: E402
from scripts.demo.generator import draw_patient, draw_scan, render  # noqa: E402
from scripts.inference.dicom_images import box_affine, on_source_frames, unturn  # noqa: E402
from tests.dicom_series import write_volume_series  # noqa: E402


def patient_dice(anatomy, preprocessing, reader, seed: int, i: int, world: str, folder: str) -> tuple:
    """(clot found, Dice) of demo patient ``i`` of ``seed`` in ``world``."""
    rng = np.random.default_rng([seed, i])
    patient = draw_patient(rng, i, dt.date(2018, 1, 1), 365)
    scan = draw_scan(np.random.default_rng([seed, i, 4]), patient["age"], world)
    images = render(anatomy, patient, rng, ["ct"], scan=scan, truth=True)
    item = {"patient_id": f"p{i}", "side": patient["side"], "location": patient["location"]}
    item.update(age=70, ivt=1, nihss=12)
    for key in ("ncct", "cta"):
        item[key] = write_volume_series(images[key], anatomy.affine, os.path.join(folder, f"{world}{i}", key))
    cta = [dcmread(os.path.join(item["cta"], f)) for f in sorted(os.listdir(item["cta"]))]
    load = Compose([LoadScand("cta", ensure_channel_first=True, image_only=True), Orientationd("cta", "RAS")])
    affine = box_affine(preprocessing, load({"cta": item["cta"]})["cta"])
    memberships = reader.membership_maps(preprocessing(dict(item))["image"][None])[0].numpy()
    found = on_source_frames(unturn(memberships, patient["side"])[1:], affine, cta)[..., 0] >= 0.5
    truth = on_source_frames(images["clot"][None], anatomy.affine, cta)[..., 0] >= 0.5
    return bool(found.any()), float(2 * (found & truth).sum() / max(found.sum() + truth.sum(), 1))


def main(patients: int = 40, seed: int = 11, worlds: str = "uniform,varied") -> None:
    """Print the Dice table (module docstring)."""
    parser = ConfigParser()
    parser.read_config([os.path.join(ROOT, "configs", f) for f in ("inference.json", "clot_readings.json")])
    parser.update({"ckpt_dir": tempfile.mkdtemp(), "model_config": None})
    preprocessing, reader = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("network_def")
    anatomy = load_anatomy(2.0)
    print("| world | patients | clot found | Dice median (IQR) | Dice >= 0.5 |")
    print("|---|---|---|---|---|")
    for world in worlds.split(",") if isinstance(worlds, str) else worlds:
        with tempfile.TemporaryDirectory() as folder:
            results = [patient_dice(anatomy, preprocessing, reader, seed, i, world, folder) for i in range(patients)]
        dice = np.array([d for _, d in results])
        q1, median, q3 = np.percentile(dice, [25, 50, 75])
        found = sum(f for f, _ in results)
        print(f"| {world} | {patients} | {found} | {median:.2f} ({q1:.2f}-{q3:.2f}) | {np.mean(dice >= 0.5):.0%} |")


if __name__ == "__main__":
    fire.Fire(main)
