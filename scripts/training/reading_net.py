"""Train :class:`scripts.networks.reading_net.ReadingNet` on generated cohorts' true clot and collateral values.

    python -m scripts.training.reading_net --cohorts DIR[,DIR...] --out models/reading_net/model.pt

Each DIR holds a cohort of the demo generator (``python -m scripts.demo.generator --out DIR --seed N --modalities
ct``): its ``cohort.csv`` and ``manifest.json``, whose ``truth`` gives every patient's clot length, density,
perviousness and collateral grade. Every patient goes through the main job's own preprocessing (``configs/train.json``
+ ``configs/clot_readings.json``: the mirrored vessel box, each hemisphere's mirror aligned), the reader's memberships
are added, and the network learns the standardised truth (mean squared error, a MONAI ``SupervisedTrainer``). No
outcome is read: the cohorts need not be (and for a fair measurement must not be) the cohort the main job reports on.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Sequence

import fire
import numpy as np
import torch
from ignite.handlers import ProgressBar
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.handlers import LrScheduleHandler
from monai.transforms import RandGaussianNoised
from monai.utils import set_determinism

from scripts.data.io import atomic_write
from scripts.data.split import load_datalist, write_datalist
from scripts.networks.precision import autocast_forward
from scripts.networks.reading_net import TARGETS, ReadingNet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = ("configs/train.json", "configs/clot_readings.json")


def cohort_inputs(cohort_dir: str, configs: Sequence[str] = CONFIGS) -> Dict[str, Any]:
    """Every patient of the generated cohort in ``cohort_dir`` through the main job's preprocessing and reader:
    {"image": (N, 6, H, W, D) float16 (the box and the reader's memberships), "truth": (N, 4) float64 (the log clot
    length, density, perviousness, collateral grade), "patients": N}."""
    with open(os.path.join(cohort_dir, "manifest.json")) as f:
        truth = json.load(f).get("truth")
    if not truth:
        raise ValueError(f"{cohort_dir}/manifest.json: no 'truth' (a cohort of the demo generator is needed)")
    with tempfile.TemporaryDirectory() as work:
        datalist_file = write_datalist(os.path.join(cohort_dir, "cohort.csv"), os.path.join(work, "datalist.json"))
        datalist = load_datalist(datalist_file)
        parser = ConfigParser()
        parser.read_config([os.path.join(ROOT, c) for c in configs])
        # the memberships are the rules' own: the reader is built without a learned reader
        parser.update({"dataset_dir": cohort_dir, "datalist_file": datalist_file, "ckpt_dir": work})
        parser["reading_net_file"] = None
        parser.get_parsed_content("imports")
        preprocessing = parser.get_parsed_content("validate#preprocessing")
        reader = parser.get_parsed_content("reader_def")
        images, values = [], []
        for item in datalist["training"] + datalist["test"]:
            item = dict(item)
            for key in ("ncct", "cta"):
                item[key] = item[key] if os.path.isabs(item[key]) else os.path.join(cohort_dir, item[key])
            box = torch.as_tensor(preprocessing(item)["image"], dtype=torch.float32)[None]
            images.append(torch.cat([box, reader.membership_maps(box)], 1)[0].half())
            values.append([truth[item["patient_id"]][k] for k in TARGETS])
    values_arr = np.array(values, float)
    values_arr[:, 0] = np.log(values_arr[:, 0])
    return {"image": torch.stack(images), "truth": values_arr, "patients": len(images)}


def train(
    cohorts: str | Sequence[str],
    out: str,
    epochs: int = 30,
    batch_size: int = 8,
    learning_rate: float = 0.002,
    seed: int = 0,
    precision: str = "bf16",
) -> ReadingNet:
    """Train a :class:`ReadingNet` on the generated ``cohorts`` (comma-separated folders) and save it to ``out``.

    Args:
        cohorts: folders of the demo generator's cohorts (``cohort.csv``, ``manifest.json`` with the truth).
        out: the network's file (:meth:`ReadingNet.save`; what it was trained on is recorded in it).
        epochs, batch_size, learning_rate: AdamW with a one-cycle schedule peaking at ``learning_rate``.
        seed: of the weights' initialisation and the batches.
        precision: of the forward pass (``bf16`` on CPU, see :mod:`scripts.networks.precision`).
    """
    folders = [c for c in (cohorts.split(",") if isinstance(cohorts, str) else cohorts) if c]
    set_determinism(seed)
    parts = [cohort_inputs(c) for c in folders]
    images = torch.cat([p["image"] for p in parts])
    truth = np.concatenate([p["truth"] for p in parts])
    mean, std = truth.mean(0), truth.std(0)
    labels = torch.as_tensor((truth - mean) / std, dtype=torch.float32)
    items = [{"image": images[i], "label": labels[i]} for i in range(len(labels))]
    noise = RandGaussianNoised(keys="image", prob=1.0, std=0.01, dtype=np.float32)  # the scans' own noise varies
    loader = DataLoader(Dataset(items, transform=noise), batch_size=batch_size, shuffle=True, drop_last=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = ReadingNet().to(device)
    optimizer = torch.optim.AdamW(net.parameters(), learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=epochs * len(loader))
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=epochs,
        train_data_loader=loader,
        network=autocast_forward(net, precision),
        optimizer=optimizer,
        loss_function=torch.nn.MSELoss(),
        train_handlers=[LrScheduleHandler(schedule, epoch_level=False, print_lr=False)],
        decollate=False,
    )
    ProgressBar(persist=True).attach(trainer, output_transform=lambda output: {"loss": output["loss"].item()})
    trainer.run()
    saved = ReadingNet()  # without the autocast hooks
    saved.load_state_dict(net.state_dict())
    saved.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    saved.std.copy_(torch.as_tensor(std, dtype=torch.float32))
    names = [os.path.basename(os.path.normpath(c)) for c in folders]
    atomic_write(out, lambda tmp: saved.save(tmp, cohorts=names, patients=len(labels)))
    print(f"ReadingNet trained on {len(labels)} generated patients ({', '.join(folders)}): {out}")
    return saved.eval()


if __name__ == "__main__":
    fire.Fire(train)
