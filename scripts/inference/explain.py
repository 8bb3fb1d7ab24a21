"""Per-patient explanations a clinician can read, written by inference with ``--explain true``.

For each patient, averaged over the fold models:

* slice importance: the weight the network's volume head gives each slice (the learned query's attention over
  the slices for the cross-attention head, the softmax slice weights for the res25 head), ``<id>_slices.png``;
* spatial saliency: MONAI ``OcclusionSensitivity`` (the drop in predicted probability when a patch is occluded
  by the image mean), mapped back to the input image's grid with MONAI ``Invertd`` (undoing the resize and the
  reorientation), ``<id>_saliency.nii.gz`` (affine of the input NCCT/ADC file) and ``<id>_saliency.png`` (axial
  slices of the first sequence with the saliency on top);
* the saliency mass per arterial territory (atlas level 2; positive saliency, shares summing to 1) for images in
  MNI space;
* clinical-variable attributions (multimodal networks): the change in predicted probability when the variable is
  set to missing, i.e. to the training mean / no category (``<id>_explanation.json``).

``summarize`` averages the per-patient files of a run into ``summary.json`` (mean territory shares, mean absolute
clinical attributions).
"""

from __future__ import annotations

import copy
import glob
import json
import os
from typing import Any, Callable, Dict, List, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, EnsureTyped, Invertd
from monai.visualize import OcclusionSensitivity

from scripts.data.anatomy import DEFAULT_ATLAS_DIR, TERRITORIES, grid_maps
from scripts.data.io import atomic_write, atomic_write_json
from scripts.training.kfold import fold_checkpoints, load_weights


class _WithClinical(torch.nn.Module):
    """``network(x)`` for an occlusion batch: the patient's clinical vector repeated to the batch size."""

    def __init__(self, network: torch.nn.Module, clinical: torch.Tensor | None) -> None:
        super().__init__()
        self.network, self.clinical = network, clinical

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clinical is None:
            return self.network(x)
        return self.network(x, self.clinical.expand(x.shape[0], -1))


def slice_importance(network: torch.nn.Module, image: torch.Tensor, clinical: torch.Tensor | None) -> np.ndarray:
    """(1, C, H, W, D) -> the volume head's weight per slice (D,), or an empty array for networks without one."""
    head = getattr(network, "classifier", None)
    if head is None or not hasattr(network, "slice_features"):
        return np.zeros(0)
    with torch.no_grad():
        args = (image, clinical) if clinical is not None else (image,)
        feats = network.slice_features(*args)
        if hasattr(head, "attention"):  # cross-attention head: the query's attention over the slices
            head.attention.save_attn = True
            head.features(feats)
            head.attention.save_attn = False
            return head.attention.att_mat[0].mean(dim=0)[0].cpu().numpy()  # heads averaged, (D,)
        return head.features(feats)[0].cpu().numpy()  # res25: softmax slice weights


def occlusion_saliency(
    network: torch.nn.Module, image: torch.Tensor, clinical: torch.Tensor | None, mask_size: Sequence[int]
) -> np.ndarray:
    """(1, C, H, W, D) -> the drop in probability when each voxel's neighbourhood is occluded, (H, W, D)."""
    model = _WithClinical(network, clinical)
    occlusion = OcclusionSensitivity(
        model, mask_size=list(mask_size), n_batch=16, verbose=False, mode="mean_img", activate=torch.sigmoid
    )
    with torch.no_grad():
        baseline = torch.sigmoid(model(image))[0, 0]
        occluded, _ = occlusion(image)
    return (baseline - occluded[0, 0]).cpu().numpy()


def clinical_attributions(
    network: torch.nn.Module, image: torch.Tensor, clinical: torch.Tensor, columns: Sequence[str]
) -> Dict[str, float]:
    """Per clinical column: probability with the actual value minus probability with the value missing."""
    out = {}
    with torch.no_grad():
        actual = torch.sigmoid(network(image, clinical))[0, 0]
        for j, name in enumerate(columns):
            blank = clinical.clone()
            blank[0, j] = float("nan")
            out[name] = float(actual - torch.sigmoid(network(image, blank))[0, 0])
    return out


def territory_mass(saliency: np.ndarray, affine: np.ndarray, atlas_dir: str | None = DEFAULT_ATLAS_DIR):
    """Share of the positive saliency in each arterial territory (MNI-space grid given by ``affine``)."""
    _, territories = grid_maps(saliency.shape, np.asarray(affine, dtype=np.float64).tobytes(), atlas_dir)
    positive = np.clip(saliency, 0, None)
    total = float(positive[territories > 0].sum())
    return {
        name: float(positive[territories == label].sum() / total) if total > 0 else 0.0
        for name, label in TERRITORIES.items()
    }


def explain_item(
    networks: Sequence[Callable[[], torch.nn.Module]],
    preprocessing: Callable,
    item: Dict[str, Any],
    out_dir: str,
    device: Any,
    mask_size: Sequence[int] = (12, 12, 5),
) -> Dict[str, Any]:
    """Explain one patient with every fold model (``networks``: callables loading each fold's weights and returning
    the network); write the files listed in the module docstring; return the explanation dict."""
    # the same preprocessing, keeping the image's metadata (the final EnsureTyped drops it) so Invertd can map the
    # saliency back through the resize and the reorientation
    tracked = Compose(
        [t for t in getattr(preprocessing, "transforms", [preprocessing]) if not isinstance(t, EnsureTyped)]
    )
    data = tracked(dict(item))
    image = torch.as_tensor(data["image"]).float().unsqueeze(0).to(device)
    clinical = data["clinical"].unsqueeze(0).to(device) if "clinical" in data else None
    slices, saliency, attributions = [], [], []
    for load in networks:
        network = load().eval()
        slices.append(slice_importance(network, image, clinical))
        saliency.append(occlusion_saliency(network, image, clinical, mask_size))
        if clinical is not None:
            attributions.append(clinical_attributions(network, image, clinical, list(network.tabular.columns)))
    data["saliency"] = data["image"][:1].clone()
    data["saliency"].array = np.mean(saliency, axis=0)[None].astype(np.float32)
    inverted = Invertd("saliency", transform=tracked, orig_keys="image", nearest_interp=False)(data)["saliency"]
    grid = np.asarray(inverted[0].detach().cpu(), dtype=np.float32)
    affine = np.asarray(inverted.affine, dtype=np.float64)
    pid = str(item["patient_id"])
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(
        os.path.join(out_dir, f"{pid}_saliency.nii.gz"),
        lambda tmp: nib.save(nib.Nifti1Image(grid, affine), tmp),
        suffix=".nii.gz",
    )
    result: Dict[str, Any] = {"patient_id": pid, "slice_importance": np.mean(slices, axis=0).round(5).tolist()}
    result["territory_saliency_share"] = territory_mass(grid, affine)
    if attributions:
        result["clinical_attributions"] = {k: float(np.mean([a[k] for a in attributions])) for k in attributions[0]}
    background = _background(item)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(grid, affine))  # RAS for the picture
    if background is not None and background.shape == grid.shape:
        background = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(background, affine)).dataobj)
    _pictures(pid, np.asarray(canonical.dataobj), background, np.asarray(result["slice_importance"]), out_dir)
    atomic_write_json(os.path.join(out_dir, f"{pid}_explanation.json"), result)
    return result


def _background(item: Dict[str, Any]) -> np.ndarray | None:
    """The first CT/MR input as an array (file grid, like the inverted saliency), for the picture."""
    for key in ("ncct", "adc", "cta", "b1000", "flair"):
        if item.get(key) and os.path.isfile(str(item[key])):
            return np.asarray(nib.load(str(item[key])).dataobj, dtype=np.float32)
    return None


def _pictures(pid: str, saliency: np.ndarray, background: np.ndarray | None, slices: np.ndarray, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z_levels = np.linspace(0.3, 0.8, 4) * saliency.shape[2]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    limit = float(np.abs(saliency).max()) or 1.0
    for ax, z in zip(axes, z_levels.astype(int)):
        if background is not None and background.shape == saliency.shape:
            ax.imshow(np.rot90(background[:, :, z]), cmap="gray", vmin=0, vmax=80)
        ax.imshow(np.rot90(saliency[:, :, z]), cmap="bwr", vmin=-limit, vmax=limit, alpha=0.5)
        ax.set_title(f"slice {z}")
        ax.text(0.98, 0.02, "R", color="yellow", transform=ax.transAxes, ha="right", va="bottom")
        ax.axis("off")
    fig.suptitle(f"{pid}: occlusion saliency (red: supports the prediction; patient's right on the right)")
    fig.tight_layout()
    atomic_write(os.path.join(out, f"{pid}_saliency.png"), lambda tmp: fig.savefig(tmp, dpi=80), suffix=".png")
    plt.close(fig)
    if slices.size:
        fig, ax = plt.subplots(figsize=(6, 2.6))
        ax.bar(np.arange(slices.size), slices, color="tab:blue")
        ax.set_xlabel("slice (network input, inferior -> superior)")
        ax.set_ylabel("weight")
        ax.set_title(f"{pid}: slice importance")
        fig.tight_layout()
        atomic_write(os.path.join(out, f"{pid}_slices.png"), lambda tmp: fig.savefig(tmp, dpi=80), suffix=".png")
        plt.close(fig)


def explain_cohort(
    network: torch.nn.Module,
    preprocessing: Callable,
    items: Sequence[Dict[str, Any]],
    ckpt_dir: str,
    out_dir: str,
    device: Any,
    mask_size: Sequence[int] = (12, 12, 5),
) -> Dict[str, Any]:
    """Explain every item with the fold ensemble of ``ckpt_dir`` into ``out_dir``; write and return the summary."""

    def loader(path: str) -> Callable[[], torch.nn.Module]:  # a fresh copy per load: loading may fold BatchNorm
        return lambda: load_weights(copy.deepcopy(network), path, device)

    loaders = [loader(path) for path in fold_checkpoints(ckpt_dir)]
    for item in items:
        explain_item(loaders, preprocessing, item, out_dir, device, mask_size)
    return summarize(out_dir)


def summarize(out_dir: str) -> Dict[str, Any]:
    """Average the per-patient explanation files of ``out_dir`` into ``summary.json``."""
    files = sorted(glob.glob(os.path.join(out_dir, "*_explanation.json")))
    explanations: List[Dict[str, Any]] = [json.load(open(f)) for f in files]
    summary: Dict[str, Any] = {"patients": len(explanations)}
    if explanations:
        names = explanations[0]["territory_saliency_share"]
        summary["territory_saliency_share"] = {
            n: float(np.mean([e["territory_saliency_share"][n] for e in explanations])) for n in names
        }
        if "clinical_attributions" in explanations[0]:
            columns = explanations[0]["clinical_attributions"]
            summary["mean_abs_clinical_attribution"] = {
                c: float(np.mean([abs(e["clinical_attributions"][c]) for e in explanations])) for c in columns
            }
    atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary
