"""Where a training step's time goes: data loading vs the model, and whether epochs after the first load or resample.

python benchmarks/data_path.py --dataset_dir demo [--datalist_file demo/datalist.json] [--epochs 3] [--fold 0]
    [--configs train.json,clot_readings.json] [--num_workers 0]

Runs ``train_fold`` of the given configs in-process (the README main job's overlays by default), times each
iteration's wait for the DataLoader (ignite's ``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED``) and its processing
(``ITERATION_STARTED`` to ``ITERATION_COMPLETED``: forward, loss, backward, step) and counts the calls
of MONAI's loading and resampling transforms (``LoadImage``, ``Orientation``, ``Spacing``, ``Resize``,
``SpatialResample``) from the start of epoch 2 to the end: 0 means the cache (``CacheDataset``, ``cache_rate`` 1.0)
serves every epoch after the first.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import defaultdict

import fire
import numpy as np
from ignite.engine import Events

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

HEAVY = ("LoadImage", "Orientation", "Spacing", "Resize", "SpatialResample")


def main(
    dataset_dir: str = "demo",
    datalist_file: str = "",
    epochs: int = 3,
    fold: int = 0,
    configs: str = "train.json,clot_readings.json",
    num_workers: int = 0,
) -> None:
    """Print the data-vs-model split per epoch and the loading/resampling calls after epoch 1."""
    import monai.transforms
    from monai.bundle import ConfigWorkflow

    calls, counting = {name: 0 for name in HEAVY}, [False]
    for name in HEAVY:
        cls = getattr(monai.transforms, name)

        def _counted(self, *args, _original=cls.__call__, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            calls[_name] += counting[0]
            return _original(self, *args, **kwargs)

        cls.__call__ = _counted
    os.chdir(ROOT)
    names = configs.split(",") if isinstance(configs, str) else list(configs)
    with tempfile.TemporaryDirectory() as ckpt:
        wf = ConfigWorkflow(
            config_file=[os.path.join("configs", n) for n in names],
            meta_file="configs/metadata.json",
            logging_file="configs/logging.conf",
            workflow_type="train",
            run_id="train_fold",
            dataset_dir=dataset_dir,
            datalist_file=datalist_file or os.path.join(dataset_dir, "datalist.json"),
            ckpt_dir=ckpt,
            fold=fold,
            max_epochs=epochs,
            patience=epochs + 1,
            num_workers=num_workers,
        )
        wf.initialize()
        trainer = wf.parser.get_parsed_content("train#trainer")
        marks: dict = {}
        data, step = defaultdict(list), defaultdict(list)

        def _mark(key: str):  # type: ignore[no-untyped-def]
            return lambda engine: marks.__setitem__(key, time.perf_counter())

        def _took(store: dict, key: str):  # type: ignore[no-untyped-def]
            return lambda engine: store[engine.state.epoch].append(time.perf_counter() - marks[key])

        trainer.add_event_handler(Events.GET_BATCH_STARTED, _mark("batch"))
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, _took(data, "batch"))
        trainer.add_event_handler(Events.ITERATION_STARTED, _mark("step"))
        trainer.add_event_handler(Events.ITERATION_COMPLETED, _took(step, "step"))
        trainer.add_event_handler(Events.EPOCH_STARTED(once=2), lambda e: counting.__setitem__(0, True))
        wf.run()
    for epoch in sorted(step):
        print(
            f"epoch {epoch}: per iteration, waiting for data {np.mean(data[epoch]) * 1000:.1f} ms, "
            f"processing the batch {np.mean(step[epoch]) * 1000:.1f} ms ({len(step[epoch])} iterations)"
        )
    later = [e for e in step if e > 1]
    print(
        f"epochs 2-{epochs}: data {np.mean([np.mean(data[e]) for e in later]) * 1000:.1f} ms vs model "
        f"{np.mean([np.mean(step[e]) for e in later]) * 1000:.1f} ms per iteration; calls of "
        + ", ".join(f"{k} {v}" for k, v in calls.items())
    )


if __name__ == "__main__":
    fire.Fire(main)
