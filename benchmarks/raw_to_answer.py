"""Raw NCCT + CTA NIfTI to predictions.csv with five paper-size fold models, process start included.

python benchmarks/raw_to_answer.py [--out /tmp/raw_to_answer] [--runs 2] [--entries "bundle|quick"]
    [--options "default|--precision bf16|--channels_last false --fold_batch_norm false"]

Writes the real head CT of the ``invesalius-examples`` package (``tests/real_ct.py``; without it the benchmark says
so and exits 0) and a CTA stand-in (the same head moved and re-contrasted), and five fold models of
``configs/inference.json``'s ``network_def`` (MNT-DL, 2 x 224 x 224 x 25, 23.5 M parameters, seeded weights; no
``grid.json``, so the raw scans go to the 1 mm MNI grid; an ``input_profile.json`` as training writes, so that the
case's image statistics are computed as with trained models). Then, for each run, entry (``python -m monai.bundle
run`` or ``python -m scripts.inference.quick``, alternating) and option set (``|``-separated; ``default`` for none),
times ``configs/inference.json`` + ``configs/inference_raw.json`` from process start to exit, and prints the wall
times, the probability each wrote and the medians.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import fire
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.real_ct import cranium_nifti, cta_standin  # noqa: E402

CONFIGS = "['configs/inference.json','configs/inference_raw.json']"


def fold_models(out: str, folds: int = 5) -> str:
    """``out/models``: ``fold{k}/model.pt`` of the configured network with seeded weights and a ``cutoffs.json``."""
    from monai.bundle import ConfigParser

    models = os.path.join(out, "models")
    parser = ConfigParser()
    parser.read_config(os.path.join(ROOT, "configs", "inference.json"))
    for k in range(folds):
        os.makedirs(os.path.join(models, f"fold{k}"), exist_ok=True)
        torch.manual_seed(k)
        net = parser.get_parsed_content("network_def", lazy=False)
        torch.save({"model": net.state_dict()}, os.path.join(models, f"fold{k}", "model.pt"))
    with open(os.path.join(models, "cutoffs.json"), "w") as f:
        json.dump({**{str(k): 0.5 for k in range(folds)}, "ensemble": 0.5}, f)
    # a training cohort's input profile, as trained models have one: each case's statistics are computed and compared
    ranges = {"tissue_hu": [15.0, 50.0], "tissue_ml": [700.0, 2200.0], "contrast": [0.0, 0.05]}
    profile = {"patients": 100, "ranges": {f"{s}_{k}": v for s in ("ncct", "cta") for k, v in ranges.items()}}
    with open(os.path.join(models, "input_profile.json"), "w") as f:
        json.dump(profile, f)
    return models


ENTRIES = {
    "bundle": ["-m", "monai.bundle", "run", "--config_file", CONFIGS],
    "quick": ["-m", "scripts.inference.quick", "--config_file", CONFIGS],
}


def main(
    out: str = "/tmp/raw_to_answer", runs: int = 2, options: str = "default", entries: str = "bundle|quick"
) -> None:
    """Print one line per run, entry (``bundle``: ``python -m monai.bundle run``; ``quick``: ``python -m
    scripts.inference.quick``, preprocessing started before MONAI's import) and option set, alternating: wall seconds
    (process start included) and the probability."""
    os.makedirs(out, exist_ok=True)
    ncct = cranium_nifti(os.path.join(out, "ncct.nii.gz"))
    if ncct is None:
        print("skipped: the real head CT (apt package invesalius-examples) is not installed")
        return
    cta = cta_standin(ncct, os.path.join(out, "cta.nii.gz"))
    models = fold_models(out)
    sets = [o.strip() for o in (options if isinstance(options, str) else "|".join(options)).split("|")]
    names = [e.strip() for e in (entries if isinstance(entries, str) else "|".join(entries)).split("|")]
    walls: dict = {}
    for run in range(runs):
        for name in names:
            for index, option in enumerate(sets):
                extra = [] if option == "default" else shlex.split(option)
                result = os.path.join(out, f"{name}_options{index}_run{run + 1}")
                shutil.rmtree(result, ignore_errors=True)  # a kept case folder would skip the preprocessing
                cmd = [sys.executable, *ENTRIES[name], "--ckpt_dir", models, "--ncct", ncct, "--cta", cta]
                cmd += ["--patient_id", "p1", "--output_dir", result, *extra]
                start = time.perf_counter()
                done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                wall = time.perf_counter() - start
                if done.returncode != 0:
                    print(f"{name} {option}: failed: {done.stderr.strip().splitlines()[-1:]}")
                    continue
                row = next(csv.DictReader(open(os.path.join(result, "predictions.csv"))))
                walls.setdefault((name, option), []).append(wall)
                print(
                    f"{name} {option}: run {run + 1}: {wall:.1f} s, probability {float(row['probability']):.6f}",
                    flush=True,
                )
    for (name, option), values in walls.items():
        print(f"{name} {option}: median {sorted(values)[len(values) // 2]:.1f} s over {len(values)} runs")


if __name__ == "__main__":
    fire.Fire(main)
