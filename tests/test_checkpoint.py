"""Crash-safe checkpoints: a write that dies half-way leaves the previous checkpoint complete and nothing partial."""

from __future__ import annotations

import glob
import os

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from scripts.training.checkpoint import CrashSafeCheckpointSaver


class _Dies:
    """Pickling fails: stands for a process that dies while ``torch.save`` is writing."""

    def __reduce__(self):
        raise RuntimeError("killed while writing")


class _Model:
    def __init__(self) -> None:
        self.dying = False
        self.weight = torch.arange(10000.0)

    def state_dict(self) -> dict:
        return {"weight": self.weight, "tail": _Dies() if self.dying else 0}

    def load_state_dict(self, state: dict) -> None:
        self.weight = state["weight"]


def _run_until_a_write_dies(saver_class, folder: str, **saver_args) -> None:
    """Three epochs; the checkpoint written at the end of epoch 2 dies half-way."""
    model = _Model()
    engine = Engine(lambda e, b: None)
    engine.state.metrics = {}

    @engine.on(Events.EPOCH_COMPLETED)
    def _score(e):  # improves every epoch, so the key-metric saver writes every epoch
        e.state.metrics["auc"] = float(e.state.epoch)
        model.dying = e.state.epoch == 2

    saver_class(save_dir=folder, save_dict={"model": model, "trainer": engine}, **saver_args).attach(engine)
    with pytest.raises(RuntimeError, match="killed while writing"):
        engine.run(range(1), max_epochs=3)


def _loadable(path: str) -> bool:
    try:
        state = torch.load(path, weights_only=True)
        return torch.equal(state["model"]["weight"], torch.arange(10000.0))
    except Exception:
        return False


@pytest.mark.parametrize("saver_class", [CheckpointSaver, CrashSafeCheckpointSaver])
def test_a_dying_resume_write_keeps_the_previous_checkpoint(saver_class, tmp_path):
    _run_until_a_write_dies(saver_class, str(tmp_path), file_prefix="resume", save_interval=1, n_saved=1)
    kept = [p for p in glob.glob(str(tmp_path / "resume_checkpoint_epoch=*.pt")) if _loadable(p)]
    if saver_class is CheckpointSaver:  # MONAI's: the epoch-1 file is deleted first, the epoch-2 file is truncated
        assert not kept
        return
    assert [os.path.basename(p) for p in kept] == ["resume_checkpoint_epoch=1.pt"]
    assert sorted(os.listdir(tmp_path)) == ["resume_checkpoint_epoch=1.pt"]  # no partial file left


@pytest.mark.parametrize("saver_class", [CheckpointSaver, CrashSafeCheckpointSaver])
def test_a_dying_best_model_write_keeps_the_previous_model(saver_class, tmp_path):
    args = {"save_key_metric": True, "key_metric_name": "auc", "key_metric_filename": "model.pt"}
    _run_until_a_write_dies(saver_class, str(tmp_path), **args)
    assert _loadable(str(tmp_path / "model.pt")) is (saver_class is CrashSafeCheckpointSaver)


def test_a_resumed_saver_replaces_a_missing_best_model(tmp_path):
    """After a resume the saver believes model.pt exists (``track_best`` gives it back); if it is gone, the next
    better model is written instead of failing to delete it."""
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(auc=2.0))
    args = {"save_key_metric": True, "key_metric_name": "auc", "key_metric_filename": "model.pt"}
    saver = CrashSafeCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": _Model(), "trainer": engine}, **args)
    saver.load_state_dict({"_saved": [(1.0, "model.pt")]})
    saver.attach(engine)
    engine.run(range(1), max_epochs=1)
    assert _loadable(str(tmp_path / "model.pt"))


def test_leftover_partial_files_are_removed(tmp_path):
    (tmp_path / ".tmp-abc123resume_checkpoint_epoch=3.pt").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "notes.txt").write_text("kept")
    CrashSafeCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": _Model()}, save_interval=1)
    assert os.listdir(tmp_path) == ["notes.txt"]
