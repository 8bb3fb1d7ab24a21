"""Run by tests/test_distributed.py under torchrun: one fold with the multi-GPU overlay, recording the
patient ids each rank trains on to ``<out>/rank<r>.json``."""

from __future__ import annotations

import json
import os
import sys

from ignite.engine import Events
from monai.bundle import ConfigWorkflow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(datalist: str, ckpt_dir: str, out: str) -> None:
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    wf = ConfigWorkflow(
        config_file=["configs/train.json", "configs/multi_gpu_train.json"],
        meta_file="configs/metadata.json",
        logging_file="configs/logging.conf",
        workflow_type="train",
        run_id="train_fold",
        fold=0,
        datalist_file=datalist,
        ckpt_dir=ckpt_dir,
        max_epochs=2,
        spatial_size=[24, 24],
        num_slices=10,
        widths=[4, 8, 8, 16],
        num_heads=2,
    )
    wf.initialize()
    from scripts.training.kfold import init_distributed

    init_distributed("gloo", 0)  # before the trainer (its DistributedSampler needs the group); train_fold reuses it
    seen: list = []
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.extend(e.state.batch["patient_id"]))
    wf.run()
    import torch.distributed as dist

    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump({"seen": seen, "epochs": trainer.state.epoch}, f)
    wf.finalize()


if __name__ == "__main__":
    main(*sys.argv[1:4])
    # Leave without interpreter finalization: on CPU (gloo) a rank now and then aborts there with "terminate called
    # without an active exception" after its work is done and the group destroyed (seen in CI, about 1 run in 15;
    # pytorch/pytorch#179291 describes Gloo threads meeting interpreter teardown). The fold launcher tolerates it
    # the same way (scripts/training/kfold.train_folds: a fold recorded before a teardown crash counts as trained).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
