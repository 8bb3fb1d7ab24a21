"""The Deploy app's answer as a DICOM Comprehensive Structured Report (highdicom), which PACS and viewers display.

Content (a "Diagnostic imaging report" container): the outcome probability (NUM, unit 1), the fold SD, the stored
cut-off, the prediction at it (TEXT), the algorithm name and version (DCM 111001 / 111003), the out-of-distribution
warning when there is one, and "Research use only, not for diagnosis" (DCM 121106 Comment). The evidence is every
input series the app read (Current Requested Procedure Evidence Sequence: their study, series and SOP instance
UIDs); the patient and study modules are taken from the input as :func:`scripts.inference.dicom_answer.linkable`
gives it (the identifiers empty unless asked for), and nothing else is.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

DISCLAIMER = "Research use only, not for diagnosis"
MANUFACTURER = "Thrombectomy outcome bundle"  # every DICOM object the bundle writes
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


def new_instance(series_number: int, description: str) -> Dict[str, Any]:
    """The keywords every DICOM object the bundle writes shares (highdicom's constructors): a new series and instance,
    the series number (99xx: the bundle's outputs), the manufacturer and the series description (64 characters)."""
    import highdicom as hd

    return {
        "series_instance_uid": hd.UID(),
        "series_number": series_number,
        "sop_instance_uid": hd.UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "series_description": description[:64],
    }


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
        **new_instance(9901, f"{model_name} {model_version}: {DISCLAIMER}"),
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


# the main job's measurements (scripts.inference.measurements) as TID 1500 numeric measurements: concept, UCUM unit
HU = ("[hnsf'U]", "Hounsfield unit")
MEASUREMENTS = {
    "clot_length_mm": (("410668003", "SCT", "Length"), ("mm", "millimeter")),
    "clot_ncct_hu": (("CLOTNCCT", SCHEME, "Clot NCCT attenuation (densest arterial voxels)"), HU),
    "clot_asymmetry_hu": (("CLOTASYM", SCHEME, "Clot NCCT attenuation minus the mirrored side's"), HU),
    "clot_perviousness_hu": (("CLOTPERV", SCHEME, "Clot perviousness (CTA minus NCCT)"), HU),
    "distal_filling_ratio": (("DISTFILL", SCHEME, "Distal vessel filling ratio to the other side"), ("1", "no units")),
    "arterial_enhancement_hu": (("ARTENH", SCHEME, "Arterial enhancement"), HU),
}


def measurement_report(
    result: Dict[str, Any], evidence: Sequence[Any], model_name: str, model_version: str, outcome: str
) -> Any:
    """A TID 1500 Measurement Report (highdicom ``Comprehensive3DSR``) of the main job's clot measurements and the
    outcome probability, one measurement group tracked as "occlusive clot", the model as the observing device and
    the algorithm; referencing ``evidence`` like :func:`structured_report`.

    Args:
        result: the prediction dict with ``measurements`` (:func:`scripts.inference.measurements.measurement_fields`).
        evidence: pydicom datasets of the input series (one study).
        model_name: the bundle's name.
        model_version: its version.
        outcome: the outcome's name (the label).

    Returns:
        the SR dataset.
    """
    import highdicom as hd
    from highdicom.sr import (
        AlgorithmIdentification,
        CodedConcept,
        DeviceObserverIdentifyingAttributes,
        Measurement,
        MeasurementReport,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        ObserverContext,
        TrackingIdentifier,
    )

    algorithm = AlgorithmIdentification(name=model_name, version=model_version or "unknown")
    values = result["measurements"]
    measurements = [
        Measurement(
            name=CodedConcept(*concept),
            value=float(values[key]),
            unit=CodedConcept(unit[0], "UCUM", unit[1]),
            algorithm_id=algorithm,
        )
        for key, (concept, unit) in MEASUREMENTS.items()
        if values.get(key) is not None
    ]
    probability = CodedConcept(CONCEPTS["probability"][0], SCHEME, f"{CONCEPTS['probability'][1]}: {outcome}")
    unitless = CodedConcept("1", "UCUM", "no units")
    measurements.append(
        Measurement(probability, round(float(result["probability"]), 6), unitless, algorithm_id=algorithm)
    )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier="occlusive clot"),
        finding_type=CodedConcept("CLOT", SCHEME, "Occlusive clot"),
        algorithm_id=algorithm,
        measurements=measurements,
    )
    device = DeviceObserverIdentifyingAttributes(uid=hd.UID(), name=model_name[:64])
    observer = ObserverContext(CodedConcept("121007", "DCM", "Device"), device)
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=[group],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[evidence_header(ds) for ds in evidence],
        content=report,
        **new_instance(9902, f"{model_name} measurements: {DISCLAIMER}"),
    )


def read_measurements(path: str) -> Dict[str, Any]:
    """The numeric measurements back from a measurement report (pydicom only): concept meaning -> (value, UCUM unit)."""
    from pydicom import dcmread

    found: Dict[str, Any] = {}

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "NUM":
                measured = item.MeasuredValueSequence[0]
                unit = measured.MeasurementUnitsCodeSequence[0].CodeValue
                found[item.ConceptNameCodeSequence[0].CodeMeaning] = (float(measured.NumericValue), unit)
            walk(item.get("ContentSequence", []))

    walk(dcmread(path).ContentSequence)
    return found
