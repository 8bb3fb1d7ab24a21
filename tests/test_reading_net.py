"""ReadingNet (scripts/networks/reading_net.py): trained on a generated cohort's truth through the main job's own
preprocessing, saved with what it learned from, and read by ClotReadingNet as a frozen part of the main job."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from scripts.demo.generator import generate
from scripts.networks.clot_readings import ClotReadingNet, reader_readings
from scripts.networks.reading_net import TARGETS, ReadingNet, _membership_pool
from scripts.training import reading_net as reading_net_training
from scripts.training.reading_net import check_readings, cohort_inputs, train
from tests.test_vessel_input import _parser


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("reading_net_cohort"))
    generate(out, patients=20, seed=11, modalities="ct", spacing=2.0)
    return out


def test_reading_net_learns_the_generated_truth_and_clot_reading_net_reads_with_it_frozen(cohort, tmp_path):
    inputs = cohort_inputs(cohort)
    truth = json.load(open(f"{cohort}/manifest.json"))["truth"]
    assert inputs["image"].shape == (20, 6, 67, 46, 43)  # the main job's box (4 channels) and the 2 memberships
    assert inputs["image"][:, 4:].min() >= 0 and inputs["image"][:, 4:].max() <= 1
    # the targets are the generator's truth, the length as its log
    assert np.exp(inputs["truth"][:, 0]).min() == pytest.approx(min(t["clot_length_mm"] for t in truth.values()))
    assert inputs["truth"][:, 3].max() == max(t["collaterals"] for t in truth.values())
    path = str(tmp_path / "reading_net.pt")
    net = train(cohort, path, epochs=2, batch_size=5)
    saved = torch.load(path, weights_only=True)
    assert saved["patients"] == 20 and saved["cohorts"] == [cohort.rstrip("/").split("/")[-1]]
    # the outputs are in the truth's units: the standardisation of the training targets is undone
    assert np.allclose(net.mean.numpy(), inputs["truth"].mean(0), rtol=1e-5)
    assert np.allclose(net.std.numpy(), inputs["truth"].std(0), rtol=1e-5)
    loaded = ReadingNet.load(path)
    x = inputs["image"][:2].float()
    assert torch.allclose(loaded(x), net(x), atol=1e-5) and loaded(x).shape == (2, len(TARGETS))
    # the main job's ClotReadingNet reads with it: the rules' four readings, then the network's on the box and the
    # rules' memberships
    parser = _parser(["inference.json", "clot_readings.json"])
    parser["reading_net_file"] = path
    reader = parser.get_parsed_content("network_def").train()
    box = x[:, :4]
    readings = reader.measurements(box)
    assert torch.allclose(readings[:, :4], reader_readings(box, reader.reader_settings))
    assert torch.allclose(readings[:, 4:], loaded(torch.cat([box, reader.membership_maps(box)], 1)), atol=1e-4)
    # the linear layer takes each quantity once, as configured: the learned length, perviousness and collaterals and
    # the rules' density
    assert reader.linear_readings == [4, 1, 6, 7]
    assert reader.head[-1].in_features == 4 + reader.tabular.out_features
    image_only = copy.deepcopy(reader).eval()
    del image_only.tabular
    image_only.head = torch.nn.Identity()
    assert torch.allclose(image_only(box), readings[:, [4, 1, 6, 7]])
    with pytest.raises(ValueError, match="linear_readings: \\['learned size'\\] not among"):
        ClotReadingNet(relative=True, reading_net=path, linear_readings=["learned size"])
    with pytest.raises(ValueError, match="linear_readings: \\['learned length'\\] not among"):
        ClotReadingNet(relative=True, linear_readings=["learned length"])  # no learned reader
    # frozen: in eval mode while the linear layer trains, not trained, and inside the fold model's state
    assert not reader.reading_net.training and reader.head.training
    assert not any(p.requires_grad for p in reader.reading_net.parameters())
    assert any(k.startswith("reading_net.features.") for k in reader.state_dict())
    # a file of another network is refused with its name
    torch.save({**saved, "targets": ["clot_length_mm"]}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a ReadingNet"):
        ClotReadingNet(relative=True, reading_net=str(tmp_path / "other.pt"))


def test_reading_net_training_keeps_the_inputs_and_records_its_check_on_another_cohort(cohort, tmp_path, monkeypatch):
    other = str(tmp_path / "other_cohort")
    generate(other, patients=20, seed=12, modalities="ct", spacing=2.0)
    cache = str(tmp_path / "cache")
    path = str(tmp_path / "reading_net.pt")
    net = train(cohort, path, epochs=1, batch_size=5, check=other, cache_dir=cache)
    saved = torch.load(path, weights_only=True)
    assert saved["epochs"] == 1 and list(saved["checked"]) == ["other_cohort"]
    # the check is each reading's r with the other cohort's truth, from the saved network
    checked = check_readings(net, cohort_inputs(other))
    assert saved["checked"]["other_cohort"] == pytest.approx(checked, abs=1e-4)
    assert all(-1 <= r <= 1 for r in checked.values()) and list(checked) == list(TARGETS)
    # a second training on the same cohorts reads the kept inputs and does not preprocess again
    monkeypatch.setattr(reading_net_training, "cohort_inputs", lambda folder: pytest.fail(f"{folder} preprocessed"))
    again = train(cohort, str(tmp_path / "again.pt"), epochs=1, batch_size=5, check=other, cache_dir=cache)
    # the same seed on the same (kept) inputs: the same network
    assert torch.allclose(again.mean, net.mean)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(again.state_dict().values(), net.state_dict().values()))


def test_reading_net_pools_its_first_features_over_each_membership():
    # channels-last features, as the training gives them: each patient's features averaged over its clot and its
    # vessel membership (0 where a membership is empty), in that order, after the deep features' mean and maximum
    features = torch.rand(2, 3, 5, 4, 6).contiguous(memory_format=torch.channels_last_3d)
    weights = torch.rand(2, 2, 5, 4, 6) * 0.5
    weights[1, 0] = 0.0  # the second patient: no clot found
    pooled = _membership_pool(features, weights)
    expected = torch.stack(
        [
            torch.cat(
                [(features[b] * weights[b, m]).sum((1, 2, 3)) / weights[b, m].sum().clamp_min(1.0) for m in (0, 1)]
            )
            for b in range(2)
        ]
    )
    assert pooled.shape == (2, 6) and torch.allclose(pooled, expected, atol=1e-5)
    assert torch.equal(pooled[1, :3], torch.zeros(3))
    assert ReadingNet(membership_pool=True).head[-1].in_features == 2 * 64 + 2 * 12
