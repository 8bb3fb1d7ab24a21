"""Faster forward passes by configuration: ``precision`` fp32 | bf16 | fp16 and ``channels_last`` weights.

MONAI's engines autocast only on CUDA (``torch.autocast("cuda")`` with ``amp``); this CPU has AVX-512 BF16, where
bf16 autocast makes the paper-size MNT-DL forward and training step about twice as fast (docs/performance.md). The
autocast is attached to a module with forward hooks, so its ``state_dict``, parameters and checkpoints are those of
the module itself, and any caller (trainer, evaluator, inference) gets it. fp16 needs CUDA (with MONAI's
``amp``, which adds the GradScaler).
"""

from __future__ import annotations

from typing import Any, Tuple

import torch

from scripts import BundleInputError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _device_type(args: Tuple[Any, ...], module: torch.nn.Module) -> str:
    for arg in args:
        if isinstance(arg, torch.Tensor):
            return arg.device.type
    return next(module.parameters()).device.type


def _to_float(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (tuple, list)):
        return type(output)(_to_float(o) for o in output)
    return output


def autocast_forward(module: torch.nn.Module, precision: str = "fp32") -> torch.nn.Module:
    """Make ``module``'s forward run under ``torch.autocast`` with the dtype of ``precision`` on the device of its
    input, returning float32 outputs; ``fp32`` leaves it as it is. Returns the same module (hooks added in place)."""
    if precision not in PRECISIONS:
        raise BundleInputError(f"precision: '{precision}' is unknown (allowed: {', '.join(PRECISIONS)})")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return module
    contexts: list = []

    def _enter(mod: torch.nn.Module, args: Tuple[Any, ...]) -> None:
        device_type = _device_type(args, mod)
        if dtype is torch.float16 and device_type != "cuda":
            raise BundleInputError("precision fp16 needs a CUDA device; use bf16 on CPU")
        context = torch.autocast(device_type, dtype=dtype)
        context.__enter__()
        contexts.append(context)

    def _exit(mod: torch.nn.Module, args: Tuple[Any, ...], output: Any) -> Any:
        if contexts:
            contexts.pop().__exit__(None, None, None)
        return _to_float(output)

    module.register_forward_pre_hook(_enter)
    module.register_forward_hook(_exit, always_call=True)
    return module


def for_speed(module: torch.nn.Module, precision: str = "fp32", channels_last: bool = False) -> torch.nn.Module:
    """:func:`autocast_forward` and, with ``channels_last``, the 4-D (2-D convolution) weights in channels-last
    memory format (oneDNN's fast layout on CPU; values and ``state_dict`` keys unchanged). Returns the same module."""
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return autocast_forward(module, precision)
