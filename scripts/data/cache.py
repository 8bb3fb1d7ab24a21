"""Where the deterministic part of the transform chain (loading, checks, orientation, windows, crops, resizing) is
kept between epochs, chosen by the configs' ``dataset_cache``:

- ``ram`` (default): MONAI ``CacheDataset``, every item in memory (about 1 MB per patient for the vessel box,
  7 MB at paper size: 50 GB for 5,000 patients);
- ``disk``: MONAI ``PersistentDataset`` in ``cache_dir``, one file per item, read back each epoch: memory stays flat
  as the cohort grows; the file name hashes the item and the deterministic transforms' settings, so a changed window
  or grid makes new files instead of reusing stale ones; DDP ranks and later runs on the same cohort share the
  folder (MONAI writes each file under a temporary name and renames it);
- ``none``: MONAI ``Dataset``, everything recomputed each epoch.

The random transforms after the first randomizable one run every epoch in all three.

:func:`data_loader` adds one more: a training set without random transforms that fits in one batch is the same batch
every epoch, so it is collated once (``collate_once``; ClotReadingNet's full-batch training: stacking 170 vessel boxes
took about 1 s of every 1.4 s epoch on 2 CPU cores).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, Sequence

from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing

from scripts import BundleInputError

MODES = ("ram", "disk", "none")


def cached_dataset(
    data: Sequence[Dict[str, Any]],
    transform: Callable,
    cache: str = "ram",
    cache_dir: str | None = None,
    num_workers: int = 0,
) -> Dataset:
    """The MONAI dataset over ``data`` with ``transform``, its deterministic part cached as ``cache`` says.

    Args:
        data: the patients' items.
        transform: the preprocessing (its random transforms run on every access).
        cache: "ram" (``CacheDataset``), "disk" (``PersistentDataset`` in ``cache_dir``) or "none".
        cache_dir: the disk cache's folder.
        num_workers: workers filling the RAM cache.

    Returns:
        the dataset.
    """
    if cache == "ram":
        return CacheDataset(data, transform, cache_rate=1.0, num_workers=num_workers, progress=False)
    if cache == "disk":
        if not cache_dir:
            raise BundleInputError("--dataset_cache disk needs --cache_dir (a folder for the cached items)")
        return PersistentDataset(data, transform, cache_dir=cache_dir, hash_transform=pickle_hashing)
    if cache == "none":
        return Dataset(data, transform)
    raise BundleInputError(f"--dataset_cache '{cache}': use one of {', '.join(MODES)}")


class OnceCollated:
    """The one batch of a full-batch loader over a deterministic dataset, collated on first use and yielded every
    epoch (``len`` 1, as the loader)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.batch: Any | None = None

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Any]:
        if self.batch is None:
            (self.batch,) = list(self.loader)
        yield self.batch


def data_loader(dataset: Dataset, batch_size: int, collate_once: bool = False, **kwargs: Any) -> Iterable:
    """MONAI ``DataLoader(dataset, batch_size, **kwargs)``; with ``collate_once`` (set it only when the dataset's
    transforms are deterministic) and a dataset that fits in one batch, no sampler and no ``drop_last``: that batch,
    collated once (:class:`OnceCollated`)."""
    loader = DataLoader(dataset, batch_size=batch_size, **kwargs)
    whole = 0 < len(dataset) <= batch_size and kwargs.get("sampler") is None and not kwargs.get("drop_last", False)
    return OnceCollated(loader) if collate_once and whole else loader
