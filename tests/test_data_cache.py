"""The disk-backed dataset (``dataset_cache: disk``): the same batches as the in-memory one, its cache reused on the
second epoch, and the configs' training, pretraining and evaluation accept it."""

from __future__ import annotations

import os

import pytest
import torch
from monai.data import DataLoader, PersistentDataset
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, MapTransform, RandFlipd, RandGaussianNoised

from scripts import BundleInputError
from scripts.data.cache import cached_dataset, data_loader
from scripts.data.cohort import read_cohort


class CountCalls(MapTransform):
    """A deterministic transform that counts how often it runs."""

    def __init__(self, keys):
        super().__init__(keys)
        self.calls = 0

    def __call__(self, data):
        self.calls += 1
        return dict(data)


def _chain(seed: int):
    counter = CountCalls(["ncct"])
    chain = Compose(
        [
            LoadImaged(["ncct", "cta"], image_only=True),
            EnsureChannelFirstd(["ncct", "cta"]),
            counter,
            RandFlipd(["ncct", "cta"], prob=0.5, spatial_axis=0),
            RandGaussianNoised(["ncct"], prob=1.0, std=5.0),
        ]
    )
    chain.set_random_state(seed)
    return chain, counter


def _epochs(dataset, n: int, seed: int):
    batches = []
    for epoch in range(n):
        generator = torch.Generator().manual_seed(seed + epoch)
        loader = DataLoader(dataset, batch_size=4, shuffle=True, generator=generator, num_workers=0)
        batches.append([(b["ncct"].clone(), b["cta"].clone()) for b in loader])
    return batches


def test_disk_cache_gives_the_ram_batches_and_is_reused(demo_cohort, tmp_path):
    rows = [{k: r[k] for k in ("patient_id", "ncct", "cta")} for r in read_cohort(demo_cohort)[:12]]
    ram_chain, ram_count = _chain(7)
    disk_chain, disk_count = _chain(7)
    ram = cached_dataset(rows, ram_chain, "ram")
    assert ram_count.calls == len(rows)  # CacheDataset runs the deterministic part up front
    disk = cached_dataset(rows, disk_chain, "disk", str(tmp_path / "cache"))
    assert isinstance(disk, PersistentDataset) and disk_count.calls == 0
    a, b = _epochs(ram, 2, 0), _epochs(disk, 2, 0)
    for epoch_a, epoch_b in zip(a, b):
        for (nc_a, ct_a), (nc_b, ct_b) in zip(epoch_a, epoch_b):
            assert torch.equal(nc_a, nc_b) and torch.equal(ct_a, ct_b)
    assert not torch.equal(a[0][0][0], a[1][0][0])  # the random part differs between epochs
    assert ram_count.calls == len(rows)
    assert disk_count.calls == len(rows)  # first epoch filled the cache, the second read it back
    assert len(os.listdir(tmp_path / "cache")) == len(rows)
    again, again_count = _chain(7)
    _epochs(cached_dataset(rows, again, "disk", str(tmp_path / "cache")), 1, 0)
    assert again_count.calls == 0  # another run (or DDP rank) on the same folder reuses it
    other, other_count = _chain(7)
    other.transforms[2].keys = ("ncct", "cta")  # a changed deterministic setting: new cache files, not stale ones
    _epochs(cached_dataset(rows, other, "disk", str(tmp_path / "cache")), 1, 0)
    assert other_count.calls == len(rows) and len(os.listdir(tmp_path / "cache")) == 2 * len(rows)


def test_unknown_cache_mode_is_one_line(tmp_path):
    with pytest.raises(BundleInputError, match="--dataset_cache 'ssd': use one of ram, disk, none"):
        cached_dataset([], Compose([]), "ssd")
    with pytest.raises(BundleInputError, match="needs --cache_dir"):
        cached_dataset([], Compose([]), "disk", None)


def test_a_deterministic_full_batch_is_collated_once_and_anything_else_is_a_plain_loader():
    data = [{"image": torch.full((2, 3), float(i)), "patient_id": f"p{i}"} for i in range(5)]
    dataset = cached_dataset(data, Compose([]), cache="ram")
    once = data_loader(dataset, batch_size=8, collate_once=True, shuffle=False)
    assert len(once) == 1
    first, second = list(once), list(once)
    assert first[0] is second[0]  # the same batch object every epoch: stacked once
    (plain,) = list(DataLoader(dataset, batch_size=8, shuffle=False))
    assert torch.equal(first[0]["image"], plain["image"]) and first[0]["patient_id"] == plain["patient_id"]
    # random transforms (collate_once false), several batches, a sampler or drop_last: a DataLoader, batches made anew
    for kwargs in (
        {"batch_size": 8},
        {"batch_size": 2, "collate_once": True},
        {"batch_size": 8, "collate_once": True, "drop_last": True},
        {"batch_size": 8, "collate_once": True, "sampler": range(5)},
    ):
        assert isinstance(data_loader(dataset, **kwargs), DataLoader), kwargs
