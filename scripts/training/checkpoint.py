"""Checkpoints that survive a SIGKILL at any instant: MONAI's CheckpointSaver with atomic writes, deletions after.

MONAI's ``CheckpointSaver`` writes in place (ignite ``DiskSaver(atomic=False)``), and ignite's ``Checkpoint`` deletes
the older file before it writes the new one. A process killed while a checkpoint is written therefore leaves a
truncated ``resume_checkpoint_epoch=k.pt`` (the resumed run fails to load it) or no resume checkpoint at all (the fold
starts again), and a truncated or missing ``model.pt`` (the resumed run's next better model fails to delete it).
"""

from __future__ import annotations

import glob
import os
import stat
from typing import Any, List, Mapping

import torch
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver

from scripts.data.io import atomic_write

PARTIAL = ".tmp-"  # the prefix of scripts.data.io.atomic_write's temporary files


class AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler: each file written to a temporary name and renamed (readable by group and others, as
    MONAI's are); a file ``Checkpoint`` asks to delete is deleted only after the next file is complete.

    Args:
        dirname: folder of the checkpoints.
        filename: fixed file name (MONAI's ``key_metric_filename``/``final_filename``), or None for ignite's names.
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        self.dirname = str(dirname)
        self.filename = filename
        self._pending: List[str] = []
        for leftover in glob.glob(os.path.join(self.dirname, PARTIAL + "*.pt")):  # from a killed write
            os.remove(leftover)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        name = self.filename or filename

        def _write(tmp: str) -> None:
            torch.save(checkpoint, tmp)
            os.chmod(tmp, os.stat(tmp).st_mode | stat.S_IRGRP | stat.S_IROTH)

        atomic_write(os.path.join(self.dirname, name), _write)
        for old in self._pending:
            if old != name and os.path.exists(os.path.join(self.dirname, old)):
                os.remove(os.path.join(self.dirname, old))
        self._pending = []

    def remove(self, filename: str) -> None:
        self._pending.append(self.filename or filename)


class CrashSafeCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` (same arguments) whose files are written by :class:`AtomicDiskSaver`: at every
    instant each checkpoint on disk is complete, and the newest complete resume checkpoint is never deleted first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                handler = checkpoint.save_handler
                checkpoint.save_handler = AtomicDiskSaver(str(handler.dirname), handler.filename)
