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
