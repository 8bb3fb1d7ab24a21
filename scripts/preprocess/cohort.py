"""A whole cohort table through preprocessing, one Dask task per case (:mod:`scripts.preprocess.cluster`: a
LocalCluster by default, ``--scheduler ADDRESS`` for an existing cluster): per-case folders, a QC table and a
rewritten cohort CSV pointing at the outputs (``python -m monai.bundle run preprocess --config_file
configs/preprocess.json``).

A case that fails (unreadable series, not CT, CTA of another head, ...) is logged as one line naming the patient,
marked ``failed`` in the QC table with the cause, and left out of the rewritten cohort; the others continue.
Finished case folders are kept (a rerun only does what is missing), as long as they were made from the same scan
files (path, size and modification time: ``scans_sha256`` in ``qc.json``). Images of the other modality keep their
paths, so a cohort with CT and MR goes through twice (``--modality ct`` then ``--modality mr`` on the rewritten
table).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from typing import Any, Dict, List, Sequence, Tuple

from scripts import BundleInputError
from scripts.data.cohort import SEQUENCES, check_patient_id
from scripts.data.io import atomic_write_text
from scripts.preprocess import cluster
from scripts.preprocess.case_folder import case_lock, case_settings, read_qc

logger = logging.getLogger(__name__)

MODALITY_INPUTS = {"ct": ("ncct", "cta"), "mr": ("b0", "b1000", "adc", "flair", "tmax", "cbf", "cbv", "mtt")}
OUTPUT_IMAGES = {"ct": ("ncct", "cta", "vessels"), "mr": MODALITY_INPUTS["mr"]}
IMAGE_COLUMNS = set(SEQUENCES)
QC_COLUMNS = (
    "patient_id",
    "status",
    "error",
    "brain_volume_ml",
    "dice_template_brain",
    "coverage",
    "similarity_mi",
    "flags",
    "seconds",
)


def read_rows(cohort: str) -> Tuple[List[str], List[Dict[str, str]]]:
    """(columns, rows) of a cohort or image table: needs ``patient_id`` (unique, non-empty); paths relative to the
    CSV's folder are made absolute. The other columns pass through unchanged."""
    if not cohort or not os.path.isfile(cohort):
        raise BundleInputError(f"--cohort {cohort}: cohort table not found")
    base = os.path.dirname(os.path.abspath(cohort))
    with open(cohort, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    if "patient_id" not in columns:
        raise BundleInputError(f"{cohort}: no patient_id column")
    seen: Dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        check_patient_id(cohort, line, row["patient_id"], seen)
        for key in set(columns) & IMAGE_COLUMNS:
            if row[key] and not os.path.isabs(row[key]):
                row[key] = os.path.join(base, row[key])
    if not rows:
        raise BundleInputError(f"{cohort}: the cohort table has no rows")
    return columns, rows


def case_dir(output_dir: str, patient_id: str, modality: str) -> str:
    """``output_dir/<patient_id>/<modality>``; the id must be usable as a folder name."""
    if not patient_id or os.sep in patient_id or patient_id.startswith("."):
        raise BundleInputError(f"patient_id '{patient_id}' cannot name a case folder")
    return os.path.join(output_dir, patient_id, modality)


def preprocess_case(row: Dict[str, str], modality: str, out: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    """One case (in a worker process, or in this one for a single case); returns the QC dict with ``status`` and
    ``error``. Runs under :func:`case_lock`: another process on the same case folder makes this one wait, and then
    keep what it wrote when that was made from the same scans and settings."""
    from scripts.preprocess.ct import preprocess_ct
    from scripts.preprocess.mr import PERFUSION, preprocess_mr

    try:
        first = MODALITY_INPUTS[modality][0]
        if not row.get(first):
            raise BundleInputError(f"no {first} image")
        with case_lock(out):
            if modality == "ct":
                qc = preprocess_ct(
                    row["ncct"],
                    out,
                    row.get("cta") or None,
                    settings["transform"],
                    settings["spacing"],
                    vessels=settings.get("vessels", False),
                )
            else:
                perfusion = {k: row.get(k, "") for k in PERFUSION}
                qc = preprocess_mr(
                    row["b0"],
                    out,
                    row.get("b1000") or None,
                    row.get("adc") or None,
                    row.get("flair") or None,
                    perfusion,
                    settings["spacing"],
                    settings["histogram_reference"],
                )
        return {**qc, "status": "ok", "error": ""}
    except BundleInputError as error:
        return {"status": "failed", "error": str(error)}
    except Exception as error:  # an ITK/ANTs failure on one case must not stop the cohort
        message = (str(error).strip().splitlines() or [""])[0][:200]
        return {"status": "failed", "error": f"{type(error).__name__}: {message}"}


def run_cases(
    rows: List[Dict[str, str]],
    modality: str,
    outs: Dict[str, str],
    settings: Dict[str, Any],
    workers: int = 0,
    scheduler: str | None = None,
) -> Dict[str, Dict[str, Any]]:
    """Preprocess ``rows`` into ``outs[patient_id]``, one Dask task per case (:mod:`scripts.preprocess.cluster`:
    ``workers`` 0 = one per core on a LocalCluster, or ``scheduler`` an existing cluster's address or ``serial``);
    cases whose folder is finished are kept, not resubmitted. Returns patient_id -> QC dict with ``status``."""
    results: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        out = outs[row["patient_id"]]
        qc = read_qc(out, {k: row.get(k) for k in MODALITY_INPUTS[modality]}, case_settings(modality, settings))
        if qc is not None:
            results[row["patient_id"]] = {**qc, "status": "ok", "error": ""}
        elif read_qc(out) is not None:
            logger.info(
                "%s: the case folder was made from other scans or settings; preprocessing again", row["patient_id"]
            )
    if results:
        logger.info("%d of %d cases already preprocessed (kept)", len(results), len(rows))
    jobs = {
        r["patient_id"]: (r, modality, outs[r["patient_id"]], settings) for r in rows if r["patient_id"] not in results
    }
    if jobs:
        results.update(cluster.run_cases(preprocess_case, jobs, workers, scheduler))
    return results


def raw_settings(image_keys: Sequence[str], spacing: float = 1.0) -> Dict[str, Any]:
    """Preprocessing settings of raw scans at inference: affine registration to MNI at ``spacing`` mm, CTA vessel
    maps when the model reads ``vessels``."""
    return {
        "spacing": float(spacing),
        "transform": "Affine",
        "histogram_reference": None,
        "vessels": "vessels" in image_keys,
    }


def preprocess_items(
    items: List[Dict[str, Any]],
    output_dir: str,
    image_keys: Sequence[str],
    spacing: float = 1.0,
    workers: int = 0,
    scheduler: str | None = None,
) -> List[Dict[str, Any]]:
    """Inference on raw scans: preprocess each item into ``output_dir/<patient_id>/<modality>``.

    A failed patient is logged and left out; an error if none is left.

    Args:
        items: ``{patient_id, <sequence>: raw path, ...}``.
        output_dir: where the case folders go.
        image_keys: the sequences the model reads.
        spacing: the MNI grid's spacing, mm (the fold models' grid).
        workers: Dask LocalCluster workers; 0 = one per core.
        scheduler: an existing Dask cluster's address instead, or "serial".

    Returns:
        the items pointing at the preprocessed ``image_keys``.
    """
    modality = "ct" if set(image_keys) & set(MODALITY_INPUTS["ct"]) else "mr"
    rows = [{k: str(v) for k, v in item.items() if v is not None} for item in items]
    outs = {r["patient_id"]: case_dir(output_dir, r["patient_id"], modality) for r in rows}
    results = run_cases(rows, modality, outs, raw_settings(image_keys, spacing), workers, scheduler)
    ready = []
    for item in items:
        pid = item["patient_id"]
        produced = {k: os.path.join(outs[pid], f"{k}.nii.gz") for k in image_keys}
        absent = [k for k, path in produced.items() if not os.path.isfile(path)]
        if results[pid]["status"] == "ok" and absent:
            logger.error("%s: no %s image given, the model needs it", pid, ", ".join(absent))
        elif results[pid]["status"] == "ok":
            ready.append({**item, **produced})
    if not ready:
        raise BundleInputError(f"no patient could be preprocessed (see the errors above; case folders in {output_dir})")
    return ready


def preprocess_cohort(
    cohort: str,
    output_dir: str,
    modality: str = "ct",
    workers: int = 0,
    spacing: float = 1.0,
    transform: str = "Affine",
    histogram_reference: str | None = None,
    vessels: bool = False,
    scheduler: str | None = None,
) -> str:
    """Preprocess every case of ``cohort`` into ``output_dir/<patient_id>/<modality>``, one Dask task a case.

    Args:
        cohort: the cohort CSV of raw scans.
        output_dir: where the case folders, ``qc_<modality>.csv`` and the rewritten ``cohort.csv`` go.
        modality: "ct" or "mr".
        workers: Dask LocalCluster workers; 0 = one per core (ITK threads shared out).
        spacing: the MNI grid's spacing, mm.
        transform: "Affine" or "SyN" (CT).
        histogram_reference: a case folder whose histograms the MR sequences are matched to.
        vessels: CTA vessel maps too (CT).
        scheduler: an existing Dask cluster's address instead, or "serial" (this process).

    Returns:
        the rewritten cohort's path.
    """
    if modality not in MODALITY_INPUTS:
        raise BundleInputError(f"--modality '{modality}': use ct or mr")
    if transform not in ("Affine", "SyN"):
        raise BundleInputError(f"--transform '{transform}': use Affine or SyN")
    columns, rows = read_rows(cohort)
    if not set(MODALITY_INPUTS[modality]) & set(columns):
        raise BundleInputError(f"{cohort}: no {modality.upper()} image column ({', '.join(MODALITY_INPUTS[modality])})")
    settings = {
        "spacing": float(spacing),
        "transform": transform,
        "histogram_reference": histogram_reference,
        "vessels": bool(vessels),
    }
    outs = {r["patient_id"]: case_dir(output_dir, r["patient_id"], modality) for r in rows}
    os.makedirs(output_dir, exist_ok=True)
    results = run_cases(rows, modality, outs, settings, workers, scheduler)
    _write_qc_table(os.path.join(output_dir, f"qc_{modality}.csv"), rows, results)
    path = _write_cohort(os.path.join(output_dir, "cohort.csv"), columns, rows, results, outs, modality)
    failed = [pid for pid, r in results.items() if r["status"] == "failed"]
    logger.info(
        "%d of %d cases preprocessed, %d failed; cohort: %s", len(rows) - len(failed), len(rows), len(failed), path
    )
    if len(failed) == len(rows):
        raise BundleInputError(f"{cohort}: every case failed (see {output_dir}/qc_{modality}.csv)")
    return path


def _write_qc_table(path: str, rows: List[Dict[str, str]], results: Dict[str, Dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=QC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        qc = dict(results[row["patient_id"]], patient_id=row["patient_id"])
        qc["flags"] = ";".join(qc.get("flags", []))
        qc["seconds"] = round(sum(qc.get("seconds", {}).values()), 1)
        writer.writerow(qc)
    atomic_write_text(path, buf.getvalue())


def _write_cohort(
    path: str,
    columns: List[str],
    rows: List[Dict[str, str]],
    results: Dict[str, Dict[str, Any]],
    outs: Dict[str, str],
    modality: str,
) -> str:
    """The cohort with this modality's image cells pointing at the case folders (relative to ``path``): every
    image the case folder holds (the modality's inputs, a computed ADC, a CTA vessel map), plus
    ``<modality>_brain_mask`` and ``<modality>_territories``; failed cases left out."""
    ok = [r for r in rows if results[r["patient_id"]]["status"] == "ok"]
    images = {}
    for r in ok:
        candidates = {k: os.path.join(outs[r["patient_id"]], f"{k}.nii.gz") for k in OUTPUT_IMAGES[modality]}
        images[r["patient_id"]] = {k: v for k, v in candidates.items() if os.path.isfile(v)}
    produced = {k for found in images.values() for k in found}
    masks = [f"{modality}_brain_mask", f"{modality}_territories"]
    fields = columns + [c for c in sorted(produced) + masks if c not in columns]
    base = os.path.dirname(os.path.abspath(path))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in ok:
        case = outs[row["patient_id"]]
        new = {k: (os.path.relpath(v, base) if v and k in IMAGE_COLUMNS else v) for k, v in row.items()}
        for key in set(OUTPUT_IMAGES[modality]) & set(fields):
            found = images[row["patient_id"]].get(key)
            new[key] = os.path.relpath(found, base) if found else ""
        new[masks[0]] = os.path.relpath(os.path.join(case, "brain_mask.nii.gz"), base)
        new[masks[1]] = os.path.relpath(os.path.join(case, "territories.nii.gz"), base)
        writer.writerow(new)
    atomic_write_text(path, buf.getvalue())
    return path
