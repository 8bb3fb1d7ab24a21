"""Split a cohort once into a prospective test set and stratified, patient-grouped folds.

``python -m scripts.data.split --cohort CSV --out datalist.json [--label fpe] [--folds 5] [--seed 0]
[--test_from 2020-01-01 | --test_fraction 0.2] [--inner_val 0.15]`` writes a MONAI-style datalist: ``training`` (each
item carries its outer ``fold``), ``test`` (procedure_date >= test_from, the prospective protocol of the FPE papers;
or with ``--test_fraction`` a random hold-out of that share of the patients, stratified by the label, as the rLVO
paper used), ``inner_validation`` (per fold,
the patient ids held out of that fold's training portion for early stopping, checkpoint choice and
the cut-off) and ``settings``. Rerunning with the same settings keeps the recorded file; different
settings are refused unless ``--overwrite``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any, Dict, List

import fire
import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from scripts import BundleInputError
from scripts.data.cohort import LABELS, read_cohort
from scripts.data.io import atomic_write_json
from scripts.data.screen import EXCLUSIONS_FILE, write_exclusions


def make_datalist(
    rows: List[Dict[str, Any]],
    label: str = "fpe",
    folds: int = 5,
    seed: int = 0,
    test_from: str = "2020-01-01",
    inner_val: float = 0.15,
    test_fraction: float | None = None,
) -> Dict[str, Any]:
    """Assign outer folds, the test set (by date, or a stratified random ``test_fraction``) and per-fold
    inner-validation ids (deterministic in ``seed``)."""
    if label not in LABELS:
        raise BundleInputError(f"label '{label}' is unknown (allowed: {', '.join(LABELS)})")
    if test_fraction is None:
        cut = dt.date.fromisoformat(str(test_from)).isoformat()
        test = [dict(r) for r in rows if r["procedure_date"] >= cut]
        dev = [dict(r) for r in rows if r["procedure_date"] < cut]
        where = f"before {cut}"
    else:
        dev, test = _random_hold_out(rows, label, float(test_fraction), seed)
        where = "outside the test set"
    y = np.array([r[label] for r in dev])
    if len(dev) and len(set(y.tolist())) == 1:
        raise BundleInputError(
            f"all {len(dev)} patients {where} have {label}={int(y[0])}: one outcome class, nothing to learn"
        )
    if len(dev) < 2 * folds or min(np.bincount(y, minlength=2)) < folds:
        raise BundleInputError(
            f"only {len(dev)} patients {where} ({int(y.sum())} with {label}=1): too few for {folds} stratified folds"
        )
    # the table holds one row per patient (duplicates are refused), so splitting rows groups by patient
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(dev)), y)):
        for i in held:
            dev[i]["fold"] = k
    inner: Dict[str, List[str]] = {}
    for k in range(folds):
        train_idx = [i for i, r in enumerate(dev) if r["fold"] != k]
        _, val_idx = train_test_split(train_idx, test_size=inner_val, stratify=y[train_idx], random_state=seed + k)
        inner[str(k)] = sorted(dev[i]["patient_id"] for i in val_idx)
    for item in dev + test:
        item["label"] = item[label]
    settings: Dict[str, Any] = {"label": label, "folds": folds, "seed": seed, "test_from": None, "inner_val": inner_val}
    if test_fraction is None:
        settings["test_from"] = cut
    else:
        settings["test_fraction"] = float(test_fraction)
    return {"settings": settings, "training": dev, "test": test, "inner_validation": inner}


def _random_hold_out(
    rows: List[Dict[str, Any]], label: str, fraction: float, seed: int
) -> tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(development, test) rows: a random test share ``fraction`` of the patients, stratified by ``label``."""
    if not 0 < fraction < 1:
        raise BundleInputError(f"test_fraction must be between 0 and 1 (exclusive), got {fraction}")
    y = [r[label] for r in rows]
    n_test = int(round(fraction * len(rows)))
    if n_test < 2 or len(rows) - n_test < 2 or min(y.count(0), y.count(1)) < 2:
        raise BundleInputError(
            f"test_fraction {fraction}: {len(rows)} patients ({sum(y)} with {label}=1) are too few for a stratified "
            "hold-out"
        )
    dev_idx, test_idx = train_test_split(list(range(len(rows))), test_size=n_test, stratify=y, random_state=seed)
    return [dict(rows[i]) for i in sorted(dev_idx)], [dict(rows[i]) for i in sorted(test_idx)]


def fold_data(datalist: Dict[str, Any], fold: int, part: str) -> List[Dict[str, Any]]:
    """Items of one fold's ``train`` (training portion minus inner validation), ``inner_val`` or ``outer``."""
    n = datalist["settings"]["folds"]
    if not 0 <= int(fold) < n:
        raise BundleInputError(f"fold {fold} does not exist (the datalist has folds 0..{n - 1})")
    inner = set(datalist["inner_validation"][str(int(fold))])
    items = datalist["training"]
    if part == "outer":
        return [d for d in items if d["fold"] == int(fold)]
    portion = [d for d in items if d["fold"] != int(fold)]
    if part == "inner_val":
        return [d for d in portion if d["patient_id"] in inner]
    if part == "train":
        return [d for d in portion if d["patient_id"] not in inner]
    raise ValueError(f"unknown part '{part}'")


def with_label(datalist: Dict[str, Any], label: str | None = None) -> Dict[str, Any]:
    """The datalist with every item's ``label`` taken from ``label`` (fpe, mtici_2c or rlvo); ``None`` keeps
    the label chosen at split time. The folds stay the recorded ones (patient-grouped; stratified on the
    split's label)."""
    if label is None or label == datalist["settings"]["label"]:
        return datalist
    if label not in LABELS:
        raise BundleInputError(f"label '{label}' is unknown (allowed: {', '.join(LABELS)})")
    out = {**datalist, "settings": {**datalist["settings"], "label": label}}
    for part in ("training", "test"):
        out[part] = [{**d, "label": d[label]} for d in datalist[part]]
    return out


def load_datalist(path: str) -> Dict[str, Any]:
    """Read a datalist written by :func:`write_datalist` (clear error when absent or malformed)."""
    if not os.path.isfile(path):
        raise BundleInputError(
            f"{path}: datalist not found (run `python -m scripts.data.split --cohort CSV --out {path}`)"
        )
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise BundleInputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    for key in ("settings", "training", "test", "inner_validation"):
        if key not in data:
            raise BundleInputError(f"{path}: datalist has no '{key}' entry")
    return data


def write_datalist(
    cohort: str,
    out: str,
    label: str = "fpe",
    folds: int = 5,
    seed: int = 0,
    test_from: str = "2020-01-01",
    inner_val: float = 0.15,
    test_fraction: float | None = None,
    overwrite: bool = False,
    strict: bool = False,
) -> str:
    """Split ``cohort`` and record the datalist at ``out`` once; return its path. A row that fails the cohort
    contract is left out and listed in the datalist's ``excluded`` and in ``exclusions.csv`` beside it
    (``strict``: the first one stops the split instead)."""
    excluded: List[Dict[str, str]] | None = None if strict else []
    try:
        rows = read_cohort(cohort, excluded=excluded)
        data = make_datalist(rows, label, folds, seed, str(test_from), inner_val, test_fraction)
    except BundleInputError as error:
        if str(error).startswith(cohort):
            raise
        raise BundleInputError(f"{cohort}: {error}") from None
    if os.path.exists(out) and not overwrite:
        old = load_datalist(out)
        if old["settings"] != data["settings"] or _ids(old) != _ids(data):
            raise BundleInputError(
                f"{out}: a datalist with other settings or patients is recorded; keep it or pass --overwrite"
            )
        return out
    data["excluded"] = excluded or []
    write_exclusions(os.path.join(os.path.dirname(os.path.abspath(out)), EXCLUSIONS_FILE), data["excluded"])
    atomic_write_json(out, data)
    return out


def _ids(data: Dict[str, Any]) -> Dict[str, List[str | None]]:
    return {
        "training": sorted(d["patient_id"] for d in data["training"]),
        "test": sorted(d["patient_id"] for d in data["test"]),
    }


if __name__ == "__main__":
    fire.Fire(write_datalist)
