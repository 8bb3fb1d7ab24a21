"""Reading scans for preprocessing: a NIfTI file or a DICOM series folder -> an ANTs image, validated; ANTs
registrations whose transform files do not outlive the preprocessing call; mask steps ANTs does slowly."""

from __future__ import annotations

import functools
import os
import tempfile
from contextvars import ContextVar
from typing import Any, Callable

import nibabel as nib
import numpy as np
from scipy import ndimage

from scripts import BundleInputError
from scripts.data.dicom_study import check_series_folder, dicom_reader
from scripts.data.volume_checks import check_volume, unreadable


def read_volume(path: str, what: str, ct: bool = False):
    """``path`` (NIfTI, or a folder with one DICOM series, with the rescale to HU applied) as a float32 ANTs image,
    checked by :func:`scripts.data.volume_checks.check_volume` (3-D, finite, not constant; with ``ct`` a CT in HU,
    else an MR image or map, not HU). ``what``: the sequence's name in the error line (NCCT, CTA, b0, ...)."""
    import ants

    if not os.path.exists(path):
        raise BundleInputError(f"{path}: {what} not found")
    problem = None if os.path.isdir(path) else unreadable(path)  # ITK reads some truncated files without a word
    if problem:
        raise BundleInputError(f"{path}: {what} {problem}")
    try:
        image = _dicom_series(path, what) if os.path.isdir(path) else ants.image_read(path)
    except BundleInputError:
        raise
    except Exception as error:  # ITK raises RuntimeError/ValueError with long messages
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BundleInputError(f"{path}: {what} cannot be read ({first[:150]})") from None
    if image.dimension != 3:
        raise BundleInputError(f"{path}: {what} is not a 3-D volume (shape {tuple(image.shape)})")
    if not os.path.isdir(path) and not _finite_nifti(path):
        raise BundleInputError(f"{path}: {what} holds NaN or infinite values")
    check_volume(image.numpy(), path, "ncct" if ct else what.lower(), what=what)
    return image.astype("float32")


def _finite_nifti(path: str) -> bool:
    """ITK reads NaN in a float NIfTI as 0, so the file itself is checked (integer files cannot hold NaN)."""
    if not path.endswith((".nii", ".nii.gz")):
        return True
    img = nib.load(path)
    return not np.issubdtype(img.get_data_dtype(), np.floating) or bool(np.isfinite(img.get_fdata()).all())


def _dicom_series(folder: str, what: str):
    """A DICOM series folder through the bundle's DICOM reader (:func:`scripts.data.dicom_study.dicom_reader`: ITK,
    slices ordered and spaced by their positions, RescaleSlope/Intercept applied, RAS affine) after the series
    checks (one series, no gantry tilt, no missing slices); ``ants.dicom_read`` takes file order and the first
    slice's spacing, which breaks real series."""
    from monai.transforms import LoadImage

    check_series_folder(folder, what)
    image = LoadImage(reader=dicom_reader(), image_only=True)(folder)
    return nifti_to_ants(nib.Nifti1Image(np.asarray(image, dtype=np.float32), np.asarray(image.affine, dtype=float)))


def nifti_to_ants(img: nib.Nifti1Image):
    """A nibabel image as an ANTs image (through a temporary file: ANTs reads the NIfTI geometry itself)."""
    import ants

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.nii")  # uncompressed: gzip of a 1 mm grid costs 0.1-0.3 s
        nib.save(img, path)
        return ants.image_read(path)


def fill_holes(mask):
    """A 0/1 ANTs image with its enclosed holes filled: ``iMath(mask, "FillHoles")`` with scipy, the same voxels on
    the real head CT's head and brain masks at 2 mm in 0.03 s instead of 0.5 s each."""
    return mask.new_image_like(ndimage.binary_fill_holes(mask.numpy() > 0).astype(np.float32))


def masked(image, mask, background: float):
    """``image`` inside the 0/1 ``mask``, ``background`` outside (one numpy pass; ANTs image arithmetic copies the
    volume once per operation)."""
    return image.new_image_like(np.where(mask.numpy() > 0, image.numpy(), np.float32(background)).astype(np.float32))


def save_ants(image, path: str) -> None:
    """Write an ANTs image to ``path`` (NIfTI)."""
    image.to_file(path)


def seed_ants(seed: int) -> None:
    """Seed ANTsPy's registrations. ANTsPy 0.6.3 ignores ``ants.registration(random_seed=...)`` and passes
    ``--random-seed`` only from ``ants.config._random_seed``; antsRegistration reads seed 0 as "seed from the clock"
    (one thread, seed 0: a different affine every run), so the seed given to ANTs is ``seed + 1``."""
    import ants

    if seed < 0:
        raise BundleInputError(f"seed {seed}: use a seed >= 0")
    ants.config._random_seed = int(seed) + 1


_SCRATCH: ContextVar[str | None] = ContextVar("ants_scratch", default=None)


def ants_scratch(function: Callable) -> Callable:
    """Decorator: the transform files of :func:`register` calls made during ``function`` go to a temporary folder
    that is removed when it returns or fails. (ANTsPy writes them to the system temp folder and never deletes them: an
    affine per scan and, with SyN, two warp fields; a registry of thousands of scans would fill the disk.)"""

    @functools.wraps(function)
    def inner(*args: Any, **kwargs: Any) -> Any:
        with tempfile.TemporaryDirectory(prefix="ants-") as folder:
            token = _SCRATCH.set(folder)
            try:
                return function(*args, **kwargs)
            finally:
                _SCRATCH.reset(token)

    return inner


# Rigid/affine pyramid for images that are already the 2 mm working copies: ANTsPy's default adds a last level at
# full resolution (10 iterations) that cost 1.5 s (CT affine), 2-4 s (CTA rigid) and 6 s (MR affine, every voxel) on
# the real scans and moved nothing that matters here (CTA offset recovered within 0.05 mm either way; template-brain
# Dice 0.930 vs 0.931; MR volume scale 0.66 vs 0.65)
WORKING_LEVELS = {
    "aff_shrink_factors": (6, 4, 2),
    "aff_smoothing_sigmas": (3, 2, 1),
    "aff_iterations": (2100, 1200, 200),
}


def register(**kwargs: Any) -> dict:
    """``ants.registration`` with its transform files in the :func:`ants_scratch` folder of the running call, and
    the :data:`WORKING_LEVELS` pyramid unless the call sets its own."""
    import ants

    for key, value in WORKING_LEVELS.items():
        kwargs.setdefault(key, value)
    folder = _SCRATCH.get()
    if folder is not None:
        kwargs.setdefault("outprefix", tempfile.mkdtemp(dir=folder) + os.sep)
    return ants.registration(**kwargs)
