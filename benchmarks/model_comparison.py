"""The papers' comparison on the demo cohort: every model on the same folds, one table.

python benchmarks/model_comparison.py [--dataset_dir demo] [--out runs/comparison] [--models mnt_dl,scanet,...]
python benchmarks/model_comparison.py --models mnt_dl,late,daft --label rlvo --out runs/rlvo   (clinical fusion)

From the bundle root, after the demo cohort and its datalist exist (``python -m scripts.demo`` makes them). Each
model is the ``monai.bundle`` command a user would type (printed before it runs), with ``configs/demo.json``
last so every network gets the same demo budget (48 x 48 input, widths 8-64, at most 40 epochs, batch 8,
lr 1e-3) and the same label (``--label fpe``); models with a ``metrics.json`` already are kept. Then
``python -m scripts.evaluation.compare`` writes the table to ``OUT/comparison.md`` and ``.csv``.
"""

from __future__ import annotations

import os
import sys
import time

import fire

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.demo.job import run_bundle  # noqa: E402
from scripts.evaluation.compare import compare  # noqa: E402

# model name -> (overlays between train.json and demo.json, table name, further overrides);
# configs/experiments/vessel.json goes after demo.json (its input size replaces the demo's whole-head 48 x 48)
VESSEL = ["configs/demo.json", "configs/experiments/vessel.json"]
MODELS = {
    "mnt_dl": ([], "MNT-DL (NCCT + CTA)", []),
    "scanet": (["configs/experiments/scanet.json"], "SCANet (NCCT + CTA)", []),
    "resnet34": (["configs/experiments/resnet34.json"], "ResNet34, 3-D (NCCT + CTA)", []),
    "ncct": ([], "MNT-DL, NCCT only", ["--image_keys", "['ncct']", "--channel_keys", "['ncct','ncct']"]),
    "cta": ([], "MNT-DL, CTA only", ["--image_keys", "['cta']", "--channel_keys", "['cta','cta']"]),
    "radiomics": (["configs/experiments/radiomics.json"], "Radiomics (LR / RF)", []),
    "clinical": (
        ["configs/experiments/clinical_demo.json", "configs/experiments/clinical_baseline.json"],
        "Clinical only (LR)",
        [],
    ),
    "late": (
        ["configs/experiments/multimodal.json", "configs/experiments/clinical_demo.json"],
        "MNT-DL + clinical, late fusion",
        ["--fusion", "late"],
    ),
    "daft": (
        ["configs/experiments/multimodal.json", "configs/experiments/clinical_demo.json"],
        "MNT-DL + clinical, DAFT",
        [],
    ),
    "slab": ([*VESSEL, "configs/experiments/slab_net.json"], "SlabNet, vessel box, mirrored (NCCT + CTA)", []),
    "vessel": (VESSEL, "MNT-DL, vessel box, mirrored (NCCT + CTA)", []),
    "vessel_nomirror": (VESSEL, "MNT-DL, vessel box, not mirrored", ["--mirror", "false"]),
    "vessel_resnet": ([*VESSEL, "configs/experiments/vessel_resnet.json"], "ResNet10 3-D, vessel box, mirrored", []),
    "vessel_paper_aug": (
        [*VESSEL, "configs/experiments/augment_paper.json"],
        "MNT-DL, vessel box, published augmentation",
        [],
    ),
    "vessel_mask": ([*VESSEL, "configs/experiments/vessel_mask.json"], "VesselMaskNet + clinical", []),
}
# overlays for training only (after the model's own; the evaluation stack leaves them out)
TRAIN_ONLY = {"vessel_mask": ["configs/experiments/select_log_loss.json"]}


def main(
    dataset_dir: str = "demo",
    out: str = "runs/comparison",
    models: str = ",".join(MODELS),
    label: str = "fpe",
) -> str:
    """Train and evaluate each model, then write the comparison table; returns its markdown."""
    start = time.time()
    datalist = os.path.join(dataset_dir, "datalist.json")
    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models)]
    runs = {}
    for name in names:
        overlays, title, extra = MODELS[name]
        eval_dir = os.path.join(out, name, "eval")
        runs[title] = eval_dir
        if os.path.isfile(os.path.join(eval_dir, "metrics.json")):
            continue
        stack = ["configs/train.json", *overlays] + ([] if "configs/demo.json" in overlays else ["configs/demo.json"])
        files = "[" + ",".join(f"'{f}'" for f in stack) + "]"
        common = [
            "--dataset_dir",
            dataset_dir,
            "--datalist_file",
            datalist,
            "--label",
            label,
            "--ckpt_dir",
            os.path.join(out, name, "models"),
            "--output_dir",
            eval_dir,
            *extra,
        ]
        t0 = time.time()
        if name in ("radiomics", "clinical"):  # no network: their config's run id fits and evaluates
            run_bundle("run", "--config_file", files, *common)
        else:
            train = files[:-1] + "".join(f",'{f}'" for f in TRAIN_ONLY.get(name, [])) + "]"
            run_bundle("run", "training", "--config_file", train, *common)
            evaluate = files[:-1] + ",'configs/evaluate.json']"
            run_bundle("run", "--config_file", evaluate, *common)
        print(f"{name}: {(time.time() - t0) / 60:.1f} min", flush=True)
    text = compare(runs, out=out)
    print(f"wall time {(time.time() - start) / 60:.1f} min")
    return text


if __name__ == "__main__":
    fire.Fire(main)
