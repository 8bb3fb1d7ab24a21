"""Train :class:`scripts.networks.reading_net.ReadingNet` on generated cohorts' true clot and collateral values.

    python -m scripts.training.reading_net --cohorts DIR[,DIR...] --out models/reading_net/model.pt \
        [--check DIR[,DIR...]] [--cache_dir DIR]

Each DIR holds a cohort of the demo generator (``python -m scripts.demo.generator --out DIR --seed N --modalities
ct``): its ``cohort.csv`` and ``manifest.json``, whose ``truth`` gives every patient's clot length, density,
perviousness and collateral grade. Every patient goes through the main job's own preprocessing (``configs/train.json``
+ ``configs/clot_readings.json``: the mirrored vessel box, each hemisphere's mirror aligned), the reader's memberships
are added, and the network learns the standardised truth (mean squared error, a MONAI ``SupervisedTrainer``). No
outcome is read: the cohorts need not be (and for a fair measurement must not be) the cohort the main job reports on.
``--check`` reads other generated cohorts with the trained network and prints, and records in the file, each reading's
correlation with their truth; ``--cache_dir`` keeps every cohort's preprocessed inputs, so that a second training on the
same cohorts (other epochs, another seed) starts at once.
"""

from __future__ import annotations

import functools
import hashlib
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


def _cached_inputs(cohort_dir: str, cache_dir: str) -> Dict[str, Any]:
    """:func:`cohort_inputs`, kept in ``cache_dir`` under a name from the cohort's files and the preprocessing's
    configs (a changed cohort or config is preprocessed again); no cache when ``cache_dir`` is empty."""
    if not cache_dir:
        return cohort_inputs(cohort_dir)
    digest = hashlib.sha256()
    for path in [os.path.join(cohort_dir, f) for f in ("cohort.csv", "manifest.json")] + [
        os.path.join(ROOT, c) for c in CONFIGS
    ]:
        with open(path, "rb") as f:
            digest.update(f.read())
    name = f"{os.path.basename(os.path.normpath(cohort_dir))}_{digest.hexdigest()[:16]}.pt"
    path = os.path.join(cache_dir, name)
    if os.path.exists(path):
        kept = torch.load(path, weights_only=True)  # tensors only: no pickled code from a shared folder
        return {**kept, "truth": kept["truth"].numpy(), "patients": len(kept["image"])}
    inputs = cohort_inputs(cohort_dir)
    kept = {"image": inputs["image"], "truth": torch.from_numpy(inputs["truth"])}
    atomic_write(path, lambda tmp: torch.save(kept, tmp))
    return inputs


def _folders(cohorts: str | Sequence[str]) -> list:
    return [c for c in (cohorts.split(",") if isinstance(cohorts, str) else cohorts) if c]


def check_readings(net: ReadingNet, inputs: Dict[str, Any], batch_size: int = 16) -> Dict[str, float]:
    """Pearson r of each of ``net``'s readings with the truth of the cohort :func:`cohort_inputs` gave."""
    net.eval()
    with torch.no_grad():
        read = torch.cat(
            [net(inputs["image"][i : i + batch_size].float()) for i in range(0, inputs["patients"], batch_size)]
        )
    return {k: float(np.corrcoef(read[:, j].numpy(), inputs["truth"][:, j])[0, 1]) for j, k in enumerate(TARGETS)}


def train(
    cohorts: str | Sequence[str],
    out: str,
    epochs: int = 30,
    batch_size: int = 8,
    learning_rate: float = 0.002,
    seed: int = 0,
    precision: str = "bf16",
    check: str | Sequence[str] = "",
    cache_dir: str = "",
    membership_pool: bool = True,
) -> ReadingNet:
    """Train a :class:`ReadingNet` on the generated ``cohorts`` (comma-separated folders) and save it to ``out``.

    Args:
        cohorts: folders of the demo generator's cohorts (``cohort.csv``, ``manifest.json`` with the truth).
        out: the network's file (:meth:`ReadingNet.save`; what it was trained on is recorded in it).
        epochs, batch_size, learning_rate: AdamW with a one-cycle schedule peaking at ``learning_rate``.
        seed: of the weights' initialisation and the batches.
        precision: of the forward pass (``bf16`` on CPU, see :mod:`scripts.networks.precision`).
        check: folders of other generated cohorts, read after training: each reading's r with their truth.
        cache_dir: where each cohort's preprocessed inputs are kept (empty: not kept).
        membership_pool: the network's ``membership_pool`` (:class:`ReadingNet`).
    """
    folders = _folders(cohorts)
    parts = [_cached_inputs(c, cache_dir) for c in folders]
    held_out = {c: _cached_inputs(c, cache_dir) for c in _folders(check)}  # preprocessed first: errors before training
    set_determinism(seed)  # after the preprocessing: the same network whether the inputs were kept or not
    images = torch.cat([p["image"] for p in parts])
    truth = np.concatenate([p["truth"] for p in parts])
    mean, std = truth.mean(0), truth.std(0)
    labels = torch.as_tensor((truth - mean) / std, dtype=torch.float32)
    items = [{"image": images[i], "label": labels[i]} for i in range(len(labels))]
    noise = RandGaussianNoised(keys="image", prob=1.0, std=0.01, dtype=np.float32)  # the scans' own noise varies
    loader = DataLoader(Dataset(items, transform=noise), batch_size=batch_size, shuffle=True, drop_last=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # channels-last 3-D weights and inputs: oneDNN's fast layout, about twice the speed of an epoch on CPU
    net = ReadingNet(membership_pool=membership_pool).to(device, memory_format=torch.channels_last_3d)
    net.register_forward_pre_hook(lambda module, args: (args[0].contiguous(memory_format=torch.channels_last_3d),))
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
    saved = ReadingNet(membership_pool=membership_pool)  # without the autocast hooks
    saved.load_state_dict(net.state_dict())
    saved.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    saved.std.copy_(torch.as_tensor(std, dtype=torch.float32))
    checked = {}
    for folder, inputs in held_out.items():
        checked[os.path.basename(os.path.normpath(folder))] = r = check_readings(saved, inputs)
        print(f"{folder}: r with the truth " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    names = [os.path.basename(os.path.normpath(c)) for c in folders]
    atomic_write(out, lambda tmp: saved.save(tmp, cohorts=names, patients=len(labels), epochs=epochs, checked=checked))
    print(f"ReadingNet trained on {len(labels)} generated patients ({', '.join(folders)}): {out}")
    return saved.eval()


@functools.wraps(train)
def _command(*args: Any, **kwargs: Any) -> None:
    """:func:`train` for the command line: Fire would call the returned network as the next command."""
    train(*args, **kwargs)


if __name__ == "__main__":
    fire.Fire(_command)
