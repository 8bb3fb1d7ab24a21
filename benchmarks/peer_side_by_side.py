"""The bundle's paper-size MNT-DL (res25) against the public FPE code's final model, alternately in one process.

python benchmarks/peer_side_by_side.py [--peer_dir ../shared/reference/peer_fpe] [--rounds 3] [--size 224]
    [--slices 25] [--threads 2]

Same input (3 x 25 x 224 x 224), same optimiser (AdamW) and deep-supervision loss; inference is batch 1 in eval
mode, a training step is batch 2. Each round times the peer (fp32, its only mode), then the bundle in fp32 and bf16,
each with and without channels-last weights (``scripts.networks.precision``), and the inference default (fp32,
channels-last weights, BatchNorm folded into the convolutions: inference only, so no training step), also compiled
(``--compile true``: Inductor with freezing, compiled in the warm-up call). Printed: the median and the fastest
round of each, and the peer / bundle ratios of the medians. The peer's code is imported from ``--peer_dir``
(reference material beside the project, never copied into it); without it the benchmark says so and exits 0.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import fire
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts.networks import WithAuxiliaryLogits, mnt_dl_res25  # noqa: E402
from scripts.networks.precision import (  # noqa: E402
    autocast_forward,
    compile_for_inference,
    fold_batch_norm,
    for_speed,
)
from scripts.training.losses import DeepSupervisionBCELoss  # noqa: E402


def _seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _timed(net: torch.nn.Module, x: torch.Tensor, loss: Callable[[], torch.Tensor]) -> Dict[str, Callable[[], None]]:
    """The two timed operations: an eval-mode forward of ``x`` and an AdamW step on ``loss()`` (same optimiser for
    both models)."""
    opt = torch.optim.AdamW(net.parameters(), 5e-4, weight_decay=0.05)

    def forward() -> None:
        net.eval()
        with torch.inference_mode():
            net(x)

    def step() -> None:
        net.train()
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()

    return {"forward": forward, "step": step}


def _peer(peer_dir: str, size: int, slices: int) -> Dict[str, Callable[[], None]]:
    sys.path.insert(0, peer_dir)  # its model package and the timm stand-in beside it
    import model.model_arch.custom_resnet_neighbor_slice as res25  # type: ignore[import-not-found]

    torch.manual_seed(0)
    net = res25.resnet34(num_classes=1, zero_init_residual=True)
    x, xb = torch.randn(1, 3, slices, size, size), torch.randn(2, 3, slices, size, size)
    y, bce = torch.ones(2, 1), torch.nn.BCEWithLogitsLoss()

    def loss() -> torch.Tensor:
        out = net(xb)
        return bce(out[0], y) + 0.5 * sum(bce(o, y) for o in out[1:])

    return _timed(net, x, loss)


def _bundle(
    precision: str, channels_last: bool, size: int, slices: int, fold: bool = False, compile: bool = False
) -> Dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    net = for_speed(mnt_dl_res25(in_channels=3, num_slices=slices), precision, channels_last)
    train_net, loss_fn = autocast_forward(WithAuxiliaryLogits(net), precision), DeepSupervisionBCELoss()
    x, xb, y = torch.randn(1, 3, size, size, slices), torch.randn(2, 3, size, size, slices), torch.ones(2)
    timed = _timed(net, x, lambda: loss_fn(train_net(xb), y))
    if fold:  # what inference does once the weights are loaded; the folded module does not train
        fold_batch_norm(net)
        del timed["step"]
    if compile:  # the first (warm-up) call compiles
        compile_for_inference(net)
    return timed


def main(
    peer_dir: str = os.path.join(ROOT, "..", "shared", "reference", "peer_fpe"),
    rounds: int = 3,
    size: int = 224,
    slices: int = 25,
    threads: int = 2,
) -> None:
    """Print one line per measurement and the ratios."""
    if not os.path.isdir(os.path.join(peer_dir, "model")):
        print(f"skipped: the peer's code is not at {peer_dir} (see ../shared/reference/peer_fpe/README.md)")
        return
    torch.set_num_threads(threads)
    runs = {"peer fp32": _peer(peer_dir, size, slices)}
    for precision, channels_last in (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)):
        name = f"bundle {precision}" + (" channels_last" if channels_last else "")
        runs[name] = _bundle(precision, channels_last, size, slices)
    runs["bundle inference default: fp32 channels_last folded BatchNorm"] = _bundle("fp32", True, size, slices, True)
    runs["bundle inference --compile true (Inductor, freezing)"] = _bundle("fp32", True, size, slices, True, True)
    times: Dict[str, Dict[str, List[float]]] = {name: {k: [] for k in run} for name, run in runs.items()}
    for _ in range(rounds):
        for name, run in runs.items():
            for k, fn in run.items():
                times[name][k].append(_seconds(fn, 3 if k == "forward" else 2))
    median = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    print(f"input 3 x {slices} x {size} x {size}, {torch.get_num_threads()} threads, {rounds} alternating rounds")
    labels = {"forward": "inference b1", "step": "train step b2"}
    for name, m in median.items():
        parts = [
            f"{labels[k]} {v:.3f} s, fastest {min(times[name][k]):.3f} s ({median['peer fp32'][k] / v:.2f}x peer)"
            for k, v in m.items()
        ]
        print(f"{name}: " + ", ".join(parts))


if __name__ == "__main__":
    fire.Fire(main)
