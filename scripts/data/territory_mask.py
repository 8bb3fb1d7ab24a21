"""The "region" input mode of the published loader: each image multiplied by the arterial territories of the
recorded occlusion site (cohort columns ``location`` and ``side``), dilated, so the network sees only the tissue
the occluded artery supplies. Images must be in MNI space (preprocessed, or the demo cohort).

Site -> territories (JHU level-2 atlas): ICA -> ACA + MCA, M1/M2/M3 -> MCA, ACA -> ACA, PCA -> PCA,
BA/VA -> PCA + vertebrobasilar on both sides (the basilar supplies both). ``both_sides`` takes the territories
of both hemispheres, as the published final code did.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage

from scripts import BundleInputError
from scripts.data.anatomy import DEFAULT_ATLAS_DIR, TERRITORIES, grid_maps

SITE_TERRITORIES = {
    "ICA": ("ACA", "MCA"),
    "M1": ("MCA",),
    "M2": ("MCA",),
    "M3": ("MCA",),
    "ACA": ("ACA",),
    "PCA": ("PCA",),
    "BA": ("PCA", "VB"),
    "VA": ("PCA", "VB"),
}
MIDLINE_SITES = ("BA", "VA")


def territory_labels(location: str, side: str, both_sides: bool = False) -> Sequence[int]:
    """Atlas labels supplied from an occlusion ``location`` on ``side`` (L/R)."""
    location, side = str(location).upper(), str(side).upper()
    if location not in SITE_TERRITORIES or side not in ("L", "R"):
        raise BundleInputError(f"region mode: occlusion site '{location}' / side '{side}' is unknown")
    sides = ("L", "R") if both_sides or location in MIDLINE_SITES else (side,)
    return sorted(TERRITORIES[f"{t}_{s}"] for t in SITE_TERRITORIES[location] for s in sides)


class TerritoryMaskd(MapTransform):
    """Multiply images (channel-first MetaTensors, MNI space) by the dilated territories of the item's occlusion
    site; the mask is computed once per grid and site."""

    def __init__(
        self,
        keys: KeysCollection,
        location_key: str = "location",
        side_key: str = "side",
        dilation_voxels: int = 2,
        both_sides: bool = False,
        atlas_dir: str | None = DEFAULT_ATLAS_DIR,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.location_key, self.side_key = location_key, side_key
        self.dilation_voxels, self.both_sides, self.atlas_dir = int(dilation_voxels), bool(both_sides), atlas_dir
        self._cache: Dict[Any, np.ndarray] = {}

    def mask(self, shape: Sequence[int], affine: np.ndarray, labels: Sequence[int]) -> np.ndarray:
        """The dilated territory mask (bool, ``shape``) for an image grid."""
        affine_key = np.asarray(affine, dtype=np.float64).tobytes()
        key = (tuple(shape), affine_key, tuple(labels))
        if key not in self._cache:
            _, territories = grid_maps(tuple(int(s) for s in shape), affine_key, self.atlas_dir)
            region = np.isin(territories, labels)
            if self.dilation_voxels > 0:
                region = ndimage.binary_dilation(region, iterations=self.dilation_voxels)
            self._cache[key] = region
        return self._cache[key]

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        missing = [k for k in (self.location_key, self.side_key) if not d.get(k)]
        if missing:
            raise BundleInputError(
                f"patient {d.get('patient_id', '?')}: region mode needs the cohort column(s) {', '.join(missing)}"
            )
        labels = territory_labels(d[self.location_key], d[self.side_key], self.both_sides)
        for key in self.key_iterator(d):
            image = d[key]
            region = self.mask(
                image.shape[1:], image.affine.numpy() if torch.is_tensor(image.affine) else image.affine, labels
            )
            d[key] = image * torch.as_tensor(region, dtype=image.dtype)
        return d
