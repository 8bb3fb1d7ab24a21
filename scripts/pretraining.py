"""Glue between SimSiam pretraining and fine-tuning: the leakage guard and strict encoder loading."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, List, Tuple

import torch

from scripts import BundleInputError

ENCODER_PREFIXES = ("stem.", "local.", "slice_attention.")
logger = logging.getLogger(__name__)


def leakage_guard(
    unlabeled: List[Dict[str, Any]], datalist: Dict[str, Any], folds: Iterable[int], on_overlap: str = "drop"
) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Remove from an unlabeled (SSL) datalist every patient of the prospective test set and of the outer
    folds being reported. ``on_overlap="refuse"`` raises instead. Returns (kept items, dropped ids)."""
    reported = {d["patient_id"] for d in datalist["test"]}
    reported |= {d["patient_id"] for d in datalist["training"] if d["fold"] in set(folds)}
    dropped = sorted({d["patient_id"] for d in unlabeled if d.get("patient_id") in reported})
    if dropped and on_overlap == "refuse":
        raise BundleInputError(
            f"the unlabeled datalist holds {len(dropped)} patient(s) of the test set or reported folds "
            f"(e.g. {', '.join(dropped[:3])}); remove them or use on_overlap=drop"
        )
    if on_overlap not in ("drop", "refuse"):
        raise BundleInputError(f"on_overlap '{on_overlap}': use drop or refuse")
    if dropped:
        logger.warning("leakage guard: dropped %d unlabeled patient(s) of the test set or reported folds", len(dropped))
    return [d for d in unlabeled if d.get("patient_id") not in reported], dropped


def encoder_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The encoder part (stem, local networks, slice attention) of an MNT-DL or SimSiam state dict."""
    out = {}
    for key, value in state.items():
        key = key[len("encoder.") :] if key.startswith("encoder.") else key
        if key.startswith(ENCODER_PREFIXES):
            out[key] = value
    return out


def load_pretrained_encoder(network: torch.nn.Module, path: str) -> torch.nn.Module:
    """Load the encoder weights of a pretraining checkpoint into ``network`` strictly.

    Every encoder tensor of the network must be in the checkpoint with the same shape and no other encoder
    tensor may be there; otherwise the error names the keys. The classifier heads keep their initialisation.
    """
    if not os.path.isfile(path):
        raise BundleInputError(f"{path}: pretrained encoder checkpoint not found")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    saved = encoder_state(saved.get("model", saved) if isinstance(saved, dict) else saved)
    own = encoder_state(network.state_dict())
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    shapes = sorted(k for k in set(own) & set(saved) if own[k].shape != saved[k].shape)
    problems = []
    if missing:
        problems.append(
            f"missing {', '.join(missing[:5])}" + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        )
    if unexpected:
        problems.append(
            f"unexpected {', '.join(unexpected[:5])}"
            + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else "")
        )
    if shapes:
        problems.append(
            "shape mismatch " + ", ".join(f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}" for k in shapes[:5])
        )
    if problems:
        raise BundleInputError(f"{path}: encoder does not match the network: " + "; ".join(problems))
    network.load_state_dict(saved, strict=False)  # heads are not part of the encoder; all encoder keys matched above
    return network


def view_transforms(key: str, spatial_size: List[int], num_slices: int, crop_scale: float = 0.7) -> List[Any]:
    """Random transforms making one SimSiam view ``key`` of a (C, H, W, D) image; each view gets its own
    instances, so the two views are augmented independently. In-plane random resized crop, small affine,
    per-channel intensity scale/shift/gamma, blur, noise, and a left-right flip on the anatomical x axis."""
    from monai import transforms as T

    size = list(spatial_size) + [num_slices]
    return [
        T.RandSpatialCropd(key, roi_size=[int(s * crop_scale) for s in spatial_size] + [num_slices], random_size=True),
        T.Resized(key, spatial_size=size, mode="trilinear"),
        T.RandAffined(key, prob=0.5, rotate_range=[0.0, 0.0, 0.26], scale_range=[0.1, 0.1, 0.0], padding_mode="zeros"),
        T.RandScaleIntensityd(key, factors=0.2, prob=0.8, channel_wise=True),
        T.RandShiftIntensityd(key, offsets=0.1, prob=0.8, channel_wise=True),
        T.RandAdjustContrastd(key, gamma=(0.7, 1.5), prob=0.5),
        T.RandGaussianSmoothd(key, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.0, 0.1), prob=0.3),
        T.RandGaussianNoised(key, std=0.03, prob=0.5),
        T.RandFlipd(key, prob=0.5, spatial_axis=0),
    ]


class CollapseMonitor:
    """Logs the collapse score (:func:`scripts.networks.simsiam.collapse_score`) of each epoch's projections
    as ``engine.state.metrics["collapse_score"]`` and warns when it falls below ``threshold`` (a fraction of
    the healthy value 1 / sqrt(dim))."""

    def __init__(self, threshold: float = 0.2) -> None:
        self.threshold = threshold
        self.scores: List[float] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.scores.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _iteration(self, engine: Any) -> None:
        from scripts.networks.simsiam import collapse_score

        self.scores.append(collapse_score(engine.state.output["z"]))

    def _epoch(self, engine: Any) -> None:
        z = engine.state.output["z"]
        healthy = 1 / float(z.shape[1]) ** 0.5
        score = sum(self.scores) / max(len(self.scores), 1)
        engine.state.metrics["collapse_score"] = score
        if score < self.threshold * healthy:
            logger.warning(
                "SimSiam collapse: epoch %d projection std %.4f < %.2f x healthy %.4f",
                engine.state.epoch, score, self.threshold, healthy,
            )  # fmt: skip


def simsiam_iteration(engine: Any, batch: Dict[str, Any]) -> Dict[str, Any]:
    """One SimSiam step for a MONAI ``SupervisedTrainer`` (``iteration_update``): two views -> loss -> step."""
    x1, x2 = batch["view1"].to(engine.state.device), batch["view2"].to(engine.state.device)
    engine.network.train()
    engine.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x1.device.type, enabled=bool(engine.amp)):
        p1, p2, z1, z2 = engine.network(x1, x2)
        loss = engine.loss_function(p1, p2, z1, z2)
    if engine.amp and engine.scaler is not None:
        engine.scaler.scale(loss).backward()
        engine.scaler.step(engine.optimizer)
        engine.scaler.update()
    else:
        loss.backward()
        engine.optimizer.step()
    return {"loss": loss.detach(), "z": z1.detach()}
