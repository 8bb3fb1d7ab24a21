"""The Deploy app's answer as a DICOM Comprehensive Structured Report (highdicom), which PACS and viewers display.

Content (a "Diagnostic imaging report" container): the outcome probability (NUM, unit 1), the fold SD, the stored
cut-off, the prediction at it (TEXT), the algorithm name and version (DCM 111001 / 111003), the out-of-distribution
warning when there is one, and "Research use only, not for diagnosis" (DCM 121106 Comment). The evidence is every
input series the app read (Current Requested Procedure Evidence Sequence: their study, series and SOP instance
UIDs); the patient and study modules are copied from the input, as DICOM requires, and nothing else is.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

DISCLAIMER = "Research use only, not for diagnosis"
SCHEME = "99TBOUT"  # a local coding scheme for the bundle's own concepts (DICOM PS3.16: "99" prefix)
CONCEPTS = {
    "probability": ("PROB", "Outcome probability"),
    "probability_sd": ("PROBSD", "Outcome probability SD over fold models"),
    "cutoff": ("CUTOFF", "Decision cut-off"),
    "prediction": ("PRED", "Outcome prediction at the cut-off"),
    "warning": ("OOD", "Input quality warning"),
}


PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
REFERENCE = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")


def evidence_header(dataset: Any) -> Any:
    """What the SR takes from one input file: its references and the patient and study modules (type 2 attributes
    the file lacks left empty, as DICOM allows); no pixels, no other attribute."""
    from pydicom.dataset import Dataset

    header = Dataset()
    for keyword in REFERENCE + PATIENT_STUDY:
        setattr(header, keyword, dataset.get(keyword, None if keyword in REFERENCE else ""))
    return header


def structured_report(
    result: Dict[str, Any], evidence: Sequence[Any], model_name: str, model_version: str, outcome: str
) -> Any:
    """A highdicom ``ComprehensiveSR`` of ``result`` (the app's prediction dict) referencing ``evidence`` (pydicom
    datasets of the input series, one study)."""
    import highdicom as hd
    from highdicom.sr import (
        CodedConcept,
        ContainerContentItem,
        NumContentItem,
        RelationshipTypeValues,
        TextContentItem,
    )

    contains = RelationshipTypeValues.CONTAINS

    def concept(key: str) -> Any:
        value, meaning = CONCEPTS[key]
        return CodedConcept(value, SCHEME, meaning)

    unit = CodedConcept("1", "UCUM", "no units")
    positive = result["prediction"] == 1
    items = [
        TextContentItem(CodedConcept("111001", "DCM", "Algorithm Name"), model_name, relationship_type=contains),
        TextContentItem(CodedConcept("111003", "DCM", "Algorithm Version"), model_version, relationship_type=contains),
    ]
    for key in ("probability", "probability_sd", "cutoff"):
        items.append(NumContentItem(concept(key), round(float(result[key]), 6), unit, relationship_type=contains))
    answer = f"{outcome}: {'yes' if positive else 'no'} (probability {'>=' if positive else '<'} cut-off)"
    items.append(TextContentItem(concept("prediction"), answer, relationship_type=contains))
    if result.get("warning"):
        items.append(TextContentItem(concept("warning"), str(result["warning"])[:1024], relationship_type=contains))
    items.append(TextContentItem(CodedConcept("121106", "DCM", "Comment"), DISCLAIMER, relationship_type=contains))
    root = ContainerContentItem(CodedConcept("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = items
    return hd.sr.ComprehensiveSR(
        evidence=[evidence_header(ds) for ds in evidence],
        content=root,
        series_instance_uid=hd.UID(),
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Thrombectomy outcome bundle",
        series_description=f"{model_name} {model_version}: {DISCLAIMER}"[:64],
    )


def read_report(path: str) -> Dict[str, Any]:
    """The bundle's values back from an SR file (pydicom only): concept meaning -> value, and the referenced series
    UIDs (``referenced_series``)."""
    from pydicom import dcmread

    ds = dcmread(path)
    values: Dict[str, Any] = {}
    for item in ds.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "NUM":
            values[name] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "TEXT":
            values[name] = str(item.TextValue)
    values["referenced_series"] = sorted(
        s.SeriesInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
    )
    return values
