"""Shared fixtures: a small generated demo cohort (real MNI anatomy, coarse grid) and its datalist."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a fold-model folder without grid.json for tests that parse the configs' preprocessing: the default ckpt_dir is the
# checkout's models/, where a trained built-in demo (README command 1) leaves its 2 mm grid.json
NO_MODELS = tempfile.mkdtemp(prefix="no_fold_models_")
atexit.register(shutil.rmtree, NO_MODELS, True)
SHARED = os.path.join(ROOT, "..", "shared", "data")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CSV path of a 40-patient CT+MR demo cohort on a 6 mm grid, with the hypoperfused region's CTA enhancement
    loss at 0.9 instead of the demo's faint 0.4, so that the occlusion side (``side_datalist``) is visible at 6 mm."""
    from scripts.demo.generator import generate

    out = tmp_path_factory.mktemp("cohort")
    return generate(
        str(out), patients=40, seed=3, modalities="ct,mr", spacing=6.0, hypoperfusion_contrast=0.9, world="uniform"
    )


@pytest.fixture(scope="session")
def demo_images(demo_cohort: str) -> dict:
    """The first demo patient's image paths (NCCT, CTA and the MR sequences), absolute."""
    import csv

    with open(demo_cohort) as f:
        first = next(iter(csv.DictReader(f)))
    base = os.path.dirname(demo_cohort)
    return {k: os.path.join(base, v) for k, v in first.items() if k in ("ncct", "cta", "adc", "b1000", "flair")}


@pytest.fixture(scope="session")
def datalist_2fold(demo_cohort: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-fold datalist of the demo cohort (test set: procedures from 2020-01-01)."""
    from scripts.data.split import write_datalist

    out = tmp_path_factory.mktemp("datalist") / "datalist.json"
    return write_datalist(demo_cohort, str(out), folds=2, seed=0, inner_val=0.25)


@pytest.fixture(scope="session")
def side_datalist(demo_cohort: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-fold datalist whose label is the occlusion side (1 = right): a task visible in the images (the
    hypoperfused hemisphere on CTA) that a tiny network fits within a test's budget."""
    import json

    from scripts.data.cohort import read_cohort
    from scripts.data.split import make_datalist

    rows = read_cohort(demo_cohort)
    for row in rows:
        row["fpe"] = int(row["side"] == "R")
    data = make_datalist(rows, label="fpe", folds=2, seed=0, inner_val=0.25)
    path = tmp_path_factory.mktemp("side") / "datalist.json"
    path.write_text(json.dumps(data))
    return str(path)
