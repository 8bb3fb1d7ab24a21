"""Radiomics baseline: finite features on a generated case, an asymmetry the features see, and model selection
that never sees the inner-validation, outer-fold or test patients."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

import scripts.evaluation.radiomics as radiomics
from scripts.data.split import fold_data, load_datalist


@pytest.fixture(scope="module")
def datalist(datalist_2fold):
    return load_datalist(datalist_2fold)


def test_features_are_finite_and_see_the_hypoperfused_side(datalist):
    item = datalist["training"][0]
    feats = radiomics.patient_features(item, ["ncct", "cta"])
    values = np.array(list(feats.values()))
    assert len(feats) == 2 * 3 * (10 + 6 + 3) and np.isfinite(values).all()
    # the demo draws reduced CTA enhancement in the affected territory. The two hemispheres' masks differ by a fixed
    # amount on the coarse test grid, so compare right- and left-side occlusions: averaged over both sides, the
    # affected territory's mean is below the contralateral one's (the fixed left-right difference cancels)
    gaps = {"L": [], "R": []}
    for other in datalist["training"]:
        f = radiomics.patient_features(other, ["cta"])
        gaps[other["side"]].append(f["cta_affected_mean"] - f["cta_contralateral_mean"])
    assert gaps["L"] and gaps["R"] and np.mean(gaps["L"]) + np.mean(gaps["R"]) < 0
    img = nib.as_closest_canonical(nib.load(item["cta"]))
    masks = radiomics.region_masks(img.shape, img.affine, item["side"])
    assert not (masks["affected"] & masks["contralateral"]).any()
    assert (masks["affected"] <= masks["brain"] | masks["affected"]).all() and masks["affected"].sum() > 10


def test_glcm_by_hand():
    image = np.zeros((4, 4, 1), dtype=np.float32)
    image[:, 2:] = 80.0  # two halves: level 1 and level 32 in the window 0..80
    mask = np.ones_like(image, dtype=bool)
    feats = radiomics.glcm_features(image, mask, (0.0, 80.0))
    # horizontal neighbours along axis 1: per row 2 equal pairs of level 1, 1 pair (1, 32), ...; contrast is the
    # mean over 4 angles of sum P(i, j) (i - j)^2; with symmetric=False as in graycomatrix's default
    levels = np.array([[1, 1, 32, 32]] * 4)
    expected = []
    for dr, dc in ((0, 1), (-1, 1), (-1, 0), (-1, -1)):
        pairs = [
            (levels[r, c], levels[r + dr, c + dc])
            for r in range(4)
            for c in range(4)
            if 0 <= r + dr < 4 and 0 <= c + dc < 4
        ]
        expected.append(np.mean([(a - b) ** 2 for a, b in pairs]))
    assert feats["glcm_contrast"] == pytest.approx(np.mean(expected))


class RecordingSearch(radiomics.GridSearchCV):
    """The real GridSearchCV, recording the rows it is fitted on."""

    seen: list = []

    def fit(self, X, y=None, **params):
        RecordingSearch.seen.append(np.array(X))
        return super().fit(X, y, **params)


def test_model_selection_sees_only_the_training_portion(datalist, tmp_path, monkeypatch):
    real = radiomics.model_search

    def recording(seed=0, inner_folds=5):
        search = real(seed, inner_folds)
        return RecordingSearch(search.estimator, search.param_grid, scoring="roc_auc", cv=3)

    monkeypatch.setattr(radiomics, "model_search", recording)
    RecordingSearch.seen = []
    metrics = radiomics.evaluate_radiomics(datalist, ["ncct", "cta"], str(tmp_path / "eval"), str(tmp_path / "m"))
    ids, _, x = radiomics.feature_matrix(datalist["training"] + datalist["test"], ["ncct", "cta"])
    row = {tuple(np.nan_to_num(v)): pid for pid, v in zip(ids, x)}
    assert len(RecordingSearch.seen) == 2
    for k, seen in enumerate(RecordingSearch.seen):
        fitted = {row[tuple(v)] for v in seen}
        assert fitted == {d["patient_id"] for d in fold_data(datalist, k, "train")}
        held = fold_data(datalist, k, "inner_val") + fold_data(datalist, k, "outer") + datalist["test"]
        assert not fitted & {d["patient_id"] for d in held}
    assert 0.0 <= metrics["cv"]["summary"]["roc_auc"]["mean"] <= 1.0
    assert os.path.isfile(tmp_path / "eval" / "metrics.json") and os.path.isfile(tmp_path / "m" / "cutoffs.json")
