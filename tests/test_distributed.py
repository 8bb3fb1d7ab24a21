"""Multi-process training with torchrun on CPU (gloo): disjoint data per rank, rank-0-only outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from scripts.data.split import fold_data
from tests.conftest import ROOT


def _torchrun(port: int) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]


def test_ranks_train_on_disjoint_data_and_rank0_saves(datalist_2fold, tmp_path):
    out = tmp_path / "seen"
    out.mkdir()
    cmd = _torchrun(29531) + [os.path.join(ROOT, "tests", "distributed_worker.py"), datalist_2fold]
    cmd += [str(tmp_path / "m"), str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.load(open(out / f"rank{r}.json")) for r in (0, 1)]
    data = json.load(open(datalist_2fold))
    train_ids = {d["patient_id"] for d in fold_data(data, 0, "train")}
    per_epoch = [len(r["seen"]) // r["epochs"] for r in ranks]
    first_epoch = [set(r["seen"][:n]) for r, n in zip(ranks, per_epoch)]
    assert not first_epoch[0] & first_epoch[1]  # DistributedSampler: each rank its own half
    assert first_epoch[0] | first_epoch[1] <= train_ids
    assert len(first_epoch[0] | first_epoch[1]) >= len(train_ids) - 2 * 4  # drop_last may skip a batch per rank
    fold_dir = tmp_path / "m" / "fold0"
    assert sorted(os.listdir(fold_dir)) == ["done.json", "model.pt", "tensorboard"]
    assert len({name.split(".")[-2] for name in os.listdir(fold_dir / "tensorboard")}) == 1  # one process wrote


def test_torchrun_training_id_trains_all_folds(datalist_2fold, tmp_path):
    ckpt = str(tmp_path / "models")
    cmd = _torchrun(29532) + ["-m", "monai.bundle", "run", "training", "--datalist_file", datalist_2fold]
    cmd += ["--config_file", "['configs/train.json','configs/multi_gpu_train.json']", "--ckpt_dir", ckpt]
    cmd += ["--max_epochs", "1", "--spatial_size", "[24, 24]", "--num_slices", "10", "--widths", "[4, 8, 8, 16]"]
    cmd += ["--num_heads", "2"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for fold in (0, 1):
        assert json.load(open(os.path.join(ckpt, f"fold{fold}", "done.json")))["epochs"] == 1
