"""The main job on the built-in demo cohort: generate -> split -> train all folds -> evaluate -> infer -> report.

``python -m scripts.demo [--out demo] [--patients 300] [--seed 0] [--spacing 2] [--world varied|uniform] [--native]
[--ckpt_dir DIR] [--model clot_readings|vessel_mask|mnt_dl|mnt_dl_head|scanet|resnet34] [--unlabeled CSV [--ssl
readings|simsiam|both] [--ssl_epochs N]]`` runs each step as the ``monai.bundle`` command a user would type (printed
before it runs): ``configs/train.json`` with the main job's overlay ``configs/clot_readings.json`` (ClotReadingNet: the
literature's clot and collateral readings with the occlusion site, age, IVT and NIHSS, one linear layer trained to
convergence, the last epoch kept); evaluation reports the fold models' own probabilities (``--recalibration none``;
``platt`` for the other models, whose fold models disagree in scale: :data:`RECALIBRATION`). Steps whose outputs exist
are kept (folds already trained are skipped), so an interrupted demo continues where it stopped. Remove ``--out`` and
the fold models to start over: ``models/`` for the built-in demo (``--out demo``), ``OUT/models`` for any other folder
(``--ckpt_dir`` chooses another); the evaluation goes to ``eval/`` or ``OUT/eval`` likewise (``--eval_dir``).

``--model vessel_mask`` runs VesselMaskNet (learned soft masks on the vessel set,
``configs/experiments/vessel_mask.json``); ``--model mnt_dl`` the papers' MNT-DL on the main job's mirrored vessel box
and the clot reader's vessel and clot memberships of it, taught the reader's readings of each scan beside the outcome
(``configs/mnt_dl.json``, one-cycle learning rate, the last epoch kept); ``--model mnt_dl_head`` MNT-DL on the whole
head at demo size (``configs/demo.json``); ``--model scanet`` and ``--model resnet34`` SCANet and a 3-D ResNet34 on
MNT-DL's input with its schedule, taught the outcome only (``configs/experiments/box_input.json``); the other models
choose each fold's checkpoint on inner-validation log loss (``configs/experiments/select_log_loss.json``). ``--unlabeled
CSV`` (``patient_id`` + image columns, paths relative to the CSV; on the cohort's grid) pretrains on that pool first
(``configs/pretrain.json``, encoder in ``CKPT/ssl/pretrain``, the leakage guard dropping test-set and reported-fold
patients) and fine-tunes from it: with ``--model mnt_dl`` MNT-DL learns the reader's readings of the pool's scans
(``configs/reading_pretrain.json``; the pool needs each scan's occlusion ``side``, by which the box is turned; 40
epochs) and the folds fine-tune gently (``configs/experiments/reading_finetune.json``); ``--ssl simsiam`` teaches its
encoder SimSiam on the same box instead (``configs/experiments/simsiam_box.json``, 40 epochs; the folds train on the
scratch schedule from it), ``--ssl both`` SimSiam first and the readings from its encoder (CKPT/ssl_simsiam, then
CKPT/ssl); with ``--model mnt_dl_head`` its encoder learns SimSiam (100 epochs); ``--ssl_epochs`` sets the epochs of
each pretraining. ``--unlabeled`` with the other models is refused.

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
from typing import Dict, Tuple

from scripts import BundleInputError
from scripts.data.split import write_datalist
from scripts.demo.generator import generate

# --model: the configuration overlays on top of configs/train.json (the paper-size defaults); the main job's overlay
# holds all it changes, the others choose their training checkpoint on inner-validation log loss
SELECT_LOG_LOSS = "'configs/experiments/select_log_loss.json',"
MNT_DL_INPUT = "'configs/clot_readings.json','configs/mnt_dl.json'"
BOX_INPUT = "'configs/experiments/box_input.json'"
MODELS = {
    "clot_readings": "'configs/clot_readings.json'",  # the main job's model
    "vessel_mask": "'configs/demo.json','configs/experiments/vessel.json','configs/experiments/vessel_mask.json'",
    # the papers' MNT-DL on the main job's mirrored vessel box, taught the reader's readings as well as the outcome
    "mnt_dl": MNT_DL_INPUT,
    "mnt_dl_head": "'configs/demo.json'",  # MNT-DL on the whole head at demo size: the encoder SimSiam pretrains
    # SCANet and a 3-D ResNet34 on MNT-DL's input (box, mirror, reader's memberships) and schedule, outcome only;
    # SCANet's attention needs a square slice: the box 6 mm narrower and 36 mm longer front to back (64 x 64)
    "scanet": f"{MNT_DL_INPUT},'configs/experiments/scanet.json','configs/experiments/scanet_box.json',{BOX_INPUT}",
    "resnet34": f"{MNT_DL_INPUT},'configs/experiments/resnet34.json',{BOX_INPUT}",
}


# --model: evaluation's recalibration of each fold model on its own inner validation (measured on the seed-0 and seed-2
# cohorts, docs/README.md Performance): VesselMaskNet's fold models disagree in scale, so Platt scaling helps them;
# ClotReadingNet is a logistic regression at its maximum-likelihood fit, and a Platt fit on ~40 patients only adds
# noise (pooled ROC-AUC 0.791 -> 0.752 and 0.764 -> 0.749 with it)
RECALIBRATION = {model: "none" if model == "clot_readings" else "platt" for model in MODELS}
# --model: what --unlabeled pretrains on the pool (after the model's overlays): SimSiam (pretrain.json) or the reader's
# readings (MNT-DL on the vessel box: the targets need no labels), and how the folds then fine-tune from it
PRETRAIN = {"mnt_dl": ",'configs/reading_pretrain.json'"}
FINE_TUNE = {"mnt_dl": ",'configs/experiments/reading_finetune.json'"}
# --ssl with --model mnt_dl: SimSiam on the vessel box (only the encoder learns; the folds then train on the scratch
# schedule from it), the readings, or both: SimSiam first, the reading pretraining starting from its encoder
SIMSIAM_BOX = ",'configs/experiments/simsiam_box.json'"
SSL = ("readings", "simsiam", "both")


def job_configs(model: str, pretrained: bool = False, ssl: str = "readings") -> Dict[str, str]:
    """The ``--config_file`` values of each step for ``model`` (a key of :data:`MODELS`); ``pretrained``: the folds
    fine-tune from a pretraining (:data:`FINE_TUNE`); ``ssl``: what MNT-DL's pretraining learns (one of :data:`SSL`;
    ``simsiam``: the SimSiam step's configuration under ``"simsiam"``)."""
    if model not in MODELS:
        raise BundleInputError(f"--model {model}: use one of {', '.join(MODELS)}")
    if ssl not in SSL or (ssl != "readings" and model != "mnt_dl"):
        raise BundleInputError(f"--ssl {ssl}: use one of {', '.join(SSL)}, with --model mnt_dl only")
    overlays, tuned = MODELS[model], FINE_TUNE.get(model, "") if pretrained else ""
    tuned = SIMSIAM_BOX if pretrained and ssl == "simsiam" else tuned
    return {
        "simsiam": f"['configs/pretrain.json',{overlays}{SIMSIAM_BOX}]",
        "pretrain": f"['configs/pretrain.json',{overlays}{PRETRAIN.get(model, '')}]",
        "train": f"['configs/train.json',{'' if model == 'clot_readings' else SELECT_LOG_LOSS}{overlays}{tuned}]",
        "evaluate": f"['configs/train.json',{overlays},'configs/evaluate.json']",
        "infer": "configs/inference.json",  # the model folder's model_config.json supplies the overlays
    }


def check_unlabeled(unlabeled: str | None, model: str) -> str | None:
    """The absolute path of a user's unlabeled pool (``patient_id`` + image columns; ``side`` too for ``mnt_dl``) for
    the pretraining, or None."""
    if not unlabeled:
        return None
    if not os.path.isfile(unlabeled):
        raise BundleInputError(f"--unlabeled {unlabeled}: table not found")
    if model not in ("mnt_dl", "mnt_dl_head"):
        raise BundleInputError(
            f"--unlabeled: --model {model} has no encoder to pretrain; use --model mnt_dl (the readings) or mnt_dl_head "
            "(SimSiam) to pretrain MNT-DL on the pool (what each gained on the demo: docs/README.md, Performance)"
        )
    return os.path.abspath(unlabeled)


def verdict(fold_mean: float, pooled: float, bayes_folds: float, bayes_pooled: float) -> str:
    """The acceptance bounds of the demo: fold mean within 0.05 and pooled within 0.08 of the Bayes ROC-AUC."""
    words = [
        "within" if ref - value <= bound else "NOT within"
        for value, ref, bound in ((fold_mean, bayes_folds, 0.05), (pooled, bayes_pooled, 0.08))
    ]
    return f"fold mean {words[0]} 0.05, pooled {words[1]} 0.08"


def run_bundle(*args: str) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    print("\n$ python -m monai.bundle " + " ".join(shlex.quote(a) for a in args), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"step failed: python -m monai.bundle {' '.join(args)}")


def output_folders(out: str, ckpt_dir: str | None, eval_dir: str | None) -> Tuple[str, str]:
    """(fold models, evaluation) folders: the bundle's ``models/`` and ``eval/`` for the built-in demo, ``OUT/models``
    and ``OUT/eval`` beside the cohort for any other folder (a second cohort never meets the first one's fold models
    or overwrites its report; training refuses models of another datalist), unless given."""
    builtin = os.path.normpath(out) == "demo"
    return (
        ckpt_dir or ("models" if builtin else os.path.join(out, "models")),
        eval_dir or ("eval" if builtin else os.path.join(out, "eval")),
    )


def main(
    out: str = "demo",
    patients: int = 300,
    seed: int = 0,
    spacing: float = 2.0,
    eval_dir: str | None = None,
    native: bool = False,
    ckpt_dir: str | None = None,
    model: str = "clot_readings",
    unlabeled: str | None = None,
    ssl_epochs: int | None = None,
    world: str = "varied",
    ssl: str = "readings",
) -> None:
    """Run the whole demo from the bundle root and print the metrics table against the Bayes AUC."""
    start = time.time()
    pool = check_unlabeled(unlabeled, model)
    configs = job_configs(model, bool(pool), ssl)
    csv_path = _cohort(out, patients, seed, spacing, native, world)
    datalist = write_datalist(csv_path, os.path.join(out, "datalist.json"), seed=seed)
    ckpt_dir, eval_dir = output_folders(out, ckpt_dir, eval_dir)
    common = ["--dataset_dir", out, "--datalist_file", datalist, "--ckpt_dir", ckpt_dir]
    encoder = []
    if pool:  # pretraining on the user's pool first (its test-set and reported-fold patients dropped by the guard)
        epochs = [] if ssl_epochs is None else ["--ssl_epochs", str(int(ssl_epochs))]
        steps = {"readings": ["pretrain"], "simsiam": ["simsiam"], "both": ["simsiam", "pretrain"]}[ssl]
        for step in steps:
            ssl_dir = os.path.join(ckpt_dir, "ssl" if step == "pretrain" else "ssl_simsiam")
            pretrain = ["--config_file", configs[step], *common[:4], "--ckpt_dir", ssl_dir, "--unlabeled_file", pool]
            run_bundle("run", "pretraining", *pretrain, *epochs, *encoder)
            encoder = ["--pretrained_encoder", os.path.join(ssl_dir, "pretrain", "encoder.pt")]
    run_bundle("run", "training", "--config_file", configs["train"], *common, *encoder)
    evaluate = ["--config_file", configs["evaluate"], *common, "--output_dir", eval_dir]
    run_bundle("run", *evaluate, "--recalibration", RECALIBRATION[model])
    test_set = os.path.join(eval_dir, "test_inference")
    run_bundle("run", "--config_file", configs["infer"], *common[2:], "--output_dir", test_set)
    _print_result(eval_dir, time.time() - start)


def _cohort(out: str, patients: int, seed: int, spacing: float, native: bool, world: str) -> str:
    """``out``/cohort.csv, generated first when absent (``native``: in scanner space, then through the bundle's
    preprocessing like a user's own scans)."""
    csv_path = os.path.join(out, "cohort.csv")
    if not os.path.isfile(csv_path) and native:
        raw = os.path.join(out, "raw")
        if not os.path.isfile(os.path.join(raw, "cohort.csv")):
            print(f"generating {patients} demo patients in scanner space in {raw}/ ...", flush=True)
            generate(raw, patients=patients, seed=seed, modalities="ct", spacing=spacing, native=True, world=world)
        preprocess = ["--cohort", os.path.join(raw, "cohort.csv"), "--output_dir", out, "--spacing", str(spacing)]
        run_bundle("run", "preprocess", "--config_file", "configs/preprocess.json", *preprocess)
        shutil.copy(os.path.join(raw, "manifest.json"), os.path.join(out, "manifest.json"))  # truth for the report
    elif not os.path.isfile(csv_path):
        print(f"generating {patients} demo patients in {out}/ ...", flush=True)
        generate(out, patients=patients, seed=seed, modalities="ct", spacing=spacing, world=world)
    return csv_path


def _print_result(eval_dir: str, seconds: float) -> None:
    """The evaluation's metrics table and one line against the Bayes ROC-AUC (when the cohort has its truth)."""
    with open(os.path.join(eval_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(eval_dir, "metrics.md")) as f:
        print("\n" + f.read())
    cv, bayes = metrics["cv"]["summary"]["roc_auc"]["mean"], metrics.get("bayes_auc")
    pooled = metrics["cv"]["pooled_roc_auc"]
    low, high = metrics["cv"]["pooled"]["ci95"]["roc_auc"]
    same = metrics.get("bayes_same_patients", {})
    result = f"CV ROC-AUC {cv:.3f} (pooled {pooled:.3f}, 95% CI {low:.3f}-{high:.3f})"
    minutes = f"({seconds / 60:.1f} min)"
    if bayes is None:  # a user's own cohort: no true probabilities to compare with
        print(f"{result} {minutes}")
    else:
        print(f"{result} vs Bayes ROC-AUC {bayes:.3f}: {verdict(cv, pooled, bayes, bayes)} {minutes}")
    if metrics.get("excluded"):
        print(f"{len(metrics['excluded'])} patient(s) excluded by the input checks: {eval_dir}/exclusions.csv")
    if same:
        print(
            f"Bayes ROC-AUC on the same patients and folds: fold mean {same['cv_fold_mean']:.3f}, pooled "
            f"{same['cv_pooled']:.3f}: {verdict(cv, pooled, same['cv_fold_mean'], same['cv_pooled'])}"
        )
    test_set = os.path.join(eval_dir, "test_inference", "predictions.csv")
    print(f"predictions: {eval_dir}/predictions.csv, test-set inference: {test_set}")
