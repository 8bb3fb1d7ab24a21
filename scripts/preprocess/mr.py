"""MR preprocessing: DWI b0 (+ b1000, ADC, FLAIR, perfusion maps) in scanner space -> an MNI grid, with masks and QC.

The published MR pipeline (``original_code_facts.md``) without FSL, in ANTsPy:

1. Read (NIfTI or DICOM series) and check it is MR (a CT in Hounsfield units has air at -1000).
2. ADC = -ln(S_b1000 / S_b0) / b, in 1e-6 mm^2/s, when no ADC is given (0 where either signal is at noise level,
   so no log of zero).
3. Field of view: the head (signal above 10 % of the 99th percentile, largest component, holes filled).
4. N4 bias correction of b0 on its 2 mm copy (B-spline distance 300 mm, shrink 4, iterations 50/50/30/20);
   b0 and b1000 are divided by that smooth field at full resolution (same coil, same EPI readout).
5. b0 -> Rorden's FLAIR template (2 mm MNI, with skull): 12-DOF affine, mutual information, on a 2 mm copy.
   FLAIR -> b0 rigid (mutual information), then carried by the b0 transform; perfusion maps (Tmax, CBF, CBV,
   MTT) rigid to b0 likewise. One resampling per sequence into the output MNI grid.
6. Brain mask: the template brain (``scct_stripped.nii``, same grid) dilated 2 mm, within the warped head;
   every sequence masked and z-scored inside it; optional histogram matching of b0, b1000 and FLAIR to one
   reference case (an earlier output folder), as in the published pipeline.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

import numpy as np

from scripts import BundleInputError
from scripts.preprocess.case_folder import (
    StageClock,
    case_settings,
    read_qc,
    scans_fingerprint,
    transform_names,
    write_case,
)
from scripts.preprocess.space import (
    affine_volume_scale,
    atlas_territories,
    load_mr_template,
    mni_grid,
    template_similarity,
)
from scripts.preprocess.volumes import ants_scratch, fill_holes, masked, read_volume, register, seed_ants

PERFUSION = ("tmax", "cbf", "cbv", "mtt")
HISTOGRAM_MATCHED = ("b0", "b1000", "flair")
WORK_SPACING = 2.0  # mm, the grid of the registrations


def compute_adc(b0: np.ndarray, b1000: np.ndarray, b_value: float = 1000.0) -> np.ndarray:
    """ADC = -ln(S_b / S_0) / b in 1e-6 mm^2/s (b in s/mm^2); 0 where either signal is below 2 % of the b0's
    99th percentile (background, no log of zero), clipped to 0..5000."""
    b0, b1000 = np.asarray(b0, np.float64), np.asarray(b1000, np.float64)
    floor = 0.02 * np.percentile(b0, 99)
    valid = (b0 > floor) & (b1000 > 0)
    ratio = np.where(valid, b1000, 1.0) / np.where(valid, b0, 1.0)
    adc = -np.log(ratio) / float(b_value) * 1e6
    return np.where(valid, np.clip(adc, 0, 5000), 0).astype(np.float32)


def mr_head_mask(image):
    """Signal above 10 % of the 99th percentile, largest component, closed and hole-filled (0/1 ANTs image)."""
    import ants

    head = ants.threshold_image(image, 0.1 * float(np.percentile(image.numpy(), 99)), 1e12)
    head = ants.iMath(ants.iMath(head, "GetLargestComponent"), "MC", 2)
    return fill_holes(head)


def _check_mr(image, path: str, what: str) -> None:
    """Beyond the shared volume checks (CT-like values are refused there): an MR image must have signal."""
    high = np.percentile(image.numpy(), 99)
    if high <= 0:
        raise BundleInputError(f"{path}: {what} has no signal (99th percentile {high:g})")


def _zscore(image, mask):
    data, inside = image.numpy(), mask.numpy() > 0.5
    mean, sd = float(data[inside].mean()), float(data[inside].std())
    return image.new_image_like(np.where(inside, (data - mean) / max(sd, 1e-6), 0).astype(np.float32))


def _match_histogram(image, reference_path: str, mask):
    """Match the in-mask intensity histogram to the reference case's (scikit-image)."""
    import ants
    from skimage.exposure import match_histograms

    reference = ants.image_read(reference_path).numpy()
    data, inside = image.numpy(), mask.numpy() > 0.5
    matched = data.copy()
    matched[inside] = match_histograms(data[inside], reference[reference != 0])
    return image.new_image_like(matched.astype(np.float32))


@ants_scratch
def preprocess_mr(
    b0: str,
    out: str,
    b1000: str | None = None,
    adc: str | None = None,
    flair: str | None = None,
    perfusion: Dict[str, str] | None = None,
    spacing: float = 1.0,
    histogram_reference: str | None = None,
    templates: str | None = None,
    seed: int = 0,
    series: Dict[str, Any] | None = None,
) -> Dict[str, Any]:
    """Preprocess one MR patient; write ``out`` atomically (all files or none) and return the QC dict.
    ``perfusion``: {tmax|cbf|cbv|mtt: path}; ``series``: the DICOM study's series choice, kept in the QC. An ``out``
    that already holds ``qc.json`` of these very scans is kept (idempotent); one of other scans is redone."""
    perfusion = {k: v for k, v in (perfusion or {}).items() if v}
    scans = {"b0": b0, "b1000": b1000, "adc": adc, "flair": flair, **perfusion}
    settings = case_settings("mr", {"spacing": spacing, "histogram_reference": histogram_reference})
    done = read_qc(out, scans, settings)
    if done is not None:
        return done
    import ants  # after the check: a kept case folder needs no ANTs (about 1-2 s to import)

    unknown = sorted(set(perfusion) - set(PERFUSION))
    if unknown:
        raise BundleInputError(f"perfusion map(s) {', '.join(unknown)}: use {', '.join(PERFUSION)}")
    if histogram_reference and not os.path.isdir(histogram_reference):
        raise BundleInputError(f"{histogram_reference}: histogram reference case folder not found")
    seed_ants(seed)
    clock = StageClock()
    images = _read_mr({"b0": b0, "b1000": b1000, "adc": adc, "flair": flair, **perfusion})
    clock.lap("read")
    coarse, head = _bias_correct(images)
    clock.lap("bias_correct")
    template, template_mask = load_mr_template(templates)
    to_mni = _register_b0(coarse, template)
    clock.lap("register_b0")
    to_b0 = _register_to_b0(coarse, images)
    clock.lap("register_others")
    grid = mni_grid(spacing)
    warped_head = ants.apply_transforms(grid, head, to_mni, interpolator="linear") > 0.5
    prior = ants.resample_image_to_target(template_mask, grid, interp_type="nearestNeighbor")
    mask = ants.iMath(prior, "MD", int(round(2 / spacing))) * warped_head
    outputs = {}
    for name, image in images.items():
        moved = ants.apply_transforms(grid, image, to_mni + to_b0.get(name, []), interpolator="linear")
        outputs[name] = _zscore(moved * mask, mask)
        if histogram_reference and name in HISTOGRAM_MATCHED:
            outputs[name] = _match_histogram(outputs[name], os.path.join(histogram_reference, f"{name}.nii.gz"), mask)
    territories = atlas_territories(grid) * mask
    clock.lap("resample")
    template_in_grid = ants.resample_image_to_target(template * template_mask, grid)
    b0_mni = ants.apply_transforms(grid, coarse, to_mni, interpolator="linear")
    brain = (mask * prior).sum()  # the template brain, as far as imaged
    native_ml = float(brain * spacing**3 / 1000) * affine_volume_scale(to_mni[0])
    qc = {
        "sequences": sorted(images),
        "adc_computed": not adc and "b1000" in images,
        "spacing_mm": spacing,
        "brain_volume_ml": round(native_ml, 1),
        "similarity_mi": template_similarity(template * template_mask, masked(b0_mni, mask, 0)),
        "histogram_matched": bool(histogram_reference),
    }
    qc["coverage"] = round(float(brain / max(prior.sum(), 1)), 4)  # share of the template brain imaged
    qc["flags"] = [
        f for f, bad in (("coverage", qc["coverage"] < 0.8), ("brain_volume", not 800 <= native_ml <= 2000)) if bad
    ]
    qc["seconds"] = clock.seconds
    qc["scans_sha256"] = scans_fingerprint(scans, settings)
    if series:
        qc["series"] = series  # the DICOM study's chosen series (scripts.data.dicom_study)
    files = transform_names("b0_to_mni", to_mni)
    for name, rigid in to_b0.items():
        files.update(transform_names(f"{name}_to_b0_rigid", rigid))
    ordered = {"b0": outputs.pop("b0"), **outputs, "brain_mask": mask, "territories": territories}
    write_case(out, ordered, files, qc, template_in_grid, window=(-2.5, 2.5))
    return qc


def _read_mr(paths: Dict[str, str | None]) -> Dict[str, Any]:
    """The given sequences as ANTs images, each checked to be MR; ADC computed from b0 and b1000 when not given."""
    import ants

    images = {name: read_volume(path, name) for name, path in paths.items() if path}
    for name in ("b0", "b1000", "flair"):
        if name in images:
            _check_mr(images[name], paths[name], name)
    if "adc" not in images and "b1000" in images:
        b1000_on_b0 = ants.resample_image_to_target(images["b1000"], images["b0"])
        images["adc"] = images["b0"].new_image_like(compute_adc(images["b0"].numpy(), b1000_on_b0.numpy()))
    return images


def _bias_correct(images: Dict[str, Any]) -> Tuple[Any, Any]:
    """N4 on b0's 2 mm copy; b0 and b1000 divided by the field in place -> (the corrected copy, its head mask)."""
    import ants

    # head mask, bias field and registration on a 2 mm copy; the smooth field is then applied at full resolution
    coarse = ants.resample_image(images["b0"], (WORK_SPACING,) * 3, use_voxels=False, interp_type=0)
    head = mr_head_mask(coarse)
    bias = ants.n4_bias_field_correction(
        coarse,
        mask=head,
        shrink_factor=4,
        spline_param=300,
        convergence={"iters": [50, 50, 30, 20], "tol": 1e-7},
        return_bias_field=True,
    )
    bias = bias.new_image_like(np.maximum(bias.numpy(), 1e-3))
    coarse = coarse / bias
    for name in ("b0", "b1000"):
        if name in images:
            on_grid = ants.resample_image_to_target(bias, images[name], interp_type="linear").numpy()
            images[name] = images[name] / images[name].new_image_like(np.where(on_grid > 1e-3, on_grid, 1.0))
    return coarse, head


def _register_b0(coarse, template) -> List[str]:
    """b0's corrected 2 mm copy to the FLAIR template: the affine's transform files."""
    # mutual information on every voxel of the 2 mm copy: on the real stroke T2, ANTsPy's default 20 % random sample
    # let the optimiser stop anywhere between volume scales 0.72 and 0.88 (native brain 1560-2020 ml from one scan,
    # run to run); the full sample gave 0.662-0.667 over seeds and threads (2.5 s)
    reg = register(
        fixed=template, moving=coarse, type_of_transform="Affine", aff_metric="mattes", aff_random_sampling_rate=1.0
    )
    return reg["fwdtransforms"]


def _register_to_b0(coarse, images: Dict[str, Any]) -> Dict[str, list]:
    """FLAIR and the perfusion maps rigidly onto b0 (each on its 2 mm copy): {name: transform files}."""
    import ants

    to_b0: Dict[str, list] = {}
    for name in ("flair", *PERFUSION):
        if name in images:
            moving = ants.resample_image(images[name], (WORK_SPACING,) * 3, use_voxels=False, interp_type=0)
            rigid = register(fixed=coarse, moving=moving, type_of_transform="Rigid", aff_metric="mattes")
            to_b0[name] = rigid["fwdtransforms"]
    return to_b0
