"""The cohort table contract: reading, validation and label derivation.

One row per patient. Label rules (documented in docs/README.md, "Data"):

* ``fpe`` (first-pass effect) = mTICI >= 2b after the first pass (``mtici_first_pass``).
* ``mtici_2c`` = final mTICI >= 2c (``mtici_final``).
* ``rlvo`` (refractory LVO) = final eTICI 0-2a, or ``stenosis_gt50`` = 1, or ``rescue`` = 1.

Image columns hold one NIfTI file (or DICOM series directory) per sequence; a blank cell means
the sequence is missing for that patient. Relative paths are relative to the CSV's folder. Further
columns (comorbidities, perfusion paths, ...) are kept as text for the components that use them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from typing import Any, Dict, List, Sequence

from scripts import BundleInputError

SEQUENCES = ("ncct", "cta", "b0", "b1000", "adc", "flair", "vessels", "tmax", "cbf", "cbv", "mtt")
MODALITY_SEQUENCES = {"ct": ("ncct", "cta"), "mr": ("adc", "b1000", "flair")}
LABELS = ("fpe", "mtici_2c", "rlvo")
REQUIRED_COLUMNS = (
    "patient_id",
    "procedure_date",
    "passes",
    "mtici_first_pass",
    "mtici_final",
    "location",
    "side",
    "age",
    "sex",
    "nihss",
    "onset_to_imaging_min",
    "ivt",
)
OPTIONAL_COLUMNS = ("rescue", "stenosis_gt50")
# ordered reperfusion grades; eTICI's 2b50/2b67 sit between 2a and 2c and count as >= 2b
TICI_GRADES = ("0", "1", "2a", "2b", "2b50", "2b67", "2c", "3")
LOCATIONS = ("ICA", "M1", "M2", "M3", "ACA", "PCA", "BA", "VA")
SIDES = ("L", "R")
SEXES = ("M", "F")


def tici_rank(grade: str) -> int:
    """Position of an mTICI/eTICI grade in :data:`TICI_GRADES` (raises ``ValueError`` if unknown)."""
    return TICI_GRADES.index(grade.strip().lower())


def derive_labels(row: Dict[str, Any]) -> Dict[str, int]:
    """Labels of one validated row, by the rules in the module docstring."""
    first, final = tici_rank(row["mtici_first_pass"]), tici_rank(row["mtici_final"])
    return {
        "fpe": int(first >= tici_rank("2b")),
        "mtici_2c": int(final >= tici_rank("2c")),
        "rlvo": int(final <= tici_rank("2a") or row["stenosis_gt50"] == 1 or row["rescue"] == 1),
    }


def _fail(path: str, line: int, column: str, message: str) -> BundleInputError:
    return BundleInputError(f"{path}: row {line}, column '{column}': {message}")


def check_patient_id(path: str, line: int, pid: str, seen: Dict[str, int]) -> str:
    """A non-empty patient id not seen on an earlier row (``seen`` maps ids to their rows); also used by the
    cohort preprocessing."""
    if not pid:
        raise _fail(path, line, "patient_id", "empty")
    if pid in seen:
        raise _fail(path, line, "patient_id", f"duplicate id '{pid}' (first on row {seen[pid]})")
    seen[pid] = line
    return pid


def _number(path: str, line: int, column: str, value: str, low: float, high: float, integer: bool = False) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _fail(path, line, column, f"'{value}' is not a number") from None
    if integer and number != int(number):
        raise _fail(path, line, column, f"'{value}' is not a whole number")
    if not low <= number <= high:
        raise _fail(path, line, column, f"{value} is outside [{low:g}, {high:g}]")
    return int(number) if integer else number


def _flag(path: str, line: int, column: str, value: str) -> int:
    if value.strip() == "":
        return 0
    if value.strip() not in ("0", "1"):
        raise _fail(path, line, column, f"'{value}' must be 0 or 1")
    return int(value)


def read_table_text(path: str, what: str) -> str:
    """The text of a CSV table (UTF-8, a byte-order mark allowed); a missing file or non-UTF-8 bytes (named by line)
    raise :class:`BundleInputError`."""
    if not os.path.isfile(path):
        raise BundleInputError(f"{path}: {what} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as error:
        with open(path, "rb") as f:
            line = f.read(error.start).count(b"\n") + 1
        raise BundleInputError(f"{path}: line {line} is not UTF-8 text (save the table as UTF-8 CSV)") from None


def read_cohort(
    path: str, check_files: bool = True, excluded: List[Dict[str, str]] | None = None
) -> List[Dict[str, Any]]:
    """Read and validate a cohort CSV; return one dict per patient with derived labels added.

    Each problem raises :class:`BundleInputError` naming the file, the row (as a line number of
    the CSV, header = 1) and the column. With ``excluded`` (a list), a problem of one row appends
    ``{patient_id, reason}`` to it and that row is left out instead (a problem of the table itself still raises).
    """
    text = read_table_text(path, "cohort table")
    base = os.path.dirname(os.path.abspath(path))
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise BundleInputError(f"{path}: missing column(s) {', '.join(missing)}")
        if not any(s in header for s in SEQUENCES):
            raise BundleInputError(f"{path}: no image column (expected some of {', '.join(SEQUENCES)})")
        rows: List[Dict[str, Any]] = []
        seen: Dict[str, int] = {}
        for line, raw in enumerate(reader, start=2):
            raw = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            try:
                rows.append(_validate_row(path, base, line, raw, seen, check_files))
            except BundleInputError as error:
                if excluded is None:
                    raise
                excluded.append({"patient_id": raw.get("patient_id") or f"row {line}", "reason": str(error)})
    if not rows:
        more = f" left ({len(excluded)} refused, first: {excluded[0]['reason']})" if excluded else ""
        raise BundleInputError(f"{path}: the cohort table has no rows{more}")
    return rows


def _validate_row(
    path: str, base: str, line: int, raw: Dict[str, str], seen: Dict[str, int], check_files: bool
) -> Dict[str, Any]:
    row: Dict[str, Any] = {"patient_id": check_patient_id(path, line, raw["patient_id"], seen)}
    try:
        row["procedure_date"] = dt.date.fromisoformat(raw["procedure_date"]).isoformat()
    except ValueError:
        raise _fail(path, line, "procedure_date", f"'{raw['procedure_date']}' is not a date (YYYY-MM-DD)") from None
    for column in ("mtici_first_pass", "mtici_final"):
        if raw[column].lower() not in TICI_GRADES:
            raise _fail(path, line, column, f"unknown mTICI grade '{raw[column]}' (allowed: {', '.join(TICI_GRADES)})")
        row[column] = raw[column].lower()
    row["passes"] = _number(path, line, "passes", raw["passes"], 1, 20, integer=True)
    for column in OPTIONAL_COLUMNS:
        row[column] = _flag(path, line, column, raw.get(column, ""))
    if raw["location"].upper() not in LOCATIONS:
        raise _fail(
            path, line, "location", f"unknown occlusion site '{raw['location']}' (allowed: {', '.join(LOCATIONS)})"
        )
    row["location"] = raw["location"].upper()
    if raw["side"].upper() not in SIDES:
        raise _fail(path, line, "side", f"'{raw['side']}' must be L or R")
    row["side"] = raw["side"].upper()
    if raw["sex"].upper() not in SEXES:
        raise _fail(path, line, "sex", f"'{raw['sex']}' must be M or F")
    row["sex"] = raw["sex"].upper()
    row["age"] = _number(path, line, "age", raw["age"], 0, 120)
    # registries have gaps (a quarter of the AJNR cohort had an unknown onset): blank = missing (None); image-only
    # models ignore it, the clinical encoders impute it with a missing indicator, Table 1 counts it
    nihss, onset = raw["nihss"].strip(), raw["onset_to_imaging_min"].strip()
    row["nihss"] = _number(path, line, "nihss", nihss, 0, 42, integer=True) if nihss else None
    row["onset_to_imaging_min"] = _number(path, line, "onset_to_imaging_min", onset, 0, 10080) if onset else None
    row["ivt"] = _flag(path, line, "ivt", raw["ivt"])
    for seq in SEQUENCES:
        value = raw.get(seq, "")
        if not value:
            continue
        full = value if os.path.isabs(value) else os.path.join(base, value)
        if check_files and not os.path.exists(full):
            raise _fail(path, line, seq, f"file not found: {value}")
        row[seq] = full
    row.update(derive_labels(row))
    for column, value in raw.items():  # further columns (e.g. comorbidities for the clinical branch) as text
        if column not in row and column not in SEQUENCES:
            row[column] = value
    return row


def read_image_table(
    path: str, sequences: Sequence[str], columns: Dict[str, Sequence[str]] | None = None
) -> List[Dict[str, Any]]:
    """Read an image-only table (``patient_id`` plus one column per sequence, e.g. an unlabeled pool for
    self-supervised pretraining); every listed sequence must be present for every patient, and each of ``columns``
    ({name: allowed values}, e.g. ``side``, by which the mirrored vessel box is turned) hold an allowed value."""
    columns = columns or {}
    text = read_table_text(path, "image table")
    base = os.path.dirname(os.path.abspath(path))
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("patient_id", *sequences, *columns) if c not in (reader.fieldnames or [])]
        if missing:
            raise BundleInputError(f"{path}: missing column(s) {', '.join(missing)}")
        rows: List[Dict[str, Any]] = []
        seen: Dict[str, int] = {}
        for line, raw in enumerate(reader, start=2):
            row: Dict[str, Any] = {"patient_id": check_patient_id(path, line, (raw["patient_id"] or "").strip(), seen)}
            for seq in sequences:
                value = (raw[seq] or "").strip()
                full = value if os.path.isabs(value) else os.path.join(base, value)
                if not value or not os.path.exists(full):
                    raise _fail(path, line, seq, f"file not found: '{value}'")
                row[seq] = full
            for column, allowed in columns.items():
                row[column] = (raw[column] or "").strip()
                if row[column] not in allowed:
                    raise _fail(path, line, column, f"'{row[column]}' is not one of {', '.join(allowed)}")
            rows.append(row)
    if not rows:
        raise BundleInputError(f"{path}: the image table has no rows")
    return rows


def require_sequences(rows: Sequence[Dict[str, Any]], sequences: Sequence[str], source: str) -> None:
    """Raise if a patient lacks one of the sequences a model needs."""
    for row in rows:
        absent = [s for s in sequences if not row.get(s)]
        if absent:
            raise BundleInputError(f"{source}: patient {row['patient_id']} has no {', '.join(absent)} image")
