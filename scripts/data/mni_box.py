"""A box of MNI space as network input: the vessels where the clot is, at the resolution they were imaged.

The papers' networks see 224 x 224 slices (about 1 mm in-plane) so that the thrombus and the vessels beyond it are
visible; shrinking the whole head to a small grid for CPU training loses them. :class:`MNIBoxd` crops every image
to one box in world millimetres (by default both internal carotid arteries, the circle of Willis, both middle
cerebral arteries with their M1 and M2 segments and the Sylvian fissures: x -66..66, y -60..30, z -48..36 mm),
whatever the grid spacing, so the crop keeps the grid's own resolution. The box is symmetric about the midline, so
a left-right flip maps each hemisphere onto the other (the other hemisphere is each patient's own control).
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, SpatialCrop

from scripts import BundleInputError
from scripts.data.anatomy import box_slices

# both ICA / MCA courses (ICA from the skull base, M1, M2 in the insula) with margin, MNI mm (RAS)
VESSEL_BOX_MM = ((-66.0, 66.0), (-60.0, 30.0), (-48.0, 36.0))


class MNIBoxd(MapTransform):
    """Crop each image (C, X, Y, Z; a MetaTensor in an RAS MNI grid) to ``box_mm`` at its own spacing.

    A scan that is not in the MNI grid (it does not cover the box, or its grid is rotated) raises
    ``BundleInputError`` naming the image, instead of a crop of the wrong place.
    """

    def __init__(
        self, keys: KeysCollection, box_mm: Sequence[Sequence[float]] = VESSEL_BOX_MM, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.box_mm = [tuple(float(v) for v in pair) for pair in box_mm]

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            affine = image.affine.numpy() if isinstance(getattr(image, "affine", None), torch.Tensor) else None
            if affine is None:
                raise BundleInputError(f"{key}: no affine (load it with LoadImaged to crop the MNI box)")
            try:
                slices = box_slices(affine, image.shape[1:], self.box_mm)
            except ValueError as err:
                source = getattr(image, "meta", {}).get("filename_or_obj", key)
                raise BundleInputError(f"{source}: not in the bundle's MNI grid: {err}") from None
            d[key] = SpatialCrop(roi_slices=slices)(image)
        return d
