"""Ablations of the demo's main-job model in minutes: an in-process replica of the bundle's fold training.

``python benchmarks/replica_ablation.py --dataset_dir DIR --model vessel_mask [--clinical true] [--select loss]
[--learning_rate 0.003] [--max_epochs 60] [--patience 25] [--first_epoch 1] [--seed 0] [--threads 1] [--masks 4]
[--weight_decay 0.05] [--net_args "{'ratio': True}"]``
(``--net_args``: further VesselMaskNet arguments; ``--first_epoch N``: inner validation, checkpoint choice and early
stopping from epoch N on, as ``checkpoint_first_epoch`` in ``configs/experiments/select_log_loss.json``)

The inputs are the bundle's own: every patient of ``DIR/datalist.json`` through the parsed
``validate#preprocessing`` of train.json + demo.json + vessel.json (+ slab_net.json for 40 slices), cached once
in ``DIR/replica_cache.npz``; the folds and inner-validation subsets are the datalist's. What differs from
``monai.bundle run training``: the augmentation is the same distribution (in-plane rotation up to 0.35 rad and
scale 0.9-1.1 with p 0.5, left-right flip with p 0.5) applied to the batch with ``torch.nn.functional.grid_sample``
instead of MONAI's per-sample ``RandAffined`` (about 3x faster on a CPU), and the loop is plain PyTorch. So the
numbers rank configurations; the main job's own numbers come from ``python -m scripts.demo``.
Prints one line per fold and ``RESULT ... mean (SD), pooled`` at the end.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import Any, Dict, Sequence

import fire
import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.utils import set_determinism
from sklearn.metrics import roc_auc_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts.data.clinical import raw_clinical  # noqa: E402
from scripts.data.split import load_datalist  # noqa: E402
from scripts.networks.precision import switch  # noqa: E402
from scripts.networks.slab_net import SlabNet  # noqa: E402
from scripts.networks.vessel_mask import VesselMaskNet  # noqa: E402

CONFIGS = [
    "configs/train.json",
    "configs/demo.json",
    "configs/experiments/vessel.json",
    "configs/experiments/slab_net.json",
]


def cached_inputs(
    dataset_dir: str,
    configs: Sequence[str] = CONFIGS,
    overrides: Dict[str, Any] | None = None,
    name: str = "replica_cache",
    models: str = "replica_models",
) -> dict:
    """The bundle's deterministic preprocessing (``validate#preprocessing`` of ``configs`` with ``overrides``) of every
    datalist patient, cached in ``DIR/<name>.npz``: {X (N, C, ...), y, fold, inner (N, folds), items}."""
    path = os.path.join(dataset_dir, f"{name}.npz")
    datalist = load_datalist(os.path.join(dataset_dir, "datalist.json"))
    items = [dict(it) for it in datalist["training"] + datalist["test"]]
    for it in items:
        for key in ("ncct", "cta"):
            it[key] = it[key] if os.path.isabs(it[key]) else os.path.join(dataset_dir, it[key])
    if not os.path.isfile(path):
        parser = ConfigParser()
        parser.read_config([os.path.join(ROOT, c) for c in configs])
        parser["dataset_dir"] = dataset_dir
        parser["ckpt_dir"] = os.path.join(dataset_dir, models)  # grid.json goes there, not to models/
        parser.update(overrides or {})
        parser.get_parsed_content("imports")
        preprocessing = parser.get_parsed_content("validate#preprocessing")
        images = np.stack([preprocessing(dict(item))["image"].numpy() for item in items]).astype(np.float16)
        np.savez(path, X=images)
    ids = [it["patient_id"] for it in items]
    folds = datalist["settings"]["folds"]
    inner = np.array([[pid in set(datalist["inner_validation"][str(k)]) for k in range(folds)] for pid in ids])
    return {
        "X": torch.from_numpy(np.load(path)["X"].astype(np.float32)),
        "y": np.array([it["label"] for it in items]),
        "fold": np.array([it.get("fold", -1) for it in items]),
        "inner": inner,
        "items": items,
    }


def augment(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W, D): rotation about z (|angle| <= 0.35 rad) and in-plane scale 0.9-1.1, each sample with p 0.5,
    then a left-right (H) flip with p 0.5."""
    b, (h, w) = x.shape[0], x.shape[2:4]
    on = (torch.rand(b) < 0.5).float()
    angle = (torch.rand(b) * 2 - 1) * 0.35 * on
    sx, sy = 1 + (torch.rand(b) * 2 - 1) * 0.1 * on, 1 + (torch.rand(b) * 2 - 1) * 0.1 * on
    theta = torch.zeros(b, 3, 4)
    theta[:, 0, 0] = 1  # grid coordinates are (D, W, H)
    theta[:, 2, 2], theta[:, 2, 1] = torch.cos(angle) / sx, -torch.sin(angle) * (w / h) / sx
    theta[:, 1, 2], theta[:, 1, 1] = torch.sin(angle) * (h / w) / sy, torch.cos(angle) / sy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    flip = torch.rand(b) < 0.5
    out[flip] = out[flip].flip(2)
    return out


CLINICAL = {
    "location": ["ICA", "M1", "M2", "M3", "ACA", "PCA", "BA", "VA"],
    "age": "numeric",
    "ivt": "numeric",
    "nihss": "numeric",
}


def main(
    dataset_dir: str,
    model: str = "vessel_mask",
    clinical: bool = True,
    select: str = "loss",
    learning_rate: float = 0.003,
    max_epochs: int = 60,
    patience: int = 25,
    first_epoch: int = 1,
    seed: int = 0,
    threads: int = 1,
    masks: int = 4,
    weight_decay: float = 0.05,
    net_args: dict | None = None,
    train_on_inner: bool = False,
) -> float:
    """Train and predict every fold; returns the fold-mean outer ROC-AUC. ``train_on_inner``: the inner validation
    joins the training rows (then use ``select="last"``: a choice on rows it trained on would mean nothing)."""
    clinical, train_on_inner = switch(clinical, "--clinical"), switch(train_on_inner, "--train_on_inner")
    if train_on_inner and select != "last":
        raise SystemExit("--train_on_inner true needs --select last")
    torch.set_num_threads(threads)
    data = cached_inputs(dataset_dir)
    X, y, fold, inner, items = data["X"], data["y"], data["fold"], data["inner"], data["items"]
    columns = CLINICAL if clinical and model == "vessel_mask" else {}
    raw = torch.tensor(np.stack([raw_clinical(it, columns) for it in items])) if columns else None
    scores, pooled, start = [], np.zeros(len(y)), time.time()
    for k in range(5):
        train = np.where((fold >= 0) & (fold != k) & (train_on_inner | ~inner[:, k]))[0]
        val, outer = np.where((fold >= 0) & (fold != k) & inner[:, k])[0], np.where(fold == k)[0]
        set_determinism(seed=seed + k)
        net = (
            SlabNet(2, 5, 8, 0.1)
            if model == "slab"
            else VesselMaskNet(masks=masks, clinical_columns=columns or None, **(net_args or {}))
        )
        if columns:
            net.tabular.fit(raw[train].numpy())
        args = (lambda idx: (X[idx], raw[idx])) if columns else (lambda idx: (X[idx],))
        optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
        best, state, waited = -np.inf, None, 0
        for epoch in range(max_epochs):
            net.train()
            order = np.random.permutation(train)
            for i in range(0, len(order) - 7, 8):
                idx = order[i : i + 8]
                image, *extra = args(idx)
                loss = F.binary_cross_entropy_with_logits(
                    net(augment(image), *extra)[:, 0], torch.tensor(y[idx]).float()
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if epoch + 1 < first_epoch:
                continue
            with torch.no_grad():
                logit = net.eval()(*args(val))[:, 0]
            if select == "auc":
                score = roc_auc_score(y[val], logit.numpy())
            elif select == "loss":
                score = -F.binary_cross_entropy_with_logits(logit, torch.tensor(y[val]).float()).item()
            else:  # "last"
                score = epoch
            if score > best:
                best, state, waited = score, copy.deepcopy(net.state_dict()), 0
            elif (waited := waited + 1) >= patience and select != "last":
                break
        net.load_state_dict(state)
        with torch.no_grad():
            pooled[outer] = net.eval()(*args(outer))[:, 0].numpy()
        scores.append(roc_auc_score(y[outer], pooled[outer]))
        print(f"fold {k}: outer ROC-AUC {scores[-1]:.3f} (stopped at epoch {epoch + 1}, {time.time() - start:.0f} s)")
    cv = fold >= 0
    print(
        f"RESULT {model} clinical={bool(columns)} select={select} lr={learning_rate} first_epoch={first_epoch} "
        f"seed={seed} masks={masks} weight_decay={weight_decay} net_args={net_args} "
        f"train_on_inner={train_on_inner}: CV ROC-AUC "
        f"{np.mean(scores):.3f} ({np.std(scores, ddof=1):.3f}), folds {np.round(scores, 3).tolist()}, pooled "
        f"{roc_auc_score(y[cv], pooled[cv]):.3f}",
        flush=True,
    )
    return float(np.mean(scores))


if __name__ == "__main__":
    fire.Fire(main)
