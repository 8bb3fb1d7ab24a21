"""The main job on the built-in demo cohort: generate -> split -> train all folds -> evaluate -> infer -> report.

``python -m scripts.demo [--out demo] [--patients 300] [--seed 0] [--spacing 2] [--native] [--ckpt_dir DIR]`` runs
each step as the ``monai.bundle`` command a user would type (printed before it runs), with ``configs/demo.json``
(the CPU budget), ``configs/vessel.json`` (the vessel-box input, mirrored) and ``configs/vessel_mask.json`` (VesselMaskNet with the
occlusion site, age, IVT and NIHSS) on top of the paper-size configs; training chooses each fold's checkpoint on
inner-validation log loss (``configs/select_log_loss.json``); evaluation Platt-scales each fold model on its inner
validation (``--recalibration platt``).
Steps whose outputs exist are kept (folds already trained are skipped), so an interrupted demo continues where it
stopped. Remove ``--out`` and the fold models to start over: ``models/`` for the built-in demo (``--out demo``),
``OUT/models`` for any other folder (``--ckpt_dir`` chooses another).

``--native`` starts from scanner-space scans (``OUT/raw``, random head pose, thick slices, headrest) and
preprocesses them into MNI space first (``configs/preprocess.json``, output grid = ``--spacing``): raw ->
preprocess -> split -> train -> evaluate -> infer.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Optional

from scripts.data.split import write_datalist
from scripts.demo.generator import generate

OVERLAYS = "'configs/demo.json','configs/vessel.json','configs/vessel_mask.json'"
TRAIN = f"['configs/train.json',{OVERLAYS},'configs/select_log_loss.json']"
EVALUATE = f"['configs/train.json',{OVERLAYS},'configs/evaluate.json']"
INFER = f"['configs/inference.json',{OVERLAYS}]"


def verdict(fold_mean: float, pooled: float, bayes_folds: float, bayes_pooled: float) -> str:
    """The acceptance bounds of the demo: fold mean within 0.05 and pooled within 0.08 of the Bayes ROC-AUC."""
    words = ["within" if ref - value <= bound else "NOT within"
             for value, ref, bound in ((fold_mean, bayes_folds, 0.05), (pooled, bayes_pooled, 0.08))]  # fmt: skip
    return f"fold mean {words[0]} 0.05, pooled {words[1]} 0.08"


def run_bundle(*args: str) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    print("\n$ python -m monai.bundle " + " ".join(shlex.quote(a) for a in args), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"step failed: python -m monai.bundle {' '.join(args)}")


def main(
    out: str = "demo",
    patients: int = 300,
    seed: int = 0,
    spacing: float = 2.0,
    eval_dir: str = "eval",
    native: bool = False,
    ckpt_dir: Optional[str] = None,
) -> None:
    """Run the whole demo from the bundle root and print the metrics table against the Bayes AUC."""
    start = time.time()
    csv_path = os.path.join(out, "cohort.csv")
    if not os.path.isfile(csv_path) and native:
        raw = os.path.join(out, "raw")
        if not os.path.isfile(os.path.join(raw, "cohort.csv")):
            print(f"generating {patients} demo patients in scanner space in {raw}/ ...", flush=True)
            generate(raw, patients=patients, seed=seed, modalities="ct", spacing=spacing, native=True)
        preprocess = ["--cohort", os.path.join(raw, "cohort.csv"), "--output_dir", out, "--spacing", str(spacing)]
        run_bundle("run", "preprocess", "--config_file", "configs/preprocess.json", *preprocess)
        shutil.copy(os.path.join(raw, "manifest.json"), os.path.join(out, "manifest.json"))  # truth for the report
    elif not os.path.isfile(csv_path):
        print(f"generating {patients} demo patients in {out}/ ...", flush=True)
        generate(out, patients=patients, seed=seed, modalities="ct", spacing=spacing)
    datalist = write_datalist(csv_path, os.path.join(out, "datalist.json"), seed=seed)
    # the bundle's models/ for the built-in demo; beside the cohort for any other folder, so that a second cohort
    # never meets the first one's fold models (training refuses models of another datalist)
    ckpt_dir = ckpt_dir or ("models" if os.path.normpath(out) == "demo" else os.path.join(out, "models"))
    common = ["--dataset_dir", out, "--datalist_file", datalist, "--ckpt_dir", ckpt_dir]
    run_bundle("run", "training", "--config_file", TRAIN, *common)
    # each fold model Platt-scaled on its own inner validation: the fold models disagree in scale (measured)
    run_bundle("run", "--config_file", EVALUATE, *common, "--output_dir", eval_dir, "--recalibration", "platt")
    run_bundle(
        "run",
        "--config_file",
        INFER,
        "--datalist_file",
        datalist,
        "--ckpt_dir",
        ckpt_dir,
        "--output_dir",
        os.path.join(eval_dir, "test_inference"),
    )
    with open(os.path.join(eval_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(eval_dir, "metrics.md")) as f:
        print("\n" + f.read())
    cv, bayes = metrics["cv"]["summary"]["roc_auc"]["mean"], metrics["bayes_auc"]
    pooled = metrics["cv"]["pooled_roc_auc"]
    low, high = metrics["cv"]["pooled"]["ci95"]["roc_auc"]
    same = metrics.get("bayes_same_patients", {})
    print(
        f"CV ROC-AUC {cv:.3f} (pooled {pooled:.3f}, 95% CI {low:.3f}-{high:.3f}) vs Bayes ROC-AUC {bayes:.3f}: "
        f"{verdict(cv, pooled, bayes, bayes)} ({(time.time() - start) / 60:.1f} min)"
    )
    if same:
        print(
            f"Bayes ROC-AUC on the same patients and folds: fold mean {same['cv_fold_mean']:.3f}, pooled "
            f"{same['cv_pooled']:.3f}: {verdict(cv, pooled, same['cv_fold_mean'], same['cv_pooled'])}"
        )
    print(f"predictions: {eval_dir}/predictions.csv, test-set inference: {eval_dir}/test_inference/predictions.csv")
