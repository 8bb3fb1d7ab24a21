"""One raw case to ``predictions.csv`` as soon as a fresh process can: ``python -m scripts.inference.quick``.

It takes the arguments of ``python -m monai.bundle run`` (``--config_file`` defaults to ``configs/inference.json`` +
``configs/inference_raw.json``) and runs that very bundle workflow in this process. Before it imports MONAI (``import
monai`` loads every MONAI submodule: about a third of a one-case run on 2 cores), it starts the case's preprocessing
(:func:`scripts.preprocess.cohort.preprocess_case`) in a child process that imports neither MONAI nor torch. The
workflow meanwhile imports MONAI, builds the network and loads the fold models (``fold_models`` is resolved before
``data``); its own ``preprocess_items`` then waits on the case folder's lock
(:func:`scripts.preprocess.case_folder.case_lock`) and keeps the folder the child wrote, which counts only when it
was made from the same scans with the same settings (its fingerprint). So the answer is the bundle's answer in every
case: a guess of the child that does not match (another spacing, other image keys) only costs the time of doing it
again, and a scan the child cannot preprocess is preprocessed again by the workflow, which reports it in one line.

Only a single case given as image paths (``--ncct``/``--cta``, ``--b0``/...) with ``configs/inference_raw.json`` is
started early; anything else (a cohort, a datalist, a DICOM study) runs exactly as ``python -m monai.bundle run``
would.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import json
import os
import re
import runpy
import signal
import subprocess
import sys
from typing import Any, Dict, List, Sequence

DEFAULT_CONFIGS = "['configs/inference.json','configs/inference_raw.json']"
RAW_CONFIG = "inference_raw.json"
# the child is the critical path (it ends about 4 s after this process has imported MONAI and loaded the models);
# where allowed, it gets the larger share of the cores while both run
CHILD_NICE = -5


def bundle_arguments(argv: Sequence[str]) -> Dict[str, str]:
    """``{key: value}`` of the ``--key value`` / ``--key=value`` pairs of a ``monai.bundle run`` command line (a
    flag without a value maps to ``"True"``, as python-fire reads it)."""
    found: Dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            if not eq:
                value = "True"
                if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    value = argv[i + 1]
                    i += 1
            found[key.replace("-", "_")] = value
        i += 1
    return found


def _config_files(value: str) -> List[str]:
    try:
        files = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        files = value
    return [files] if isinstance(files, str) else [str(f) for f in files]


def _value(files: Sequence[str], args: Dict[str, str], key: str, default: Any = None, depth: int = 0) -> Any:
    """The value of ``key`` as the workflow would see it, when it can be known without MONAI: the command line's,
    else the last config file's, when that is a plain value or a path of the form ``"$@other + '/suffix'"`` (the
    configs' ``output_dir``, ``ckpt_dir``, ``preprocessed_dir``); None otherwise (an expression: do not guess)."""
    if key in args:
        try:
            return ast.literal_eval(args[key])
        except (ValueError, SyntaxError):
            return args[key]
    value = default
    for path in files:
        try:
            with open(path) as f:
                config = json.load(f)
        except (OSError, ValueError):
            return None  # a YAML or unreadable config: do not guess
        value = config.get(key, value)
    if not isinstance(value, str) or value[:1] not in "$@%":
        return value
    joined = re.fullmatch(r"\$@(\w+) \+ '([^']*)'", value)
    if joined is None or depth > 3:
        return None
    base = _value(files, args, joined.group(1), None, depth + 1)
    return base + joined.group(2) if isinstance(base, str) else None


def early_job(argv: Sequence[str]) -> Dict[str, Any] | None:
    """The preprocessing job of the one raw case that ``argv`` asks for (``preprocess_case``'s arguments), or None
    when it is not one raw case given as image paths with ``configs/inference_raw.json``."""
    from scripts.data.volume_checks import grid_spacing, read_grid
    from scripts.preprocess.cohort import MODALITY_INPUTS, case_dir, raw_settings

    args = bundle_arguments(argv)
    files = _config_files(args.get("config_file", DEFAULT_CONFIGS))
    if not any(os.path.basename(f) == RAW_CONFIG for f in files):
        return None
    if any(args.get(k) not in (None, "None") for k in ("cohort", "datalist_file", "study")):
        return None
    image_keys, patient_id = _value(files, args, "image_keys"), _value(files, args, "patient_id")
    ckpt_dir, preprocessed = _value(files, args, "ckpt_dir"), _value(files, args, "preprocessed_dir")
    if not isinstance(image_keys, list) or not all(isinstance(v, str) for v in (patient_id, ckpt_dir, preprocessed)):
        return None
    modality = "ct" if set(image_keys) & set(MODALITY_INPUTS["ct"]) else "mr"
    row = {"patient_id": patient_id, **{k: args[k] for k in MODALITY_INPUTS[modality] if k in args}}
    if MODALITY_INPUTS[modality][0] not in row or not all(os.path.exists(row[k]) for k in row if k != "patient_id"):
        return None  # the workflow names what is missing
    try:
        spacing = grid_spacing(read_grid(ckpt_dir), default=1.0)
        out = case_dir(preprocessed, patient_id, modality)
    except Exception:  # noqa: BLE001 - a broken grid.json or patient_id: the workflow reports it
        return None
    return {"row": row, "modality": modality, "out": out, "settings": raw_settings(image_keys, spacing)}


def run_job(job: str) -> None:
    """Child process: preprocess the case of ``job`` (JSON of :func:`early_job`); SIGTERM ends it cleanly (the case
    folder is written all at once or not at all)."""
    from scripts.preprocess.cohort import preprocess_case

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    spec = json.loads(job)
    preprocess_case(spec["row"], spec["modality"], spec["out"], spec["settings"])


def main(argv: Sequence[str] | None = None) -> None:
    """Start the early preprocessing (when there is one raw case), then ``python -m monai.bundle run`` with ``argv``
    in this process; the child is ended with the workflow."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config_file" not in argv and not any(a.startswith("--config_file=") for a in argv):
        argv = ["--config_file", DEFAULT_CONFIGS, *argv]
    job = early_job(argv)
    child = None
    if job is not None:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from scripts.inference.quick import run_job; run_job(sys.argv[1])",
                json.dumps(job),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=os.getcwd(),
        )
        with contextlib.suppress(OSError):  # only where a priority may be raised (root with CAP_SYS_NICE)
            os.setpriority(os.PRIO_PROCESS, child.pid, CHILD_NICE)
    try:
        sys.argv = ["monai.bundle", "run", *argv]
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    finally:
        if child is not None and child.poll() is None:
            child.terminate()  # the workflow ended first (an error before it needed the case)
            child.wait()
    # done: predictions.csv is written and printed. Run the atexit handlers (temporary DICOM folders, logging) and
    # leave without tearing down every module and tensor one by one, which takes 1-2 s of a one-case run on 2 cores
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
