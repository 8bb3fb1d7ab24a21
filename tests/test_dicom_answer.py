"""The main job's answer as DICOM objects of the study: the clot SEG lies on the CTA where the generator put the clot,
and the objects carry no patient identifier unless asked."""

from __future__ import annotations

import datetime as dt
import os

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import NO_MODELS, ROOT
from tests.dicom_series import write_volume_series

PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN4711PHI",
    "PatientBirthDate": "19510203",
    "AccessionNumber": "ACC998877",
}
# uniform-world patients of seed 11 with a left M1 and a right M2 clot (the right one's box is turned by MirrorAlignd)
PATIENTS = (1, 3)


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> list:
    """Per patient: the clot's truth, its CTA series and the DICOM answer written from the main job's preprocessing
    and readings (``configs/inference.json`` + ``configs/clot_readings.json``) at the demo's 2 mm."""
    from monai.bundle import ConfigParser
    from monai.data import Dataset

    from scripts.data.anatomy import load_anatomy
    from scripts.demo.generator import draw_patient, draw_scan, render
    from scripts.inference.dicom_answer import write_study_answer
    from scripts.inference.predict import predict_many

    parser = ConfigParser()
    parser.read_config([os.path.join(ROOT, "configs", f) for f in ("inference.json", "clot_readings.json")])
    parser.update({"ckpt_dir": NO_MODELS, "model_config": None})
    preprocessing, reader = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("network_def")
    anatomy = load_anatomy(2.0)
    out = []
    for i in PATIENTS:
        rng = np.random.default_rng([11, i])
        patient = draw_patient(rng, i, dt.date(2018, 1, 1), 365)
        scan = draw_scan(np.random.default_rng([11, i, 4]), patient["age"], "uniform")
        images = render(anatomy, patient, rng, ["ct"], scan=scan, truth=True)
        base = tmp_path_factory.mktemp(f"patient{i}")
        item = {"patient_id": f"p{i}", "side": patient["side"], "location": patient["location"]}
        item.update(age=70, ivt=1, nihss=12)
        for key in ("ncct", "cta"):
            images[key] = np.round(images[key]).clip(-1024, 3071).astype(np.float32)  # as the series stores it
            nib.save(nib.Nifti1Image(images[key], anatomy.affine), str(base / f"{key}.nii.gz"))
            item[key] = write_volume_series(images[key], anatomy.affine, str(base / key), PHI, study="1.2.3.4")
        readouts: dict = {"key_views": [], "membership_maps": []}  # as inference collects them
        predict_many([reader], Dataset([item], preprocessing), "cpu", readouts=readouts)
        found = {name: values[0] for name, values in readouts.items()}
        result = {"probability": 0.7, "probability_sd": 0.1, "prediction": 1, "cutoff": 0.5, "warning": ""}
        result["measurements"] = {"side": item["side"], "clot_length_mm": 12.0, "arterial_enhancement_hu": 350.0}
        meta = {"name": "thrombectomy outcome bundle", "version": "test"}
        written = write_study_answer(str(base / "answer"), item, result, preprocessing, found, meta, "fpe")
        out.append({"patient": patient, "truth": images["clot"], "item": item, "written": written, "base": base})
        out[-1]["arguments"] = (result, preprocessing, found, meta, "fpe")
    return out


def test_clot_segment_lies_on_the_cta_where_the_clot_is(answers):
    """The SEG read back with highdicom: the CTA's frame of reference and series; on the CTA's own slices its clot
    segment overlaps the generator's clot (Dice >= 0.5) for a left and a right occlusion. The sampling onto the
    slices is checked on its own: the CTA volume sampled at the slices' pixels gives the series' pixel values."""
    import highdicom as hd
    from pydicom import dcmread

    from scripts.data.anatomy import load_anatomy
    from scripts.inference.dicom_images import SEG_FILE, on_source_frames

    affine = load_anatomy(2.0).affine
    for answer in answers:
        folder = answer["item"]["cta"]
        cta = sorted((dcmread(os.path.join(folder, f)) for f in os.listdir(folder)), key=lambda d: d.InstanceNumber)
        volume = nib.load(str(answer["base"] / "cta.nii.gz")).get_fdata(dtype=np.float32)
        hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in cta])
        assert np.abs(on_source_frames(volume[None], affine, cta)[..., 0] - hu).max() < 1e-3
        seg = hd.seg.segread(os.path.join(answer["base"], "answer", SEG_FILE))
        assert seg.FrameOfReferenceUID == cta[0].FrameOfReferenceUID
        assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [cta[0].SeriesInstanceUID]
        found = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in cta], segment_numbers=[2])[..., 0] > 0
        truth = on_source_frames(answer["truth"][None], affine, cta)[..., 0] >= 0.5
        dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
        assert truth.sum() > 10 and dice >= 0.5, (answer["patient"]["side"], answer["patient"]["location"], dice)


def test_dicom_answers_carry_no_patient_identifier_unless_asked(answers, tmp_path):
    """The four objects of a study whose series carry a name, ID, birth date and accession number hold none of them
    (type 2, present and empty) and belong to the study; with ``keep_identifiers`` all four carry the patient's ID,
    for a PACS that files results by it."""
    from pydicom import dcmread

    from scripts.inference.dicom_answer import write_study_answer

    answer = answers[0]
    assert len(answer["written"]) == 4
    for path in answer["written"]:
        raw = open(path, "rb").read()
        assert not [v for v in PHI.values() if v.encode() in raw], path
        ds = dcmread(path)
        assert ds.StudyInstanceUID == "1.2.3.4" and ds.PatientID == "" and ds.PatientName == ""
    kept = write_study_answer(str(tmp_path), answer["item"], *answer["arguments"], keep_identifiers=True)
    assert {dcmread(path).PatientID for path in kept} == {PHI["PatientID"]} and len(kept) == 4
