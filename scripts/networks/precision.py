"""Faster forward passes by configuration: ``precision`` fp32 | bf16 | fp16, ``channels_last`` weights and, for
inference, ``fold_batch_norm`` (each BatchNorm folded into the convolution before it when the weights are loaded).

MONAI's engines autocast only on CUDA (``torch.autocast("cuda")`` with ``amp``); this CPU has AVX-512 BF16, where
bf16 autocast makes the paper-size MNT-DL forward and training step about twice as fast (docs/performance.md). The
autocast is attached to a module with forward hooks, so its ``state_dict``, parameters and checkpoints are those of
the module itself, and any caller (trainer, evaluator, inference) gets it. fp16 needs CUDA (with MONAI's
``amp``, which adds the GradScaler). fp32 with channels-last weights and folded BatchNorm is the same arithmetic as
plain fp32 (probabilities equal to about 1e-7) and the fastest exact path on CPU.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple

import torch
from monai.data import MetaTensor
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


_CONV = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
_NORM = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def _conv_norm_pairs(module: torch.nn.Module) -> list:
    """(parent, conv name, norm name) of every convolution whose output goes straight into a BatchNorm: consecutive
    children of an ``nn.Sequential`` (run in order) and the conv/bn pairs of MONAI's ResNet and its blocks."""
    pairs = []
    for parent in module.modules():
        if isinstance(parent, torch.nn.Sequential) and type(parent).forward is torch.nn.Sequential.forward:
            names = list(parent._modules)
            pairs += [(parent, a, b) for a, b in zip(names, names[1:])]
        elif isinstance(parent, ResNet):
            pairs.append((parent, "conv1", "bn1"))
        elif isinstance(parent, ResNetBlock):
            pairs += [(parent, "conv1", "bn1"), (parent, "conv2", "bn2")]
        elif isinstance(parent, ResNetBottleneck):
            pairs += [(parent, "conv1", "bn1"), (parent, "conv2", "bn2"), (parent, "conv3", "bn3")]
    return [
        (p, c, n)
        for p, c, n in pairs
        if isinstance(getattr(p, c), _CONV) and isinstance(getattr(p, n), _NORM) and getattr(p, n).track_running_stats
    ]


def fold_batch_norm(module: torch.nn.Module) -> torch.nn.Module:
    """Inference only: fold each BatchNorm's running statistics and affine into the convolution that feeds it
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replace the BatchNorm by ``nn.Identity``; puts ``module`` in
    eval mode. Same outputs up to float rounding, one pass over each activation less. The folded module no longer
    trains and no longer takes a checkpoint with BatchNorm entries. Returns the same module."""
    module.eval()
    for parent, conv, norm in _conv_norm_pairs(module):
        folded = fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, norm))
        if folded.weight.dim() == 4 and getattr(parent, conv).weight.is_contiguous(memory_format=torch.channels_last):
            folded = folded.to(memory_format=torch.channels_last)
        setattr(parent, conv, folded)
        setattr(parent, norm, torch.nn.Identity())
    return module


def _plain_tensors(module: torch.nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
    return tuple(a.as_tensor() if isinstance(a, MetaTensor) else a for a in args)


def compile_for_inference(module: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` the module's forward in place (``nn.Module.compile``) with Inductor's freezing (weights as
    constants, prepacked for oneDNN, convolution + ReLU / addition fused): fp32 arithmetic, faster from the second
    call; the first call compiles (seconds to a minute per model, a C++ compiler needed on CPU). MONAI MetaTensors
    are passed as plain tensors. Returns the same module."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # applies to graphs compiled without gradients (inference) only
    module.register_forward_pre_hook(_plain_tensors)
    module.compile()
    return module


def _after_loading(fold: bool, compile: bool) -> Callable[[torch.nn.Module, Any], None]:
    def hook(module: torch.nn.Module, incompatible: Any) -> None:
        if incompatible.missing_keys or incompatible.unexpected_keys:
            return
        if fold:
            fold_batch_norm(module)
        if compile:
            compile_for_inference(module)

    return hook


def switch(value: Any, name: str) -> bool:
    """A config switch given in JSON (true/false) or on the command line, where ``--channels_last false`` arrives as
    the string 'false'."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise BundleInputError(f"{name}: '{value}' is not true or false")


def for_speed(
    module: torch.nn.Module,
    precision: str = "fp32",
    channels_last: bool = False,
    fold_norm: bool = False,
    bf16_modules: Sequence[str] = (),
    compile: bool = False,
) -> torch.nn.Module:
    """:func:`autocast_forward` with the memory format, folding and compilation options.

    Args:
        module: the network.
        precision: "fp32", "bf16" or "fp16" autocast.
        channels_last: the 2-D convolutions' weights in channels-last memory format (oneDNN's fast layout on CPU;
            values and ``state_dict`` keys unchanged; 3-D convolutions are left as they are).
        fold_norm: :func:`fold_batch_norm` as soon as a checkpoint has been loaded (``load_state_dict``), so load
            each fold's weights into its own copy.
        bf16_modules: names of submodules (``get_submodule``) that run in bf16 autocast whatever ``precision`` is,
            e.g. ``["stem"]`` of MNT-DL.
        compile: :func:`compile_for_inference` after loading (and folding).

    Returns:
        the same module.
    """
    if switch(channels_last, "channels_last"):
        for part in module.modules():  # 3-D convolutions (a 3-D ResNet) have no channels-last layout: left as they are
            if isinstance(part, torch.nn.Conv2d):
                part.to(memory_format=torch.channels_last)
    fold, compile = switch(fold_norm, "fold_batch_norm"), switch(compile, "compile")
    if fold or compile:
        module.register_load_state_dict_post_hook(_after_loading(fold, compile))
    for name in [bf16_modules] if isinstance(bf16_modules, str) else bf16_modules:
        try:
            part = module.get_submodule(name)
        except AttributeError:
            raise BundleInputError(f"bf16_modules: the network has no submodule '{name}'") from None
        autocast_forward(part, "bf16")
    return autocast_forward(module, precision)
