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
