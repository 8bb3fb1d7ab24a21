"""Helpers shared by the tests: the bundle's command line and one demo patient's inference flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List

from tests.conftest import ROOT

BUNDLE = [sys.executable, "-m", "monai.bundle", "run"]


def run_bundle(*args: str, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ARGS`` from the bundle root, its output captured."""
    return subprocess.run([*BUNDLE, *args], cwd=ROOT, capture_output=True, text=True, env=env)


def config_list(*files: str) -> str:
    """The ``--config_file`` value of these config files: ``"['configs/a.json','configs/b.json']"``."""
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def patient_flags(row: Dict[str, str], base: str, clinical: bool = True) -> List[str]:
    """The inference flags of one demo cohort row as patient "P1": its NCCT and CTA (paths relative to ``base``), and
    with ``clinical`` its occlusion site, side and clinical values (age, IVT, NIHSS)."""
    flags = ["--ncct", os.path.join(base, row["ncct"]), "--cta", os.path.join(base, row["cta"]), "--patient_id", "P1"]
    if clinical:
        values = json.dumps({"age": float(row["age"]), "ivt": int(row["ivt"]), "nihss": int(row["nihss"])})
        flags += ["--location", row["location"], "--side", row["side"], "--clinical", values.replace(" ", "")]
    return flags
