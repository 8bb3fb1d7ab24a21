"""Demo scans as a scanner writes them: the MNI-space demo images moved into a random head pose, resampled on an
axial grid of thick slices (its own grid per acquisition), CT with a headrest under the head. The true
MNI -> scanner transform is returned, so preprocessing accuracy can be measured against it.

Poses: rotation up to 15 deg about z and 8 deg about x and y, translation up to 20 mm; a second acquisition of the
same session (CTA after NCCT, FLAIR after DWI) moves a little more (3 deg, 5 mm), as patients do between series.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

# acquisition -> (sequences sharing the grid, slice thickness in mm, in-plane spacing factor of the demo grid)
ACQUISITIONS = {
    "ncct": (("ncct",), 5.0),
    "cta": (("cta",), 1.0),
    "dwi": (("b0", "b1000", "adc"), 5.0),
    "flair": (("flair",), 5.0),
}
SECOND = {"cta": "ncct", "flair": "dwi"}  # acquired after, in the same session
HEADREST_HU = 150.0


def rigid(rng: np.random.Generator, max_deg: Tuple[float, float, float], max_mm: float) -> np.ndarray:
    """A random 4x4 rigid transform (RAS mm): rotations up to ``max_deg`` about x, y, z, shift up to ``max_mm``."""
    angles = rng.uniform(-1, 1, 3) * np.asarray(max_deg)
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    matrix[:3, 3] = rng.uniform(-max_mm, max_mm, 3)
    return matrix


def session_poses(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """MNI -> scanner transforms of every acquisition of one session."""
    poses = {"ncct": rigid(rng, (8, 8, 15), 20), "dwi": rigid(rng, (8, 8, 15), 20)}
    for second, first in SECOND.items():
        poses[second] = rigid(rng, (3, 3, 3), 5) @ poses[first]
    return poses


def to_scanner(
    volume: np.ndarray, affine: np.ndarray, pose: np.ndarray, in_plane: float, thickness: float, background: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Resample an MNI-space ``volume`` (voxel -> MNI ``affine``) into an axial scanner grid (RAS, ``in_plane`` x
    ``in_plane`` x ``thickness`` mm) covering the moved head with a 30 mm margin below it (table/headrest room)."""
    shape = np.array(volume.shape)
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    world = (pose @ affine @ corners.T)[:3].T
    low, high = world.min(0), world.max(0)
    low[1] -= 30
    spacing = np.array([in_plane, in_plane, thickness])
    size = np.ceil((high - low) / spacing).astype(int) + 1
    native = np.diag([*spacing, 1.0])
    native[:3, 3] = low
    to_mni_voxel = np.linalg.inv(affine) @ np.linalg.inv(pose) @ native
    grid = np.indices(size).reshape(3, -1)
    coords = to_mni_voxel[:3, :3] @ grid + to_mni_voxel[:3, 3:4]
    data = ndimage.map_coordinates(volume, coords, order=1, cval=background).reshape(size)
    return data.astype(np.float32), native


def add_headrest(ct: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A curved 8 mm headrest (150 HU) 6 mm behind the head, not touching it (field-of-view removal cuts it)."""
    head = ct > -300
    if not head.any():
        return ct
    spacing = np.abs(np.diag(affine)[:3])
    behind = ndimage.distance_transform_edt(~head, sampling=spacing)
    y = np.arange(ct.shape[1])[None, :, None]
    back = np.argwhere(head.any(axis=(0, 2)))[0, 0] + 15 / spacing[1]  # the rear 15 mm of the head
    shell = (behind > 6) & (behind <= 14) & (y <= back)
    return np.where(shell, HEADREST_HU, ct)
