"""Fold-ensemble inference: one patient (paths per sequence), a cohort CSV or a datalist -> predictions.csv.

Columns: ``patient_id``, ``probability`` (mean over the fold models), ``probability_sd``, ``prediction``
(probability >= the ensemble cut-off stored by evaluation in ``cutoffs.json``) and ``warning`` (empty, the image
statistics outside the training cohort's range: :mod:`scripts.data.profile`, or ``excluded: <reason>`` for a patient
of a cohort whose scans the input checks refused, with no probability).
"""

from __future__ import annotations

import copy
import csv
import io
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from monai.data import DataLoader, Dataset

from scripts import BundleInputError
from scripts.data.cohort import SEQUENCES, read_cohort, require_sequences
from scripts.data.io import atomic_write_text
from scripts.data.profile import case_profile, ood_warning, read_profile
from scripts.data.screen import EXCLUSIONS_FILE, screen_images, write_exclusions
from scripts.data.split import load_datalist
from scripts.data.volume_checks import input_limits as input_limits_of
from scripts.data.volume_checks import read_grid
from scripts.inference.measurements import KEY_IMAGES, measurement_fields, read_reference, write_key_image
from scripts.training.kfold import fold_checkpoints, load_weights, read_json


def input_items(
    cohort: str | None,
    datalist_file: str | None,
    images: Dict[str, str],
    patient_id: str,
    image_keys: Sequence[str],
    case_info: Dict[str, Any] | None = None,
) -> List[Dict[str, Any]]:
    """The patients to predict, from exactly one of a cohort CSV, a datalist or one path per sequence.

    Args:
        cohort: a cohort CSV (every patient with all its columns: the region mode needs ``location``/``side``, a
            multimodal model the clinical columns).
        datalist_file: a datalist (its prospective test set).
        images: {sequence: path} of one patient.
        patient_id: that patient's id.
        image_keys: the sequences every item must have.
        case_info: the one patient's other values from the command line (side, site, clinical values).

    Returns:
        items ``{patient_id, <sequence>: path, ...}``.
    """
    given = [name for name, v in (("cohort", cohort), ("datalist_file", datalist_file), ("images", images)) if v]
    if len(given) != 1:
        raise BundleInputError(
            "give exactly one input: --cohort CSV, --datalist_file JSON, or one path per sequence "
            f"(--{' --'.join(image_keys)}); got {', '.join(given) or 'none'}"
        )
    if cohort:
        rows = read_cohort(cohort)
        source = cohort
    elif datalist_file:
        rows = load_datalist(datalist_file)["test"]
        source = datalist_file
    else:
        for key, path in images.items():
            if not os.path.exists(path):
                raise BundleInputError(f"--{key} {path}: file not found")
        rows = [{"patient_id": patient_id, **images, **(case_info or {})}]
        source = "command line"
    require_sequences(rows, image_keys, source)
    return [dict(r) for r in rows]


def _probabilities(
    network: torch.nn.Module,
    batch: Dict[str, Any],
    device: Any,
    inferer: Callable | None,
    postprocessing: Callable | None,
) -> np.ndarray:
    image = batch["image"].to(device)
    extra = [batch["clinical"].to(device)] if "clinical" in batch else []
    logits = inferer(image, network, *extra) if inferer is not None else network(image, *extra)
    if postprocessing is not None:
        probs = torch.stack([postprocessing({"pred": lg})["pred"] for lg in logits])
    else:
        probs = torch.sigmoid(logits)
    return probs.reshape(-1).float().cpu().numpy()


@torch.no_grad()
def predict(
    network: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    device: Any,
    inferer: Callable | None = None,
    postprocessing: Callable | None = None,
    batch_size: int = 4,
) -> np.ndarray:
    """Probabilities (N,) of a dataset of dicts with key ``image`` (and ``clinical`` for a multimodal network), in
    dataset order."""
    return predict_many([network], dataset, device, inferer, postprocessing, batch_size)[0]


@torch.no_grad()
def predict_many(
    networks: Sequence[torch.nn.Module],
    dataset: torch.utils.data.Dataset,
    device: Any,
    inferer: Callable | None = None,
    postprocessing: Callable | None = None,
    batch_size: int = 4,
    readouts: Dict[str, list] | None = None,
) -> List[np.ndarray]:
    """Probabilities (N,) of every network, the dataset's transforms run once per batch for all of them.
    ``readouts``: {method of the first network: a list} receiving each patient's result of that method when the
    network has it (:class:`scripts.networks.clot_readings.ClotReadingNet`'s ``clinical_measurements``,
    ``key_views``, ``membership_maps``: fixed readings, the same for every fold model, so read once; tensors as numpy
    arrays)."""
    for network in networks:
        network.eval()
    out: List[List[np.ndarray]] = [[] for _ in networks]
    reader = getattr(networks[0], "_orig_mod", networks[0]) if networks else None
    methods = {name: getattr(reader, name) for name in (readouts or {}) if hasattr(reader, name)}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        for k, network in enumerate(networks):
            out[k].append(_probabilities(network, batch, device, inferer, postprocessing))
        for name, method in methods.items():
            found = method(batch["image"].to(device))
            readouts[name].extend(found.cpu().numpy() if isinstance(found, torch.Tensor) else found)  # type: ignore
    return [np.concatenate(o) if o else np.zeros(0) for o in out]


def logit(p: Any) -> np.ndarray:
    """Log-odds of probabilities clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def apply_platt(probabilities: Any, params: Sequence[float]) -> np.ndarray:
    """Platt scaling sigmoid(a logit(p) + b) for ``params`` = (a, b) (fitted by evaluation on inner validation)."""
    return 1 / (1 + np.exp(-(params[0] * logit(probabilities) + params[1])))


def combine_folds(probs: Sequence[Any], cutoffs: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """Fold-ensemble probability (N,) and SD over folds (N,) of per-fold probabilities (F, N), each fold first
    Platt-scaled when evaluation stored its parameters (``cutoffs["platt"]``, recalibration="platt")."""
    stack = np.asarray(probs, dtype=float).reshape(len(probs), -1)
    platt = cutoffs.get("platt")
    if platt:
        if len(platt) != len(stack):
            raise BundleInputError(f"cutoffs.json: Platt parameters for {len(platt)} folds, {len(stack)} fold models")
        stack = np.stack([apply_platt(p, platt[str(k)]) for k, p in enumerate(stack)])
    sd = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros(stack.shape[1])
    return stack.mean(axis=0), sd


def _predictions_table(
    data: List[Dict[str, Any]],
    answers: Dict[str, Tuple[float, float, Dict[str, Any]]],
    refused: Dict[str, str],
    cutoff: float,
    profile: Dict[str, Any] | None,
) -> str:
    """predictions.csv: per patient its probability, SD, prediction, warning and (the main job's) measurements, or
    no probability and the reason it was excluded."""
    columns = list(next(iter(answers.values()), (0, 0, {}))[2])  # the main job's measurements, when it reports them
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["patient_id", "probability", "probability_sd", "prediction", "warning", *columns])
    for item in data:
        if item["patient_id"] in refused:
            writer.writerow([item["patient_id"], "", "", "", f"excluded: {refused[item['patient_id']]}"])
            continue
        p, s, fields = answers[item["patient_id"]]
        warning = ood_warning(case_profile(item, [k for k in SEQUENCES if k in item]), profile) if profile else ""
        writer.writerow(
            [item["patient_id"], f"{p:.6f}", f"{s:.6f}", int(p >= cutoff), warning, *_cells(fields, columns)]
        )
    return buf.getvalue()


def _refused(
    data: List[Dict[str, Any]],
    image_keys: Sequence[str],
    input_limits: Dict[str, Any] | None,
    ckpt_dir: str,
    output_dir: str,
) -> Dict[str, str]:
    """Every patient's images checked first (:func:`predict_cohort` unless ``strict``): {patient_id: reason} of the
    refused ones, listed in ``output_dir/exclusions.csv``; all refused is one line."""
    refused: Dict[str, str] = {}
    limits = input_limits_of(input_limits)
    grid = read_grid(ckpt_dir)
    for item in data:
        reason = screen_images(item, image_keys, limits, grid, "the fold models'")
        if reason is not None:
            refused[item["patient_id"]] = reason
    if len(refused) == len(data):
        raise BundleInputError(f"every one of the {len(data)} patients was refused (first: {reason})")
    excluded = [{"patient_id": p, "reason": r} for p, r in refused.items()]
    write_exclusions(os.path.join(output_dir, EXCLUSIONS_FILE), excluded)
    return refused


def _dicom_answers(
    kept: List[Dict[str, Any]],
    answers: Dict[str, Tuple[float, float, Dict[str, Any]]],
    readouts: Dict[str, list],
    cutoff: float,
    profile: Dict[str, Any] | None,
    preprocessing: Callable,
    ckpt_dir: str,
    output_dir: str,
    dicom_answer: Dict[str, Any],
) -> None:
    """The DICOM answers of the patients read from DICOM series folders (:func:`predict_cohort`; ``readouts`` in the
    order of ``kept``)."""
    from scripts.data.io import read_json_in
    from scripts.inference.dicom_answer import write_study_answer

    meta = read_json(dicom_answer["metadata_file"])
    label = (read_json_in(ckpt_dir, "trained_on.json") or {}).get("label", "fpe")
    for i, item in enumerate(kept):
        if not _from_dicom(item):
            continue
        p, s, fields = answers[item["patient_id"]]
        warning = ood_warning(case_profile(item, [k for k in SEQUENCES if k in item]), profile) if profile else ""
        result = {"probability": p, "probability_sd": s, "prediction": int(p >= cutoff), "cutoff": cutoff}
        result.update(warning=warning, measurements=fields)
        folder = os.path.join(output_dir, "dicom", str(item["patient_id"]))
        found = {name: values[i] for name, values in readouts.items() if i < len(values)}
        write_study_answer(
            folder, item, result, preprocessing, found, meta, label, bool(dicom_answer.get("keep_identifiers"))
        )


def _from_dicom(item: Dict[str, Any]) -> bool:
    return any(isinstance(item.get(k), str) and os.path.isdir(item[k]) for k in SEQUENCES)


def _cells(fields: Dict[str, Any], columns: Sequence[str]) -> List[str]:
    """The CSV cells of ``columns``: values as written, None (no value) and absent fields empty."""
    return ["" if fields.get(c) is None else str(fields[c]) for c in columns]


def load_folds(network: torch.nn.Module, ckpt_dir: str, device: Any) -> List[torch.nn.Module]:
    """The fold models of ``ckpt_dir`` (copies of ``network`` with each ``fold*/model.pt`` loaded), after checking
    that evaluation stored ``cutoffs.json`` beside them. ``configs/inference.json`` resolves them before the input
    data, so that loading overlaps a single raw case's preprocessing started by :mod:`scripts.inference.quick`."""
    _cutoffs(ckpt_dir)
    return [load_weights(copy.deepcopy(network), path, device) for path in fold_checkpoints(ckpt_dir)]


def _cutoffs(ckpt_dir: str) -> Dict[str, Any]:
    path = os.path.join(ckpt_dir, "cutoffs.json")
    if not os.path.isfile(path):
        raise BundleInputError(f"{path}: not found; run the evaluation (configs/evaluate.json) after training")
    return read_json(path)


def ensemble_predict(
    network: torch.nn.Module,
    preprocessing: Callable,
    data: List[Dict[str, Any]],
    ckpt_dir: str,
    device: Any,
    inferer: Callable | None = None,
    postprocessing: Callable | None = None,
    batch_size: int = 2,
    models: Sequence[torch.nn.Module] | None = None,
    readouts: Dict[str, list] | None = None,
) -> Tuple[np.ndarray, np.ndarray, float]:
    """Fold-ensemble probabilities of ``data``: (mean (N,), SD over folds (N,), the ensemble cut-off). The fold
    models (``models``, or loaded here by :func:`load_folds`) are loaded once and each batch is preprocessed once for
    all of them; ``readouts`` as in :func:`predict_many`."""
    stored = _cutoffs(ckpt_dir)
    models = load_folds(network, ckpt_dir, device) if models is None else models
    dataset = Dataset(data, preprocessing)
    probs = predict_many(models, dataset, device, inferer, postprocessing, batch_size, readouts)
    mean, sd = combine_folds(probs, stored)
    return mean, sd, float(stored["ensemble"])


def predict_cohort(
    network: torch.nn.Module,
    preprocessing: Callable,
    data: List[Dict[str, Any]],
    ckpt_dir: str,
    output_dir: str,
    device: Any,
    inferer: Callable | None = None,
    postprocessing: Callable | None = None,
    batch_size: int = 2,
    explain: bool = False,
    explain_mask_size: Sequence[int] = (12, 12, 5),
    models: Sequence[torch.nn.Module] | None = None,
    image_keys: Sequence[str] | None = None,
    input_limits: Dict[str, Any] | None = None,
    strict: bool = True,
    dicom_answer: Dict[str, Any] | None = None,
) -> str:
    """Predict ``data`` with every fold model and write ``output_dir/predictions.csv``.

    Unless ``strict``, every patient's images are checked first (:func:`scripts.data.screen.screen_images`): a
    refused patient gets a row with no probability and the reason, is listed in ``output_dir/exclusions.csv``, and
    the others are predicted; ``strict`` leaves the checks to the preprocessing, where the first refusal stops the run.

    Args:
        network: the configured network (used when ``models`` is None).
        preprocessing: the inference preprocessing.
        data: the patients' items.
        ckpt_dir: the model folder (fold models, cut-offs, the input profile).
        output_dir: where the outputs go.
        device: the torch device.
        inferer: the inferer (default: call the network).
        postprocessing: the postprocessing (the sigmoid).
        batch_size: patients per forward.
        explain: also per-patient explanations and their summary (``output_dir/explanations``).
        explain_mask_size: the occlusion patch of the explanations, voxels.
        models: the fold models already loaded by :func:`load_folds`.
        image_keys: the sequences to check (NIfTI in MNI space).
        input_limits: the checks' limits.
        strict: stop at the first refused patient.
        dicom_answer: ``{"metadata_file": the bundle metadata, "keep_identifiers": bool}``; given, a patient read
            from DICOM series (``--study``) also gets its answer as DICOM objects of its study in
            ``output_dir/dicom/<patient_id>/`` (:func:`scripts.inference.dicom_answer.write_study_answer`).

    Returns:
        the path of ``predictions.csv``.
    """
    refused = _refused(data, image_keys, input_limits, ckpt_dir, output_dir) if not strict and image_keys else {}
    kept = [item for item in data if item["patient_id"] not in refused]
    readouts: Dict[str, list] = {"clinical_measurements": [], "key_views": []}
    from_dicom = [item for item in kept if _from_dicom(item)] if dicom_answer else []
    if from_dicom:  # where the clot was read, for the SEG on the CTA's slices
        readouts["membership_maps"] = []
    mean, sd, cutoff = ensemble_predict(
        network, preprocessing, kept, ckpt_dir, device, inferer, postprocessing, batch_size, models, readouts
    )
    measured, views = readouts["clinical_measurements"], readouts["key_views"]
    for item, view in zip(kept, views):  # the main job's key image: its iodine projection, the mirror, the clot
        write_key_image(os.path.join(output_dir, KEY_IMAGES, f"{item['patient_id']}.png"), view)
    reference = read_reference(ckpt_dir)
    extra = {item["patient_id"]: measurement_fields(item, m, reference) for item, m in zip(kept, measured)}
    answers = {item["patient_id"]: (p, s, extra.get(item["patient_id"], {})) for item, p, s in zip(kept, mean, sd)}
    profile = read_profile(ckpt_dir)
    table = _predictions_table(data, answers, refused, cutoff, profile)
    if from_dicom:
        _dicom_answers(kept, answers, readouts, cutoff, profile, preprocessing, ckpt_dir, output_dir, dicom_answer)
    out = os.path.join(output_dir, "predictions.csv")
    atomic_write_text(out, table)
    if explain:
        from scripts.inference.explain import explain_cohort

        explain_cohort(
            network, preprocessing, kept, ckpt_dir, os.path.join(output_dir, "explanations"), device, explain_mask_size
        )
    print(table, end="", flush=True)
    return out
