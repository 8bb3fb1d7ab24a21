"""The paper-size MNT-DL (224 x 224 x 25, res25 head) trained on a generated 1 mm cohort for a set number of steps.

python benchmarks/mnt_dl_paper_size.py [--patients 20] [--steps 200] [--batch 4] [--device cuda]
    [--precision fp16|bf16|fp32] [--out /tmp/paper_size]

Generates ``--patients`` demo patients at 1 mm (``scripts.demo.generator``, the varied world), preprocesses them with
the bundle's own paper-size validation preprocessing (``configs/train.json``: NCCT + CTA, 224 x 224 x 25), keeps them
in memory and trains :func:`scripts.networks.mnt_dl_res25` with the bundle's deep-supervision loss and optimiser
settings for ``--steps`` steps. Prints the throughput (patients per second, after 5 warm-up steps), the peak device
memory and the training loss every tenth step. Meant for a CUDA machine (fp16 autocast with a GradScaler, as MONAI's
``amp``); runs on CPU as well (bf16 autocast), slowly.
"""

from __future__ import annotations

import os
import sys
import time

import fire
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from monai.bundle import ConfigParser  # noqa: E402

from scripts.data.split import write_datalist  # noqa: E402
from scripts.demo.generator import generate  # noqa: E402
from scripts.networks import WithAuxiliaryLogits, mnt_dl_res25  # noqa: E402
from scripts.networks.precision import autocast_forward  # noqa: E402
from scripts.training.losses import DeepSupervisionBCELoss  # noqa: E402


def _inputs(out: str, patients: int) -> tuple:
    """(images (N, 2, 224, 224, 25), labels (N,)) of a generated 1 mm cohort through the paper-size preprocessing."""
    cohort = os.path.join(out, "cohort.csv")
    if not os.path.isfile(cohort):
        generate(out, patients=patients, seed=0, modalities="ct", spacing=1.0)
    datalist = write_datalist(cohort, os.path.join(out, "datalist.json"), folds=2, seed=0)
    os.chdir(ROOT)
    parser = ConfigParser()
    parser.read_config([os.path.join(ROOT, "configs", "train.json")])
    parser.update({"dataset_dir": out, "datalist_file": datalist, "ckpt_dir": os.path.join(out, "models")})
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    data = parser.get_parsed_content("datalist")
    items = [preprocessing(item) for item in data["training"] + data["test"]]
    return torch.stack([torch.as_tensor(i["image"]) for i in items]), torch.tensor([float(i["label"]) for i in items])


def main(
    patients: int = 20,
    steps: int = 200,
    batch: int = 4,
    device: str = "cuda",
    precision: str = "fp16",
    out: str = "/tmp/paper_size",
    learning_rate: float = 5e-4,
) -> None:
    """Train the paper-size network for ``steps`` steps and print throughput, memory and the loss curve."""
    dev = torch.device(device)
    x, y = _inputs(out, patients)
    print(f"inputs {tuple(x.shape)} ({len(y)} patients, {int(y.sum())} with first-pass effect)", flush=True)
    network = mnt_dl_res25(in_channels=x.shape[1]).to(dev)
    model = autocast_forward(WithAuxiliaryLogits(network), precision)
    loss_function = DeepSupervisionBCELoss(0.5)
    optimiser = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=0.05)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rng = np.random.default_rng(0)
    losses, start = [], None
    for step in range(steps):
        if step == 5:  # warm-up steps (kernel selection, allocator) are not timed
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
        index = torch.from_numpy(rng.choice(len(y), batch, replace=len(y) < batch))
        loss = loss_function(model(x[index].to(dev)), y[index].to(dev))
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        losses.append(loss.item())
        if step % 10 == 9:
            print(f"step {step + 1}: loss {np.mean(losses[-10:]):.4f}", flush=True)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    timed = max(steps - 5, 1)
    seconds = time.perf_counter() - start if start is not None else float("nan")
    memory = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    print(
        f"{device} {precision}, batch {batch}: {timed * batch / seconds:.2f} patients/s "
        f"({seconds / timed:.3f} s/step over {timed} steps), peak memory {memory:.2f} GiB"
    )


if __name__ == "__main__":
    fire.Fire(main)
