"""The all-folds runner: fold selection, re-invocation arguments, resume-checkpoint choice."""

from __future__ import annotations

import pytest

from scripts import BundleInputError
from scripts.training.kfold import _cli_arguments, fold_list, resume_checkpoint

MAIN = "/env/lib/python3.11/site-packages/monai/bundle/__main__.py"


def test_fold_list():
    assert fold_list("all", 5) == [0, 1, 2, 3, 4]
    assert fold_list(3, 5) == [3] and fold_list("2", 5) == [2]
    with pytest.raises(BundleInputError, match="folds 0..4"):
        fold_list(5, 5)
    with pytest.raises(BundleInputError, match="use an integer"):
        fold_list("two", 5)


def test_cli_arguments_drop_run_id_and_fold():
    argv = [MAIN, "run", "training", "--config_file", "['a.json','b.json']", "--fold", "2", "--max_epochs", "3"]
    assert _cli_arguments(argv) == ["--config_file", "['a.json','b.json']", "--max_epochs", "3"]
    argv = [MAIN, "run", "--run_id", "training", "--fold=all", "--config_file", "c.json"]
    assert _cli_arguments(argv) == ["--config_file", "c.json"]
    with pytest.raises(BundleInputError, match="needs the command line"):
        _cli_arguments(["pytest", "tests"])


def test_resume_checkpoint_is_the_latest_epoch(tmp_path):
    assert resume_checkpoint(str(tmp_path)) is None
    for epoch in (2, 10, 9):
        (tmp_path / f"resume_checkpoint_epoch={epoch}.pt").write_bytes(b"")
    assert resume_checkpoint(str(tmp_path)).endswith("epoch=10.pt")


def test_optimistic_overlay_validates_on_the_outer_fold_and_never_mixes(datalist_2fold, tmp_path):
    """``configs/experiments/optimistic.json`` (the papers' protocol) chooses the checkpoint on the reported outer fold
    and keeps its models apart; a folder whose finished folds were validated otherwise is refused."""
    import json
    import os

    from monai.bundle import ConfigParser

    from scripts.data.split import fold_data, load_datalist
    from scripts.training.kfold import train_folds, validated_on
    from tests.conftest import ROOT

    def parsed(*overlays):
        parser = ConfigParser()
        parser.read_config([os.path.join(ROOT, "configs", f) for f in ("train.json", *overlays)])
        parser.update({"datalist_file": datalist_2fold, "fold": 1, "bundle_root": str(tmp_path)})
        return parser

    datalist = load_datalist(datalist_2fold)
    outer = sorted(d["patient_id"] for d in fold_data(datalist, 1, "outer"))
    inner = sorted(d["patient_id"] for d in fold_data(datalist, 1, "inner_val"))
    for overlays, expected, folder in (
        ((), inner, "models"),
        (("experiments/optimistic.json",), outer, "models_optimistic"),
    ):
        parser = parsed(*overlays)
        assert sorted(d["patient_id"] for d in parser.get_parsed_content("validate#dataset#data")) == expected
        assert parser.get_parsed_content("ckpt_dir") == os.path.join(str(tmp_path), folder)
    ckpt = tmp_path / "mixed"
    (ckpt / "fold0").mkdir(parents=True)
    (ckpt / "fold0" / "done.json").write_text(json.dumps({"epochs": 1, "validated_on": "inner_val"}))
    assert validated_on(str(ckpt), 2) == ["inner_val", "inner_val"]
    with pytest.raises(BundleInputError, match="validated on 'inner_val', this training validates on 'outer'"):
        train_folds(0, 2, str(ckpt), argv=[MAIN, "run", "training"], validation_part="outer")


def test_ensemble_preprocesses_each_case_once_for_all_fold_models(tmp_path):
    """Raw-scan inference time: the fold models are loaded once and every case's transforms run once for all of them
    (they ran once per fold model); the ensemble equals the mean of the folds' own predictions."""
    import json
    import os

    import numpy as np
    import torch

    from scripts.inference.predict import ensemble_predict, predict
    from scripts.training.kfold import load_weights

    def network() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))

    for k in range(3):
        torch.manual_seed(k)
        os.makedirs(tmp_path / f"fold{k}")
        torch.save({"model": network().state_dict()}, tmp_path / f"fold{k}" / "model.pt")
    (tmp_path / "cutoffs.json").write_text(json.dumps({"0": 0.5, "1": 0.5, "2": 0.5, "ensemble": 0.4}))
    calls = []

    def preprocessing(item: dict) -> dict:
        calls.append(item["patient_id"])
        return {"image": torch.full((1, 4), float(item["value"]))}

    data = [{"patient_id": f"p{i}", "value": i - 2.0} for i in range(5)]
    mean, sd, cutoff = ensemble_predict(network(), preprocessing, data, str(tmp_path), "cpu", batch_size=2)
    assert sorted(calls) == [d["patient_id"] for d in data] and cutoff == 0.4
    folds = [
        predict(
            load_weights(network(), str(tmp_path / f"fold{k}" / "model.pt")), [preprocessing(d) for d in data], "cpu"
        )
        for k in range(3)
    ]
    assert np.allclose(mean, np.mean(folds, axis=0)) and np.allclose(sd, np.std(folds, axis=0, ddof=1))
