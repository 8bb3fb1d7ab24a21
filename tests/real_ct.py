"""The real head CT of Debian's invesalius-examples (GPL-2; installed by .ci/run, never committed) as NIfTI."""

from __future__ import annotations

import os
import plistlib
import tarfile

import nibabel as nib
import numpy as np

CRANIUM = "/usr/share/doc/invesalius-examples/examples/Cranium.inv3"


def cranium_nifti(out: str, rotate_deg: float = 0.0, shift_mm: float = 0.0) -> str | None:
    """Write the CT (int16 HU, 0.96 x 0.96 x 1.5 mm, with skull, face and headrest) to ``out``; optionally
    rotated about the head's z axis and shifted along x, by changing the affine only. None if not installed."""
    if not os.path.isfile(CRANIUM):
        return None
    with tarfile.open(CRANIUM) as tar:
        members = {os.path.basename(m.name): m for m in tar.getmembers()}
        meta = plistlib.loads(tar.extractfile(members["main.plist"]).read())
        raw = tar.extractfile(members[meta["matrix"]["filename"]]).read()
    volume = np.frombuffer(raw, dtype=np.int16).reshape(meta["matrix"]["shape"]).transpose(2, 1, 0)  # z,y,x -> x,y,z
    sx, sy, sz = meta["spacing"]
    affine = np.diag([-sx, sy, sz, 1.0])  # checked visually: face towards +y, vertex towards +z
    centre = affine[:3, :3] @ (np.array(volume.shape) / 2)
    affine[:3, 3] = -centre
    t = np.deg2rad(rotate_deg)
    motion = np.eye(4)
    motion[:3, :3] = [[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]
    motion[0, 3] = shift_mm
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume), motion @ affine), out)
    return out


def cta_standin(ncct: str, out: str, offset_mm=(6.0, -4.0, 3.0), seed: int = 0) -> str:
    """A CTA stand-in for the real NCCT: the same head moved by ``offset_mm`` (RAS), other contrast (x 1.3) and
    noise, and contrast-filled vessels (300 HU tubes of 2 mm radius, 70 mm long, six directions through the
    centre of the brain tissue, drawn on brain tissue only), so that it passes the CTA contrast check."""
    img = nib.load(ncct)
    rng = np.random.default_rng(seed)
    data = np.asarray(img.dataobj).astype(np.float32)
    tissue = (data > 15) & (data < 60)
    centre = np.argwhere(tissue).mean(axis=0)
    spacing = np.abs(np.diag(img.affine)[:3])
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape], indexing="ij"), -1) * spacing
    vessels = np.zeros(data.shape, bool)
    for direction in ((1, 0, 0), (0, 1, 0), (1, 1, 0), (1, -1, 0), (1, 0, 1), (0, 1, -1)):
        d = np.asarray(direction, float) / np.linalg.norm(direction)
        rel = grid - centre * spacing
        along = rel @ d
        dist = np.linalg.norm(rel - along[..., None] * d, axis=-1)
        vessels |= (dist <= 2.0) & (np.abs(along) <= 35)
    data = np.where(data > 0, data * 1.3 + rng.normal(0, 5, data.shape), data)
    data[vessels & tissue] = 300 + rng.normal(0, 5, int((vessels & tissue).sum()))
    moved = img.affine.copy()
    moved[:3, 3] += offset_mm
    nib.save(nib.Nifti1Image(data.astype(np.int16), moved), out)
    return out
