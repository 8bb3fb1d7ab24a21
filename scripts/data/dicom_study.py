"""A DICOM study as PACS sends it (one folder of mixed files) -> the series each sequence of the model reads.

The rules are a JSON file in MONAI Deploy's ``DICOMSeriesSelectorOperator`` format (``configs/series_rules.json``:
``{"selections": [{"name": "ncct", "conditions": {...}}, ...]}``, one selection per sequence name), matched with
that operator's semantics on the headers of each series' first file:

- a string condition matches a string attribute case-insensitively, or as a regular expression (``re.search``);
- a list condition on a multi-valued attribute (``ImageType``) requires every term and none of the ``!``-terms;
- a numeric attribute (``SliceThickness``) matches a number, an inclusive range ``[lo, hi]``, a relation
  ``[v, ">="]`` or a regular expression (full match);
- ``ImageOrientationPatient`` matches ``Axial`` / ``Coronal`` / ``Sagittal`` (the slice normal's main axis);
- a missing or empty attribute never matches.

Three keys of a selection extend the format (MONAI Deploy ignores keys it does not know):

- ``absent``: attributes that must be missing or empty (an NCCT has no ``ContrastBolusAgent``);
- ``instances``: conditions on each file, keeping only the matching ones (``DiffusionBValue`` splits a DWI series
  holding b0 and b1000 images);
- ``choose``: among several matching series, ``thinnest`` (smallest ``SliceThickness``, then most images; the
  default) or ``most_images`` (MONAI Deploy's ``sort_by_sop_instance_count``).

Every selection's choice and why it won (and what it beat) go to the QC output as series numbers and descriptions;
UIDs and patient attributes never leave the headers. A folder without a suitable series, or with two studies, is one
line naming the folder and what is missing.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import numbers
import os
import re
import shutil
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np

from scripts import BundleInputError

RULES_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "series_rules.json"
)
HEADER_TAGS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "StudyDescription",
    "Modality",
    "SOPClassUID",
    "ImageType",
    "ContrastBolusAgent",
    "SliceThickness",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PatientPosition",
    "DiffusionBValue",
    "GantryDetectorTilt",
    "BodyPartExamined",
    "ProtocolName",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "InstanceNumber",
    "ScanningSequence",
    "SequenceName",
)
MAX_TILT_DEG = 1.0  # slice stacks tilted against their normal by more (gantry tilt) are refused
MAX_GAP_RATIO = 1.2  # neighbouring slice distances may differ by 20% (rounding); more means missing slices


@dataclasses.dataclass
class Series:
    """One series of a study: its files and the header attributes of its first file (``attrs``)."""

    uid: str
    study: str
    files: List[str]
    attrs: Dict[str, Any]
    positions: List[List[float] | None]
    per_file: List[Dict[str, Any]]
    source: Any = None  # the MONAI Deploy DICOMSeries it came from, when selected inside the Deploy app

    def label(self) -> str:
        """``#N 'description' (k images, t mm)``: what the QC output and error lines name (no UIDs)."""
        thickness = self.attrs.get("SliceThickness")
        mm = f", {thickness:g} mm" if isinstance(thickness, (int, float)) else ""
        return (
            f"#{self.attrs.get('SeriesNumber', '?')} '{self.attrs.get('SeriesDescription', '')}' "
            f"({len(self.files)} images{mm})"
        )


def _plain(value: Any) -> Any:
    """A pydicom value as str / int / float / list of str."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import IS, DSfloat

    if isinstance(value, MultiValue) or isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, DSfloat):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return ""
    return value if isinstance(value, (int, float)) else str(value)


def header(dataset: Any) -> Dict[str, Any]:
    """The selection-relevant attributes of one pydicom dataset (absent ones left out)."""
    found = {}
    for keyword in HEADER_TAGS:
        value = dataset.get(keyword)
        if value is not None and value != "":
            found[keyword] = _plain(value)
    return found


def group_series(entries: Iterable[tuple]) -> List[Series]:
    """``(path, header, source)`` triples -> series (files in slice order along the normal), grouped by study and
    series UID."""
    groups: Dict[tuple, List[tuple]] = {}
    for path, attrs, source in entries:
        if "SeriesInstanceUID" in attrs:
            groups.setdefault((attrs.get("StudyInstanceUID", ""), attrs["SeriesInstanceUID"]), []).append(
                (path, attrs, source)
            )
    series = []
    for (study, uid), members in groups.items():
        normal = _normal(members[0][1].get("ImageOrientationPatient"))
        if normal is not None and all("ImagePositionPatient" in a for _, a, _ in members):
            members.sort(key=lambda m: float(np.dot(normal, np.asarray(m[1]["ImagePositionPatient"], float))))
        else:
            members.sort(key=lambda m: int(m[1].get("InstanceNumber", 0)))
        first = members[0][1]
        series.append(
            Series(
                uid=uid,
                study=study,
                files=[m[0] for m in members],
                attrs=dict(first),
                positions=[m[1].get("ImagePositionPatient") for m in members],
                per_file=[m[1] for m in members],
                source=members[0][2],
            )
        )
    series.sort(key=lambda s: (int(s.attrs.get("SeriesNumber", 0) or 0), s.uid))
    return series


def index_folder(folder: str) -> List[Series]:
    """Every DICOM series under ``folder`` (recursively; non-DICOM files, DICOMDIR and files without a series
    are skipped)."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    if not os.path.isdir(folder):
        raise BundleInputError(f"{folder}: DICOM study folder not found")
    entries = []
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                dataset = dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
            except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError):
                continue
            entries.append((path, header(dataset), None))
    return group_series(entries)


def _normal(orientation: Sequence[Any] | None) -> np.ndarray | None:
    if not orientation or len(orientation) != 6:
        return None
    iop = np.asarray([float(v) for v in orientation])
    normal = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else None


def orientation_name(orientation: Sequence[Any]) -> str:
    """``Axial``, ``Coronal`` or ``Sagittal``: the patient axis closest to the slice normal."""
    normal = _normal(orientation)
    if normal is None:
        return ""
    return ("Sagittal", "Coronal", "Axial")[int(np.argmax(np.abs(normal)))]


def geometry_problem(series: Series) -> str | None:
    """Why the series cannot be read as one regular volume (gantry tilt, repeated or missing slices), or None."""
    tilt = series.attrs.get("GantryDetectorTilt")
    normal = _normal(series.attrs.get("ImageOrientationPatient"))
    if normal is None or len(series.files) < 2 or any(p is None for p in series.positions):
        return None if series.attrs.get("NumberOfFrames") or len(series.files) >= 2 else "a single image, not a volume"
    positions = np.asarray(series.positions, dtype=float)
    along = positions @ normal
    steps = np.diff(along)
    if np.any(np.abs(steps) < 1e-3):
        return "several images at the same slice position (a time series or several volumes in one series)"
    span = positions[-1] - positions[0]
    angle = float(np.degrees(np.arccos(min(1.0, abs(float(np.dot(span, normal))) / np.linalg.norm(span)))))
    if angle > MAX_TILT_DEG or (isinstance(tilt, (int, float)) and abs(tilt) > MAX_TILT_DEG):
        shown = angle if angle > MAX_TILT_DEG else abs(float(tilt))
        return f"gantry-tilted ({shown:.1f} deg): reconstruct it without tilt at the scanner or resample it first"
    if steps.max() > MAX_GAP_RATIO * steps.min():
        return f"unevenly spaced slices ({steps.min():.2f} to {steps.max():.2f} mm): slices missing?"
    return None


def _match_numeric(condition: Any, value: float) -> bool:
    if isinstance(condition, list) and len(condition) == 2 and isinstance(condition[1], str):
        bound, op = float(condition[0]), condition[1]
        relations = {
            ">": value > bound,
            ">=": value >= bound,
            "<": value < bound,
            "<=": value <= bound,
            "!=": value != bound,
        }
        if op not in relations:
            raise BundleInputError(f"series rules: unknown relation {op!r} (use >, >=, <, <=, !=)")
        return relations[op]
    if isinstance(condition, list) and len(condition) == 2:
        return float(condition[0]) <= value <= float(condition[1])
    if isinstance(condition, str):
        return bool(re.fullmatch(condition, str(value)))
    if isinstance(condition, numbers.Number):
        return float(condition) == value
    raise BundleInputError(f"series rules: cannot match {condition!r} against a number")


def matches(condition: Any, value: Any, key: str = "") -> bool:
    """One condition of the rules against one attribute value (MONAI Deploy's semantics, module docstring)."""
    if value is None or value == "" or value == []:
        return False
    if key == "ImageOrientationPatient" and isinstance(condition, str):
        return orientation_name(value).casefold() == condition.strip().casefold()
    if isinstance(value, (int, float)):
        return _match_numeric(condition, float(value))
    if isinstance(value, str):
        condition = str(condition)
        return value.casefold() == condition.casefold() or bool(re.search(condition, value, re.IGNORECASE))
    text = str(value).lower()
    terms = [str(c).lower() for c in (condition if isinstance(condition, list) else [condition])]
    return all(t[1:] not in text if t.startswith("!") else t in text for t in terms)


def _matches_all(conditions: Mapping[str, Any], attrs: Mapping[str, Any]) -> bool:
    return all(matches(c, attrs.get(k), k) for k, c in conditions.items() if c not in (None, "", []))


def _thickness(series: Series) -> float:
    value = series.attrs.get("SliceThickness")
    return float(value) if isinstance(value, (int, float)) else float("inf")


def _restricted(series: Series, conditions: Mapping[str, Any]) -> Series | None:
    """The series reduced to its files matching the ``instances`` conditions (None when none match)."""
    keep = [i for i, attrs in enumerate(series.per_file) if _matches_all(conditions, attrs)]
    if not keep:
        return None
    return dataclasses.replace(
        series,
        files=[series.files[i] for i in keep],
        positions=[series.positions[i] for i in keep],
        per_file=[series.per_file[i] for i in keep],
    )


def load_rules(rules: Any = None) -> Dict[str, Dict[str, Any]]:
    """The selections by name, from a rules file path, a dict, or the bundle's ``configs/series_rules.json``."""
    path = rules if isinstance(rules, str) else RULES_FILE
    if rules is None or isinstance(rules, str):
        try:
            with open(path) as f:
                rules = json.load(f)
        except (OSError, ValueError) as error:
            raise BundleInputError(f"{path}: series rules cannot be read ({error})") from None
    selections = rules.get("selections") if isinstance(rules, dict) else None
    if not isinstance(selections, list) or not all(isinstance(s, dict) and s.get("name") for s in selections):
        raise BundleInputError(f"{path}: series rules need a 'selections' list of {{name, conditions}}")
    return {str(s["name"]).strip(): s for s in selections}


def named_rules(selections: Mapping[str, Any]) -> Dict[str, Any]:
    """:func:`load_rules`'s output back in the rules format."""
    return {"selections": list(selections.values())}


def select(
    series: Sequence[Series], keys: Sequence[str], rules: Any = None, where: str = "", optional: Sequence[str] = ()
) -> Dict[str, Any]:
    """For each sequence in ``keys``, the chosen series and a record of the choice.

    Returns ``{key: {"series": Series, "record": {...}}}``; raises :class:`BundleInputError` (one line naming
    ``where``) when the series come from two studies or a sequence has no suitable series (sequences in
    ``optional`` are then left out)."""
    selections = load_rules(rules)
    studies = {s.study for s in series}
    if not series:
        raise BundleInputError(f"{where}: no DICOM series found")
    if len(studies) > 1:
        raise BundleInputError(f"{where}: holds {len(studies)} studies; give one study per folder")
    chosen = {}
    for key in keys:
        if key not in selections and key in optional:
            continue
        if key not in selections:
            raise BundleInputError(f"series rules: no selection named {key!r} (the model reads {', '.join(keys)})")
        rule = selections[key]
        candidates = []
        for s in series:
            if not _matches_all(rule.get("conditions") or {}, s.attrs):
                continue
            if any(s.attrs.get(a) not in (None, "", []) for a in rule.get("absent", [])):
                continue
            s = _restricted(s, rule["instances"]) if rule.get("instances") else s
            if s is not None:
                candidates.append(s)
        how = rule.get("choose", "thinnest")
        order = (lambda s: -len(s.files)) if how == "most_images" else (lambda s: (_thickness(s), -len(s.files)))
        candidates.sort(key=order)
        usable = [(s, geometry_problem(s)) for s in candidates]
        good = [s for s, problem in usable if problem is None]
        if not good and key in optional:
            continue
        if not good:
            found = "; ".join(s.label() for s in series)
            why = "; ".join(f"{s.label()} is {p}" for s, p in usable) if usable else f"series found: {found}"
            raise BundleInputError(f"{where}: no suitable {key.upper()} series ({why})")
        best = good[0]
        record = {
            "series_number": best.attrs.get("SeriesNumber"),
            "description": best.attrs.get("SeriesDescription"),
            "images": len(best.files),
            "slice_thickness_mm": best.attrs.get("SliceThickness"),
            "reason": f"matches rule {key!r}"
            + (f", {how} of {len(candidates)} matching series" if len(candidates) > 1 else ""),
            "passed_over": [s.label() + (f": {p}" if p else "") for s, p in usable if s is not best],
        }
        chosen[key] = {"series": best, "record": record}
    return chosen


_LINK_DIRS: List[str] = []


@atexit.register
def _remove_links() -> None:
    for folder in _LINK_DIRS:
        shutil.rmtree(folder, ignore_errors=True)


def series_folder(series: Series, key: str) -> str:
    """A temporary folder ``.../{key}_series{N}`` of links to the series' files (named by slice order, never by
    UID), removed at exit: the form MONAI's ``ITKReader`` reads as one series; error lines name the sequence and the
    series number through it."""
    _LINK_DIRS.append(tempfile.mkdtemp(prefix="study-"))
    folder = os.path.join(_LINK_DIRS[-1], f"{key}_series{series.attrs.get('SeriesNumber', '')}")
    os.makedirs(folder)
    for i, path in enumerate(series.files):
        os.symlink(os.path.abspath(path), os.path.join(folder, f"{i:05d}.dcm"))
    return folder


def study_series(
    study: str, keys: Sequence[str], rules: Any = None, optional: Sequence[str] = ()
) -> Tuple[Dict[str, str], Dict[str, Any]]:
    """({sequence: folder of the chosen series' files}, the QC record of the choice) for the sequences of ``keys``
    that the rules name (maps the bundle computes, vessels or perfusion, are not series) in a ``study`` folder."""
    named = load_rules(rules)
    keys = [k for k in keys if k in named]
    chosen = select(index_folder(study), keys, named_rules(named), where=study, optional=optional)
    return {k: series_folder(c["series"], k) for k, c in chosen.items()}, selection_record(chosen)


def study_images(
    study: str | None,
    images: Mapping[str, str] | None = None,
    keys: Sequence[str] = (),
    rules: Any = None,
    record_dir: str | None = None,
) -> Dict[str, str]:
    """The configs' ``images``: each sequence read from the series the rules choose in a DICOM study folder.

    Args:
        study: a study folder as PACS sends it, or None.
        images: {sequence: path} given instead of a study.
        keys: the sequences the model reads.
        rules: the series rules (``configs/series_rules.json`` format), a path or their content.
        record_dir: where ``series_selection.json`` records the choice.

    Returns:
        {sequence: path}: with a study, the chosen series; without one, ``images`` unchanged.
    """
    if not study:
        return dict(images or {})
    found, record = study_series(study, keys, rules)
    if record_dir:
        from scripts.data.io import atomic_write_json

        atomic_write_json(os.path.join(record_dir, "series_selection.json"), record)
    return {**dict(images or {}), **found}


def selection_record(chosen: Mapping[str, Any]) -> Dict[str, Any]:
    """The QC record of :func:`select`'s choice: per sequence, series number, description, images, thickness,
    why it was chosen and what it was preferred to."""
    return {k: c["record"] for k, c in chosen.items()}


def check_series_folder(folder: str, what: str = "image") -> Series:
    """The one readable series in a DICOM series folder (given for one sequence), else one line: empty folder,
    several series (a whole study: use ``--study``), gantry tilt, missing or repeated slices."""
    series = index_folder(folder)
    if not series:
        empty = not any(os.scandir(folder))
        problem = "empty folder (expected a DICOM series)" if empty else "holds no DICOM image series"
        raise BundleInputError(f"{folder}: {what} {problem}")
    if len(series) > 1:
        raise BundleInputError(
            f"{folder}: {what} folder holds {len(series)} DICOM series (a whole study? give it "
            "as --study, the series rules then choose)"
        )
    problem = geometry_problem(series[0])
    if problem:
        raise BundleInputError(f"{folder}: {what} series {series[0].label()} is {problem}")
    return series[0]


def dicom_reader() -> Any:
    """The bundle's one DICOM series reader: MONAI's ``ITKReader`` (ITK's GDCM series reader; RAS affine)."""
    from monai.data import ITKReader

    return ITKReader()
