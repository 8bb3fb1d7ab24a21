"""A catalogue of bad inputs, generated at test time, through the CLIs a user runs: preprocessing, inference,
the split, evaluation and the MONAI Deploy app.

Each case must end with exit status 2, one line ``error: ...`` naming the file or field and the cause as the last
line of stderr, no traceback, and nothing written to the output folder.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from typing import Callable, Dict, List

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.helpers import BUNDLE

TINY = {"spatial_size": [24, 24], "num_slices": 10, "widths": [4, 8, 8, 16], "num_heads": 2, "dropout": 0.0}
SHAPE = [f"--{k}={json.dumps(v).replace(' ', '')}" for k, v in TINY.items()]


def _infer_cmd(models: str, out: str, *flags: str) -> List[str]:
    """Single-patient inference with the module's tiny fold models, writing to ``out``."""
    return [
        *BUNDLE,
        "--config_file",
        "configs/inference.json",
        "--ckpt_dir",
        models,
        *SHAPE,
        *flags,
        "--output_dir",
        out,
    ]


def _run(cmd: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def models(side_datalist, tmp_path_factory):
    """Two tiny fold models (one epoch each), evaluated (cut-offs), and their MONAI Deploy export."""
    ckpt = str(tmp_path_factory.mktemp("bad_models"))
    common = ["--datalist_file", side_datalist, "--ckpt_dir", ckpt, *SHAPE, "--batch_size", "4"]
    train = _run([*BUNDLE, "training", "--config_file", "configs/train.json", *common, "--max_epochs", "1"])
    assert train.returncode == 0, train.stderr[-2000:]
    files = "['configs/train.json','configs/evaluate.json']"
    evaluate = _run([*BUNDLE, "--config_file", files, *common, "--output_dir", os.path.join(ckpt, "eval")])
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    from scripts.deploy_app.export import export

    export(ckpt_dir=ckpt, out=os.path.join(ckpt, "deploy"), **TINY)
    return ckpt


@pytest.fixture(scope="module")
def good(demo_cohort):
    """Paths of one demo patient's images (MNI 6 mm) and its cohort row."""
    base = os.path.dirname(demo_cohort)
    row = list(csv.DictReader(open(demo_cohort)))[1]
    return {**row, **{k: os.path.join(base, row[k]) for k in ("ncct", "cta", "b0", "b1000", "adc", "flair")}}


def _save(path: str, array: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def bad_image(kind: str, good: Dict[str, str], folder: str) -> str:
    """Write the bad NCCT ``kind`` into ``folder`` (or return a good file of the wrong kind); return its path."""
    img = nib.load(good["ncct"])
    data, affine = np.asarray(img.dataobj, dtype=np.float32), img.affine
    path = os.path.join(folder, f"{kind}.nii.gz")
    raw = open(good["ncct"], "rb").read()
    if kind == "truncated":
        open(path, "wb").write(raw[: len(raw) // 2])
    elif kind == "empty":
        open(path, "wb").write(b"")
    elif kind == "not_nifti":
        open(path, "wb").write(gzip.compress(b"this is a report, not an image\n"))
    elif kind == "nan":
        _save(path, np.where(data > 40, np.nan, data).astype(np.float32), affine)
    elif kind == "constant":
        _save(path, np.full(data.shape, 30, np.int16), affine)
    elif kind == "two_d":
        _save(path, data[:, :, data.shape[2] // 2].astype(np.int16), affine)
    elif kind == "four_d":
        _save(path, np.stack([data] * 4, -1).astype(np.int16), affine)
    elif kind == "tiny":
        _save(path, data[:4, :4, :4].astype(np.int16), affine)
    elif kind == "shifted":
        moved = affine.copy()
        moved[:3, 3] += 400
        _save(path, data.astype(np.int16), moved)
    elif kind == "other_grid":
        finer = affine.copy()
        finer[:3, :3] /= 2
        _save(path, np.repeat(data, 2, axis=0).astype(np.int16)[:, ::1], finer)
    elif kind == "mr":
        return good["b1000"]
    elif kind == "cta":
        return good["cta"]
    else:
        raise ValueError(kind)
    return path


# kind -> the words the error line must hold (after the file's path)
IMAGE_CASES = {
    "truncated": "NCCT cannot be read as a NIfTI image",
    "empty": "NCCT empty file",
    "not_nifti": "NCCT cannot be read as a NIfTI image",
    "nan": "NCCT holds NaN or infinite values",
    "constant": "NCCT is constant",
    "two_d": "NCCT is 2-D",
    "four_d": "NCCT is 4-D with 4 volumes",
    "tiny": "too small for a head scan",
    "mr": "NCCT does not look like CT in Hounsfield units",
    "cta": "NCCT shows vessel contrast",
    "shifted": "not on the grid the models were trained on",
    "other_grid": "not on the grid the models were trained on",
}


def _assert_refused(result: subprocess.CompletedProcess, words: str, out: str) -> None:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines and lines[-1].startswith("error: ") and words in lines[-1], lines[-3:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not os.path.exists(out) or not os.listdir(out), os.listdir(out)  # nothing half-written


@pytest.mark.parametrize("kind", sorted(IMAGE_CASES))
def test_inference_refuses(kind, models, good, tmp_path):
    ncct = bad_image(kind, good, str(tmp_path))
    out = str(tmp_path / "out")
    cmd = _infer_cmd(models, out, "--ncct", ncct, "--cta", good["cta"])
    result = _run(cmd)
    _assert_refused(result, IMAGE_CASES[kind], out)
    assert ncct in result.stderr.strip().splitlines()[-1]  # the file is named


def test_inference_refuses_an_ncct_given_as_the_cta(models, good, tmp_path):
    out = str(tmp_path / "out")
    cmd = _infer_cmd(models, out, "--ncct", good["ncct"], "--cta", good["ncct"])
    _assert_refused(_run(cmd), f"{good['ncct']}: CTA shows no vessel contrast", out)


@pytest.fixture(scope="module")
def fine(tmp_path_factory):
    """A demo patient at 2 mm: preprocessing resamples into its output grid, and 6 mm inputs would lose the vessel
    contrast there (a scanner's CTA has 1 mm or less)."""
    from scripts.demo.generator import generate

    cohort = generate(
        str(tmp_path_factory.mktemp("fine")), patients=20, seed=5, modalities="ct", spacing=2.0, world="uniform"
    )
    row = next(iter(csv.DictReader(open(cohort))))
    return {k: os.path.join(os.path.dirname(cohort), row[k]) for k in ("ncct", "cta")}


@pytest.mark.parametrize("kind", ["truncated", "nan", "mr", "two_d", "constant", "cta"])
def test_preprocessing_refuses(kind, good, fine, tmp_path):
    ncct = fine["cta"] if kind == "cta" else bad_image(kind, good, str(tmp_path))
    out = str(tmp_path / "case")
    cmd = [
        sys.executable,
        "-m",
        "scripts.preprocess",
        "ct",
        "--ncct",
        ncct,
        "--cta",
        fine["cta"],
        "--out",
        out,
        "--spacing",
        "6",
    ]
    words = IMAGE_CASES[kind].replace("NCCT is 2-D", "NCCT is not a 3-D volume")
    result = _run(cmd)
    _assert_refused(result, words, out)
    assert ncct in result.stderr.strip().splitlines()[-1]


def _table(good: Dict[str, str], demo_cohort: str, change: Callable[[List[Dict[str, str]]], None]) -> List[Dict]:
    rows = list(csv.DictReader(open(demo_cohort)))
    base = os.path.dirname(demo_cohort)
    for row in rows:
        for key in ("ncct", "cta", "b0", "b1000", "adc", "flair"):
            if row.get(key):
                row[key] = os.path.join(base, row[key])
    change(rows)
    return rows


def _write_table(rows: List[Dict], path: str, encoding: str = "utf-8") -> str:
    columns = list(rows[0]) if rows else ["patient_id"]
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _set(row: Dict, **values) -> None:
    row.update(values)


SPLIT_CASES = {
    "duplicate_id": (lambda rows: _set(rows[1], patient_id=rows[0]["patient_id"]), "patient_id"),
    "mtici_2d": (lambda rows: _set(rows[3], mtici_final="2d"), "mtici_final"),
    "impossible_date": (lambda rows: _set(rows[2], procedure_date="2019-02-30"), "procedure_date"),
    "missing_label_columns": (
        lambda rows: [r.pop(k) for r in rows for k in ("mtici_final", "passes")],
        "missing column(s)",
    ),
    "header_only": (lambda rows: rows.__setitem__(slice(1, None), []) or rows[0].update({}), ""),
    "one_outcome_class": (
        lambda rows: [_set(r, passes="1", mtici_first_pass="3", mtici_final="3") for r in rows],
        "one outcome class, nothing to learn",
    ),
    "missing_image": (lambda rows: _set(rows[4], ncct="/nonexistent/ncct.nii.gz"), "ncct"),
}


ROW_CASES = ("duplicate_id", "mtici_2d", "impossible_date", "missing_image")


@pytest.mark.parametrize("case", sorted(SPLIT_CASES) + ["not_utf8"])
def test_split_refuses(case, good, demo_cohort, tmp_path):
    if case == "not_utf8":
        rows = _table(good, demo_cohort, lambda rows: _set(rows[5], sex="M\u00e4nnlich"))
        path, words = _write_table(rows, str(tmp_path / "cohort.csv"), encoding="latin-1"), "is not UTF-8 text"
    elif case == "header_only":
        rows = _table(good, demo_cohort, lambda rows: None)
        path = str(tmp_path / "cohort.csv")
        with open(path, "w") as f:
            f.write(",".join(rows[0]) + "\n")
        words = "no rows"
    else:
        change, words = SPLIT_CASES[case]
        path = _write_table(_table(good, demo_cohort, change), str(tmp_path / "cohort.csv"))
    out = str(tmp_path / "out")
    # a problem of one row excludes that patient (test_cohort.py); --strict true stops at it instead
    strict = ["--strict", "true"] if case in ROW_CASES else []
    split = [sys.executable, "-m", "scripts.data.split", "--cohort", path, "--out", f"{out}/datalist.json", *strict]
    result = _run(split)
    _assert_refused(result, words, out)
    assert path in result.stderr.strip().splitlines()[-1]


def test_evaluation_refuses_a_bad_test_image(models, side_datalist, good, tmp_path):
    data = json.load(open(side_datalist))
    data["test"][0]["ncct"] = bad_image("nan", good, str(tmp_path))
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps(data))
    out = str(tmp_path / "eval")
    ckpt = _copy_models(models, str(tmp_path / "models"))
    cmd = [
        *BUNDLE,
        "--config_file",
        "['configs/train.json','configs/evaluate.json']",
        "--datalist_file",
        str(datalist),
        "--ckpt_dir",
        ckpt,
        *SHAPE,
        "--output_dir",
        out,
    ]
    reason = f"{tmp_path / 'nan.nii.gz'}: NCCT holds NaN or infinite values"
    _assert_refused(_run([*cmd, "--strict", "true"]), reason, out)
    # by default the patient is excluded, named with the reason in the exclusions table and the report
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-2000:]
    excluded = list(csv.DictReader(open(os.path.join(out, "exclusions.csv"))))
    assert excluded == [{"patient_id": data["test"][0]["patient_id"], "reason": reason}]
    assert reason in open(os.path.join(out, "report.md")).read()
    reported = {r["patient_id"] for r in csv.DictReader(open(os.path.join(out, "predictions.csv")))}
    assert data["test"][0]["patient_id"] not in reported and data["test"][1]["patient_id"] in reported


def test_evaluation_refuses_a_folder_without_fold_models(side_datalist, tmp_path):
    out = str(tmp_path / "eval")
    cmd = [
        *BUNDLE,
        "--config_file",
        "['configs/train.json','configs/evaluate.json']",
        "--datalist_file",
        side_datalist,
        "--ckpt_dir",
        str(tmp_path / "no_models"),
        *SHAPE,
        "--output_dir",
        out,
    ]
    _assert_refused(_run(cmd), "no_models", out)


@pytest.mark.parametrize("kind", ["nan", "cta", "shifted"])
def test_deploy_app_refuses(kind, models, good, tmp_path):
    pytest.importorskip("monai.deploy.core", reason="pip install -r requirements-deploy.txt")
    inputs = tmp_path / "input"
    inputs.mkdir()
    bad = bad_image(kind, good, str(tmp_path))
    (inputs / "ncct.nii.gz").write_bytes(open(bad, "rb").read())
    (inputs / "cta.nii.gz").write_bytes(open(good["cta"], "rb").read())
    out = str(tmp_path / "output")
    cmd = [
        sys.executable,
        "-m",
        "scripts.deploy_app",
        "-i",
        str(inputs),
        "-o",
        out,
        "-m",
        os.path.join(models, "deploy"),
        "-w",
        str(tmp_path / "work"),
    ]
    _assert_refused(_run(cmd), IMAGE_CASES[kind], out)


def test_inference_warns_on_a_scan_unlike_the_training_cohort(models, good, side_datalist, tmp_path):
    """Training recorded the cohort's image statistics (input_profile.json); an NCCT calibrated 40 HU too high
    passes every check but gets a warning naming the statistic, the unchanged scan none."""
    profile = json.load(open(os.path.join(models, "input_profile.json")))
    assert profile["patients"] == len(json.load(open(side_datalist))["training"])
    low, high = profile["ranges"]["ncct_tissue_hu"]
    assert 20 < low <= high < 50
    img = nib.load(good["ncct"])
    data = np.asarray(img.dataobj, dtype=np.int16)
    offset = _save(str(tmp_path / "offset.nii.gz"), np.where(data > -200, data + 40, data).astype(np.int16), img.affine)
    rows = {}
    for name, ncct in (("good", good["ncct"]), ("offset", offset)):
        cmd = _infer_cmd(models, str(tmp_path / name), "--patient_id", name, "--ncct", ncct, "--cta", good["cta"])
        result = _run(cmd)
        assert result.returncode == 0, result.stderr[-2000:]
        (rows[name],) = list(csv.DictReader(open(tmp_path / name / "predictions.csv")))
    assert rows["good"]["warning"] == ""
    warning = rows["offset"]["warning"]
    assert warning.startswith("ncct_tissue_hu") and "outside the training range" in warning, warning


def _copy_models(models: str, target: str) -> str:
    import shutil

    return shutil.copytree(models, target, ignore=shutil.ignore_patterns("eval", "deploy", ".lock"))


def test_inference_refuses_a_corrupted_or_mismatched_checkpoint(models, good, tmp_path):
    ckpt = _copy_models(models, str(tmp_path / "models"))
    path = os.path.join(ckpt, "fold1", "model.pt")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    out = str(tmp_path / "out")
    cmd = [
        *BUNDLE,
        "--config_file",
        "configs/inference.json",
        "--ckpt_dir",
        ckpt,
        *SHAPE,
        "--ncct",
        good["ncct"],
        "--cta",
        good["cta"],
        "--output_dir",
        out,
    ]
    _assert_refused(_run(cmd), f"{path}: corrupted or not a model checkpoint", out)
    other = [*cmd[:-2], "--widths", "[8,8,16,16]", "--output_dir", out]
    _assert_refused(_run([c.replace(ckpt, models) for c in other]), "does not fit the configured network", out)


def test_a_second_run_on_a_locked_model_folder_is_refused(models, side_datalist, tmp_path):
    """While one run holds the model folder's lock, evaluation and training on it stop with one line."""
    from scripts.data.io import folder_lock

    ckpt = _copy_models(models, str(tmp_path / "models"))
    before = {f: os.path.getmtime(os.path.join(ckpt, f)) for f in ("cutoffs.json",)}
    common = ["--datalist_file", side_datalist, "--ckpt_dir", ckpt, *SHAPE]
    evaluate = [
        *BUNDLE,
        "--config_file",
        "['configs/train.json','configs/evaluate.json']",
        *common,
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    train = [*BUNDLE, "training", "--config_file", "configs/train.json", *common, "--max_epochs", "1"]
    with folder_lock(ckpt, "test"):
        _assert_refused(
            _run(evaluate),
            f"{ckpt}: in use by another run (.lock is locked); evaluation not started",
            str(tmp_path / "eval"),
        )
        _assert_refused(_run(train), "training not started", str(tmp_path / "none"))
    assert {f: os.path.getmtime(os.path.join(ckpt, f)) for f in before} == before
    assert _run(evaluate).returncode == 0  # the lock is released with its holder


def test_evaluation_that_cannot_write_keeps_the_earlier_outputs(models, side_datalist, tmp_path):
    """A full disk, simulated by a file size limit (RLIMIT_FSIZE, EFBIG): one line, earlier outputs unchanged."""
    import resource
    import signal

    ckpt = _copy_models(models, str(tmp_path / "models"))
    out = str(tmp_path / "eval")
    cmd = [
        *BUNDLE,
        "--config_file",
        "['configs/train.json','configs/evaluate.json']",
        "--datalist_file",
        side_datalist,
        "--ckpt_dir",
        ckpt,
        *SHAPE,
        "--output_dir",
        out,
    ]
    assert _run(cmd).returncode == 0
    before = {
        f: open(os.path.join(out, f), "rb").read()
        for f in sorted(os.listdir(out))
        if os.path.isfile(os.path.join(out, f))
    }

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, preexec_fn=limit)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert (
        result.returncode == 2 and lines[-1].startswith("error: ") and "cannot be written (File too large)" in lines[-1]
    )
    assert "Traceback" not in result.stderr
    after = {
        f: open(os.path.join(out, f), "rb").read()
        for f in sorted(os.listdir(out))
        if os.path.isfile(os.path.join(out, f))
    }
    assert after == before  # every earlier output intact, no temporary file left


PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN4711PHI",
    "PatientBirthDate": "19510203",
    "AccessionNumber": "ACC998877",
    "InstitutionName": "St Example Stroke Unit",
}


def _leaks(texts: List[bytes]) -> List[str]:
    """The identifiers found in any of `texts`. The bare names are three and four letters, which weights and
    compressed images hold by chance (a CI run found "Doe" in one): they are searched in text only, the identifiers of
    eight characters or more everywhere, gzip content unpacked."""
    found = set()
    for text in texts:
        if text[:2] == b"\x1f\x8b":
            text = gzip.decompress(text)
        try:
            text.decode("utf-8")
            words = [*PHI.values(), "Doe", "Jane", "1951-02-03"]
        except UnicodeDecodeError:
            words = [*PHI.values(), "1951-02-03"]
        found |= {w for w in words if w.encode() in text}
    return sorted(found)


def _folder_bytes(folder: str) -> List[bytes]:
    out = []
    for root, _, files in os.walk(folder):
        for name in files:
            out.append(os.path.join(root, name).encode())  # file names too
            out.append(open(os.path.join(root, name), "rb").read())
    return out


def test_no_patient_identifiers_in_any_output(models, good, fine, side_datalist, tmp_path):
    """DICOM series carrying a name, ID, birth date, accession number and institution: inference with
    explanations, preprocessing and a training epoch with TensorBoard leave none of them in any output or log."""
    from tests.dicom_series import write_ct_series

    series = {k: write_ct_series(good[k], str(tmp_path / "dicom" / k), PHI) for k in ("ncct", "cta")}
    texts: List[bytes] = []
    out = str(tmp_path / "infer")
    cmd = _infer_cmd(models, out, "--ncct", series["ncct"], "--cta", series["cta"], "--explain", "true")
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.isfile(os.path.join(out, "predictions.csv")) and os.path.isdir(os.path.join(out, "explanations"))
    texts += [result.stdout.encode(), result.stderr.encode(), *_folder_bytes(out)]
    fine_series = {k: write_ct_series(fine[k], str(tmp_path / "fine" / k), PHI) for k in ("ncct", "cta")}
    case = str(tmp_path / "case")
    result = _run(
        [
            sys.executable,
            "-m",
            "scripts.preprocess",
            "ct",
            "--ncct",
            fine_series["ncct"],
            "--cta",
            fine_series["cta"],
            "--out",
            case,
            "--spacing",
            "6",
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    texts += [result.stdout.encode(), result.stderr.encode(), *_folder_bytes(case)]
    data = json.load(open(side_datalist))
    for item in data["training"][:4]:
        item.update(series)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps(data))
    ckpt = str(tmp_path / "models")
    result = _run(
        [
            *BUNDLE,
            "training",
            "--config_file",
            "configs/train.json",
            "--datalist_file",
            str(datalist),
            "--ckpt_dir",
            ckpt,
            *SHAPE,
            "--fold",
            "0",
            "--max_epochs",
            "1",
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert any("tfevents" in name for _, _, files in os.walk(ckpt) for name in files)  # TensorBoard written
    texts += [result.stdout.encode(), result.stderr.encode(), *_folder_bytes(ckpt)]
    assert _leaks([b"".join(open(os.path.join(series["ncct"], f), "rb").read() for f in os.listdir(series["ncct"]))])
    assert _leaks(texts) == []


@pytest.mark.parametrize("kind", ["nan", "cta", "other_grid"])
def test_monailabel_task_refuses(kind, models, good, tmp_path):
    """The MONAI Label task (in process: its server needs torchvision, which has no build for the pinned CPU torch
    here) refuses a bad scan with the same line, and warns on none of the good ones."""
    pytest.importorskip("monailabel", reason="pip install --no-deps -r requirements-monailabel.txt")
    from scripts import BundleInputError
    from scripts.monailabel_app.outcome_task import OutcomeInferTask

    task = OutcomeInferTask(ROOT, ckpt_dir=models, overrides=TINY)
    ok = task({"image": good["ncct"], "cta": good["cta"]})[1]
    assert 0 < ok["score"] < 1 and ok["warning"] == ""
    bad = str(tmp_path / f"{kind}_scan.nii.gz")  # a copy: the task looks for the CTA beside the image
    open(bad, "wb").write(open(bad_image(kind, good, str(tmp_path)), "rb").read())
    with pytest.raises(BundleInputError, match=f"{bad}: {IMAGE_CASES[kind]}"):
        task({"image": bad, "cta": good["cta"]})


@pytest.mark.parametrize("form", ["cohort", "datalist_file"])
def test_inference_refuses_a_cohort_or_datalist_with_one_bad_scan(
    form, models, good, demo_cohort, side_datalist, tmp_path
):
    """The other two input forms of configs/inference.json: one bad scan among many stops the run with --strict true,
    naming it; by default that patient gets no probability, the reason instead, and the others are predicted."""
    bad = bad_image("nan", good, str(tmp_path))
    if form == "cohort":
        rows = _table(good, demo_cohort, lambda rows: _set(rows[2], ncct=bad))
        source = _write_table(rows, str(tmp_path / "cohort.csv"))
    else:
        data = json.load(open(side_datalist))
        data["test"][-1]["ncct"] = bad
        source = str(tmp_path / "datalist.json")
        open(source, "w").write(json.dumps(data))
    out = str(tmp_path / "out")
    cmd = _infer_cmd(models, out, f"--{form}", source)
    _assert_refused(_run([*cmd, "--strict", "true"]), f"{bad}: NCCT holds NaN or infinite values", out)
    result = _run(cmd)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(os.path.join(out, "predictions.csv"))))
    refused = [r for r in rows if r["warning"].startswith("excluded: ")]
    assert len(refused) == 1 and refused[0]["probability"] == "" and f"{bad}: NCCT holds NaN" in refused[0]["warning"]
    assert len(rows) > 1 and all(0 <= float(r["probability"]) <= 1 for r in rows if r not in refused)
    excluded = list(csv.DictReader(open(os.path.join(out, "exclusions.csv"))))
    assert [e["patient_id"] for e in excluded] == [refused[0]["patient_id"]]


def test_models_of_another_datalist_are_refused(models, side_datalist, datalist_2fold, tmp_path):
    """Fold models remember the datalist they were trained on (trained_on.json): training (which would skip the
    finished folds) and evaluation (whose outer folds would hold the models' own training patients) on another
    datalist stop with one line."""
    ckpt = _copy_models(models, str(tmp_path / "models"))
    recorded = json.load(open(os.path.join(ckpt, "trained_on.json")))
    assert recorded["patients"] == len(json.load(open(side_datalist))["training"])
    common = ["--datalist_file", datalist_2fold, "--ckpt_dir", ckpt, *SHAPE]
    train = [*BUNDLE, "training", "--config_file", "configs/train.json", *common, "--max_epochs", "1"]
    _assert_refused(_run(train), f"{ckpt}: holds fold models trained on another datalist", str(tmp_path / "none"))
    out = str(tmp_path / "eval")
    evaluate = [
        *BUNDLE,
        "--config_file",
        "['configs/train.json','configs/evaluate.json']",
        *common,
        "--output_dir",
        out,
    ]
    _assert_refused(_run(evaluate), "holds fold models trained on another datalist", out)
    assert json.load(open(os.path.join(ckpt, "trained_on.json"))) == recorded


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "unet"], "--model unet: use one of clot_readings, vessel_mask, mnt_dl, mnt_dl_head"),
        (["--unlabeled", "absent.csv"], "--unlabeled absent.csv: table not found"),
        (
            ["--unlabeled", "POOL"],
            "--model clot_readings has no encoder to pretrain; use --model mnt_dl (the readings) or mnt_dl_head",
        ),
    ],
)
def test_demo_job_refuses(args, words, demo_cohort, tmp_path):
    """`python -m scripts.demo` checks its options before generating or training anything."""
    args = [demo_cohort if a == "POOL" else a for a in args]
    out = str(tmp_path / "job")
    _assert_refused(_run([sys.executable, "-m", "scripts.demo", "--out", out, *args]), words, out)
