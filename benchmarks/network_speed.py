"""Parameters, GFLOPs, forward and training-step time of MNT-DL for an input size and device.

python benchmarks/network_speed.py [--channels 2] [--size 224] [--slices 25] [--batch 1] [--device cpu]
    [--widths 64,128,256,512] [--preset mnt_dl|res25] [--repeats 5] [--precision fp32|bf16|fp16]
    [--channels_last] [--compile]

``--precision`` is the bundle's own switch (``scripts.networks.precision``; ``--amp`` is the old name for autocast's
default: bf16 on CPU, fp16 on CUDA); ``--channels_last`` converts the weights to channels-last memory format;
``--compile`` runs the network through ``torch.compile``.
"""

from __future__ import annotations

import os
import sys
import time

import fire
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.networks import MNTDL, WithAuxiliaryLogits, mnt_dl_res25  # noqa: E402
from scripts.networks.mnt_dl import count_parameters  # noqa: E402
from scripts.networks.precision import autocast_forward  # noqa: E402
from scripts.training.losses import DeepSupervisionBCELoss  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(
    channels: int = 2,
    size: int = 224,
    slices: int = 25,
    batch: int = 1,
    device: str = "cpu",
    widths: str = "64,128,256,512",
    preset: str = "mnt_dl",
    repeats: int = 5,
    precision: str = "fp32",
    amp: bool = False,
    channels_last: bool = False,
    compile: bool = False,
) -> None:
    """Print one line of figures for the configuration."""
    dev = torch.device(device)
    if amp:
        precision = "fp16" if dev.type == "cuda" else "bf16"
    widths = [int(w) for w in (widths.split(",") if isinstance(widths, str) else widths)]
    build = mnt_dl_res25 if preset == "res25" else MNTDL
    net = build(in_channels=channels, num_slices=slices, widths=widths).to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    x = torch.randn(batch, channels, size, size, slices, device=dev)
    y = torch.randint(0, 2, (batch,), device=dev).float()
    net.eval()
    with FlopCounterMode(display=False) as counter:  # (its module tracker needs autograd on)
        net(x)
    gflops = counter.get_total_flops() / 2e9  # multiply-adds counted as 2 FLOPs -> GMACs x 2 / 2
    autocast_forward(net, precision)
    run = torch.compile(net) if compile else net
    with torch.no_grad():
        run(x)
        run(x)
        _sync(dev)
        t = time.perf_counter()
        for _ in range(repeats):
            run(x)
        _sync(dev)
        forward = (time.perf_counter() - t) / repeats
    net.train()
    train_net, loss_fn = autocast_forward(WithAuxiliaryLogits(net), precision), DeepSupervisionBCELoss()
    train_run = torch.compile(train_net) if compile else train_net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(train_run(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    step()
    _sync(dev)
    t = time.perf_counter()
    for _ in range(repeats):
        step()
    _sync(dev)
    train = (time.perf_counter() - t) / repeats
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(
        f"{preset} widths={widths} input=({batch},{channels},{size},{size},{slices}) "
        f"device={name} precision={precision}{' channels_last' if channels_last else ''}"
        f"{' compile' if compile else ''}: "
        f"params={count_parameters(net) / 1e6:.2f} M, GMACs/forward={gflops:.1f}, "
        f"forward={forward * 1000:.0f} ms, train step={train * 1000:.0f} ms"
    )


if __name__ == "__main__":
    fire.Fire(main)
