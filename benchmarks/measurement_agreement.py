"""How well the main job's clot measurements agree with the demo generator's truth, in physical units.

``python benchmarks/measurement_agreement.py --dataset_dir DIR`` (a demo cohort with manifest.json and the
datalist.json that ``python -m scripts.demo`` writes).

Every datalist patient goes through the bundle's own preprocessing of train.json + clot_readings.json (the vessel box
after MirrorAlignd, cached in ``DIR/clot_readings_cache_aligned.npz`` as ``clot_readings_ablation.py`` caches it) and
:meth:`scripts.networks.clot_readings.ClotReadingNet.clinical_measurements` with the main job's settings. Printed per
measurement, against the hidden variable the generator drew: the patients where a clot was found, Spearman's and
Pearson's r, and where both are in the same unit a Bland-Altman bias (measured minus true) with its 95% limits of
agreement. The true perviousness in HU is the contrast the generator put inside the clot (60 HU x the patient's
arterial enhancement / 350 x perviousness); the collateral grade (0-3) has no unit, so only its correlation is shown.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List

import fire
import numpy as np
from monai.bundle import ConfigParser
from scipy.stats import pearsonr, spearmanr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.clot_readings_ablation import CONFIGS  # noqa: E402
from benchmarks.replica_ablation import cached_inputs  # noqa: E402

PAIRS = (  # measurement, the truth it reads, whether the units agree (Bland-Altman)
    ("clot_length_mm", "length_mm", True),
    ("clot_ncct_hu", "density_hu", True),
    ("clot_perviousness_hu", "pervious_hu", True),
    ("distal_filling_ratio", "collateral_grade", False),
)


def measured_values(dataset_dir: str) -> tuple:
    """(the patients' measurements, their truth), in datalist order."""
    parser = ConfigParser()
    parser.read_config([os.path.join(ROOT, c) for c in CONFIGS])
    network = parser.get_parsed_content("network_def")
    data = cached_inputs(dataset_dir, CONFIGS, {}, "clot_readings_cache_aligned", "ablation_models")
    measured: List[Dict[str, float]] = []
    for part in data["X"].split(16):
        measured += network.clinical_measurements(part)
    with open(os.path.join(dataset_dir, "manifest.json")) as f:
        truth = json.load(f)["truth"]
    rows = []
    for item in data["items"]:
        t = truth[item["patient_id"]]
        arterial = t.get("scan", {}).get("arterial_hu", 350.0)
        rows.append(
            {
                "length_mm": t["clot_length_mm"],
                "density_hu": t["clot_density_hu"],
                "pervious_hu": 60.0 * arterial / 350.0 * t["clot_perviousness"],
                "collateral_grade": t["collaterals"],
            }
        )
    return measured, rows


def main(dataset_dir: str) -> None:
    """Print the agreement table of the cohort in ``dataset_dir``."""
    measured, truth = measured_values(dataset_dir)
    print(f"{len(measured)} patients, the settings of {CONFIGS[-1]}")
    print("| measurement | truth | clot found | Spearman r | Pearson r | bias (measured - true) | 95% limits |")
    print("|---|---|---|---|---|---|---|")
    for name, hidden, same_unit in PAIRS:
        pairs = [(m[name], t[hidden]) for m, t in zip(measured, truth) if not np.isnan(m[name])]
        if name == "clot_length_mm":
            pairs = [(a, b) for a, b in pairs if a > 0]  # no clot found: length 0
        a, b = np.array(pairs, float).T
        line = f"| {name} | {hidden} | {len(a)} | {spearmanr(a, b)[0]:.2f} | {pearsonr(a, b)[0]:.2f} |"
        if same_unit:
            diff = a - b
            bias, spread = diff.mean(), 1.96 * diff.std(ddof=1)
            line += f" {bias:.1f} | {bias - spread:.1f} to {bias + spread:.1f} |"
        else:
            line += " | |"
        print(line, flush=True)


if __name__ == "__main__":
    fire.Fire(main)
