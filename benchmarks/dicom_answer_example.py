"""The Deploy app on a generated DICOM study, its answer read back: the recorded command of docs/README.md.

``python benchmarks/dicom_answer_example.py --ckpt_dir models --cohort demo/cohort.csv --patient_id demo0002
--out /tmp/answer [--figure docs/figures/key_image_example.png]``

Writes the patient's NCCT and CTA as a stroke CT study as a router sends it (six series under random file names, a
made-up name, ID and birth date in every header; ``tests/dicom_series.py``) with the case's side, site and clinical
values in ``case.json``, exports the model folder for MONAI Deploy, runs ``python -m scripts.deploy_app`` on the
study, and prints what a PACS would show: the outcome SR and the TID 1500 measurement report read back with
pydicom, the clot SEG read back with highdicom (its frame of reference against the CTA's, the slices holding clot
and vessel), the secondary capture's size, and whether any identifier of the headers reached an output.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import fire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts.deploy_app.export import export  # noqa: E402
from scripts.inference.dicom_images import KEY_IMAGE_FILE, SEG_FILE  # noqa: E402
from scripts.inference.dicom_report import read_measurements, read_report  # noqa: E402
from tests.dicom_series import write_study  # noqa: E402

PHI = {"PatientName": "Example^Patient", "PatientID": "MRN-EXAMPLE-1", "PatientBirthDate": "19500101"}


def main(ckpt_dir: str, cohort: str, patient_id: str, out: str, figure: str | None = None) -> None:
    """Run the example (module docstring) and print its record."""
    import highdicom as hd
    from pydicom import dcmread

    row = next(r for r in csv.DictReader(open(cohort)) if r["patient_id"] == patient_id)
    base = os.path.dirname(os.path.abspath(cohort))
    shutil.rmtree(out, ignore_errors=True)
    study = os.path.join(out, "study")
    written = write_study(os.path.join(base, row["ncct"]), os.path.join(base, row["cta"]), study, patient=PHI)
    case = {"side": row["side"], "location": row["location"], "age": int(row["age"])}
    case.update(ivt=int(row["ivt"]), nihss=int(row["nihss"]))
    json.dump(case, open(os.path.join(study, "case.json"), "w"))
    models = os.path.join(out, "deploy_models")
    export(ckpt_dir=ckpt_dir, out=models)
    answer = os.path.join(out, "answer")
    command = [sys.executable, "-m", "scripts.deploy_app", "-i", study, "-o", answer, "-m", models]
    start = time.time()
    app = subprocess.run(command + ["-w", os.path.join(out, "work")], cwd=ROOT, capture_output=True, text=True)
    if app.returncode != 0:
        raise SystemExit(app.stderr[-3000:])
    print(f"Deploy app on {len(os.listdir(study)) - 1} files of a 6-series study: {time.time() - start:.1f} s")
    print("outputs:", ", ".join(sorted(os.listdir(answer))))
    print("prediction.json:", json.dumps(json.load(open(os.path.join(answer, "prediction.json"))), indent=1))
    print("outcome SR read back:", read_report(os.path.join(answer, "outcome_sr.dcm")))
    for name, (value, unit) in read_measurements(os.path.join(answer, "measurements_sr.dcm")).items():
        print(f"  TID 1500: {name} = {value:g} {unit}")
    seg = hd.seg.segread(os.path.join(answer, SEG_FILE))
    cta = [dcmread(os.path.join(study, f), stop_before_pixels=True) for f in os.listdir(study) if f != "case.json"]
    cta = [ds for ds in cta if ds.get("SeriesNumber") == written["cta"]]
    uids = [ds.SOPInstanceUID for ds in cta]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])
    same = seg.FrameOfReferenceUID == cta[0].FrameOfReferenceUID
    print(f"SEG: CTA frame of reference {same}, {len(cta)} CTA slices referenced")
    for k, label in enumerate(("vessel", "clot")):
        holding = int(pixels[..., k].any(axis=(1, 2)).sum())
        print(f"  {label}: {int(pixels[..., k].sum())} pixels on {holding} slices")
    capture = dcmread(os.path.join(answer, KEY_IMAGE_FILE))
    print(f"secondary capture: {capture.Rows} x {capture.Columns} RGB, {len(capture.ReferencedSeriesSequence)} series")
    outputs = [open(os.path.join(r, f), "rb").read() for r, _, fs in os.walk(answer) for f in fs]
    outputs += [app.stdout.encode(), app.stderr.encode()]
    leaks = sorted({v for v in PHI.values() for data in outputs if v.encode() in data})
    print("identifiers of the headers in the outputs and the log:", leaks or "none")
    manifest = os.path.join(base, "manifest.json")
    if os.path.isfile(manifest):  # a demo cohort: what the generator put there
        truth = json.load(open(manifest))["truth"][patient_id]
        print(f"generator's truth: clot length {truth['clot_length_mm']} mm, density {truth['clot_density_hu']} HU")
    if figure:
        os.makedirs(os.path.dirname(os.path.abspath(figure)), exist_ok=True)
        shutil.copyfile(os.path.join(answer, "key_image.png"), figure)


if __name__ == "__main__":
    fire.Fire(main)
