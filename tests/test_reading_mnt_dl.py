"""MNT-DL on the mirrored vessel box taught the reader's readings (configs/mnt_dl.json, ``--model mnt_dl``): its reading
targets are the main job's reader's own outputs, and the configuration lowers its loss through monai.bundle and is
evaluated and inferred like every model folder."""

from __future__ import annotations

import ast
import json
import os

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scripts import BundleInputError
from scripts.demo.generator import generate
from scripts.demo.job import MODELS, job_configs
from scripts.networks.clot_readings import ClotReadingNet
from scripts.networks.reading_mnt_dl import ReaderMapsd, ReaderReadingsd, ReadingMNTDL
from scripts.training.losses import ReadingSupervisionLoss
from scripts.training.pretraining import load_pretrained_encoder
from tests.conftest import ROOT
from tests.test_vessel_input import _parser, evaluated_and_inferred
from tests.test_workflow import _workflow, train_recording_losses

CONFIGS = ["train.json", "clot_readings.json", "mnt_dl.json"]
# the 6 mm side_datalist cohort: 10 slices (two neighbourhoods of 5), a network small enough for a test; fp32, because
# at this size (1 x 1 feature maps in layer4) bf16 autocast gives a non-finite gradient within a few steps (the 2 mm
# demo trains in bf16)
TINY = {"vessel_spacing": 6.0, "num_slices": 10, "widths": [4, 8, 8, 16], "train_batch_size": 4, "precision": "fp32"}


def _vessels(batch: int = 3) -> torch.Tensor:
    """(B, 4, 24, 16, 10) windowed NCCT, CTA and their mirrors: a mirrored vessel along W in each hemisphere, the
    occluded (first) half's vessel unfilled over a stretch whose length differs per patient."""
    x = torch.full((batch, 4, 24, 16, 10), 0.35)
    x[:, 1::2] = 0.1
    x[:, 1::2, 5:7, 2:14, 4:6] = 0.9  # the vessel and its mirror, enhanced
    for b in range(batch):
        x[b, 1, 5:7, 4 : 6 + 2 * b, 4:6] = 0.12  # the clot: no contrast
    return x


def test_reading_targets_are_the_main_job_reader_s_outputs():
    """MNT-DL is taught the rules' four readings; with the learned reader (``--reading_net_file``), the readings the
    main job's linear layer takes (its ``linear_readings``: the learned length, perviousness and collaterals and the
    rules' density; ``--linear_readings None``: all eight), standardised by each training batch's statistics or, with
    ``cumulative_targets``, by those of all training batches so far."""
    learned = os.path.join(ROOT, "models", "reading_net", "model.pt")
    network = _parser(CONFIGS, **TINY, reading_net_file=learned).get_parsed_content("network_def")
    reader = _parser(["train.json", "clot_readings.json"], **TINY).get_parsed_content("network_def")
    assert isinstance(network, ReadingMNTDL) and isinstance(reader, ClotReadingNet)
    box, clinical = _vessels(), torch.zeros(3, len(network.tabular.columns))
    readings = reader.measurements(box)  # the rules' four, then the learned reader's four
    assert readings.shape == (3, 8) and network.reading_columns == reader.linear_readings == [4, 1, 6, 7]
    assert readings[:, 0].unique().numel() == 3  # three clot lengths read three ways
    x = torch.stack([ReaderMapsd("image", reader)({"image": v})["image"] for v in box])  # the network's input
    assert x.shape[1] == network.in_channels == 6 and torch.equal(x[:, :4], box)
    maps = reader.membership_maps(box)
    assert torch.equal(x[:, 4:], maps)  # the reader's vessel and clot memberships, appended
    clot_voxels = maps[:, 1].flatten(1).sum(1)
    assert clot_voxels[0] < clot_voxels[1] < clot_voxels[2]  # the clot map grows with the unfilled stretch
    cached = torch.stack([ReaderReadingsd("image", reader)({"image": v})["readings"] for v in x])
    assert torch.allclose(cached, readings, atol=1e-5)  # the preprocessing's cached targets: the same readings
    with pytest.raises(ValueError, match="ReaderReadingsd"):  # the learned four are not read inside the network
        network.forward_all(x, clinical)
    k, chosen = network.num_neighbourhoods, readings[:, [4, 1, 6, 7]]
    network.eval()  # the running statistics: mean 0, variance 1 before any training
    with torch.no_grad():
        out = network.forward_all(x, clinical, readings=cached)
    assert out.shape == (3, 1 + k + 8)
    assert torch.allclose(out[:, -4:], chosen / np.sqrt(1 + 1e-5), atol=1e-5)
    network.train()  # training: the batch's own standardisation of the same readings
    with torch.no_grad():
        out = network.forward_all(x, clinical, readings=cached)
    expected = (chosen - chosen.mean(0)) / torch.sqrt(chosen.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(out[:, -4:], expected, atol=1e-4)
    overlay = [*CONFIGS, "experiments/reading_bottleneck.json"]
    cumulative = _parser(overlay, **TINY).get_parsed_content("network_def").train()
    with torch.no_grad():  # two training batches: the targets by the mean and variance of both
        cumulative.forward_all(x[:2], clinical[:2], readings=cached[:2])
        out = cumulative.forward_all(x[1:], clinical[1:], readings=cached[1:])
    first, second = chosen[:2], chosen[1:]
    mean, var = (first.mean(0) + second.mean(0)) / 2, (first.var(0) + second.var(0)) / 2
    assert torch.allclose(out[:, -4:], (second - mean) / torch.sqrt(var + 1e-5), atol=1e-4)
    every = _parser(CONFIGS, **TINY, reading_net_file=learned, linear_readings=None).get_parsed_content("network_def")
    assert every.readings == 8 and every.reading_columns == list(range(8))
    rules = _parser(CONFIGS, **TINY).get_parsed_content("network_def")
    assert rules.readings == 4  # the default: the rules' four, read inside the network when not given
    with torch.no_grad():
        out = rules.eval().forward_all(x, clinical)
    assert torch.allclose(out[:, -4:], readings[:, :4] / np.sqrt(1 + 1e-5), atol=1e-5)


def test_the_outcome_is_read_off_the_predicted_readings_which_only_the_reader_teaches():
    """``configs/experiments/reading_bottleneck.json``: the logit is one linear layer on the predicted readings plus the
    clinical term; the outcome's gradient reaches that layer but not the reading head (a sequential bottleneck); the
    two layers are the optimizer's second parameter group."""
    overlay = [*CONFIGS, "experiments/reading_bottleneck.json"]
    network = _parser(overlay, **TINY).get_parsed_content("network_def").eval()
    torch.manual_seed(0)
    x, clinical = torch.rand(3, 6, 24, 16, 10), torch.rand(3, len(network.tabular.columns))
    torch.nn.init.normal_(network.clinical_head.weight)
    volume = network.classifier.features(network.slice_features(x))
    expected = network.reading_logit(network.reading_head(volume)) + network.clinical_head(network.tabular(clinical))
    logit = network(x, clinical)
    assert torch.allclose(logit, expected, atol=1e-5)
    logit.sum().backward()
    assert network.reading_logit.weight.grad.abs().sum() > 0 and network.clinical_head.weight.grad.abs().sum() > 0
    assert network.reading_head.weight.grad is None and network.classifier.fc.weight.grad is None
    body, head = network.parameter_groups(0.01)  # the logit's layers at their own rate, the network at its own
    head_ids = {id(p) for layer in (network.reading_logit, network.clinical_head) for p in layer.parameters()}
    assert {id(p) for p in head["params"]} == head_ids and head["lr"] == 0.01 and head["weight_decay"] == 0
    assert {id(p) for p in body["params"]} == {id(p) for p in network.parameters()} - head_ids
    plain = _parser(CONFIGS, **TINY).get_parsed_content("network_def")
    assert plain.reading_logit is None  # the default: the published classifier's own layer on the volume feature
    assert {id(p) for p in plain.parameter_groups(0.01)[1]["params"]} >= {
        id(p) for p in plain.classifier.fc.parameters()
    }


def test_the_bottleneck_overlay_trains_its_logit_layers_at_their_own_one_cycle_rate(side_datalist, tmp_path):
    """Through monai.bundle, ``reading_bottleneck.json``'s two parameter groups follow one one-cycle schedule each:
    the network's peaking at ``learning_rate``, the logit's layers at ``head_learning_rate``, in a fixed ratio."""
    overlay = [*CONFIGS, "experiments/reading_bottleneck.json"]
    wf = _workflow(
        "train_fold", overlay, datalist_file=side_datalist, ckpt_dir=str(tmp_path), fold=0, **{**TINY, "max_epochs": 10}
    )
    wf.initialize()
    optimizer, network = wf.parser.get_parsed_content("optimizer"), wf.parser.get_parsed_content("network")
    start = network.reading_logit.weight.detach().clone()
    rates: list = []
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda e: rates.append([g["lr"] for g in optimizer.param_groups])
    )
    wf.run()
    wf.finalize()
    rates = np.array(rates)
    assert rates.shape[1] == 2 and len(rates) >= 3
    np.testing.assert_allclose(rates[:, 1] / rates[:, 0], 0.01 / 0.001, rtol=1e-6)
    assert rates[:, 0].max() == pytest.approx(0.001, rel=0.05) and rates[:, 1].max() == pytest.approx(0.01, rel=0.05)
    assert rates[-1, 1] < rates[:, 1].max() / 10  # annealed by the end
    assert not torch.allclose(network.reading_logit.weight.detach(), start)  # the logit's layer trained


def test_training_boxes_move_a_few_millimetres_and_keep_their_readings(side_datalist, tmp_path):
    """configs/mnt_dl.json's training (and reading pretraining) boxes: the whole box, all four channels together,
    moved by up to ``max_shift_mm`` per axis (edges repeated), so that the network cannot tie a reading to one voxel;
    the reading targets are the unmoved box's."""
    settings = {**TINY, "max_shift_mm": 12.0, "datalist_file": side_datalist, "ckpt_dir": str(tmp_path)}
    parser = _parser(CONFIGS, **settings)  # a 2-voxel move at the test box's 6 mm
    with open(side_datalist) as f:
        item = json.load(f)["training"][0]
    reference = parser.get_parsed_content("validate#preprocessing")(dict(item))
    reference.update(parser.get_parsed_content("target_transforms")[0](dict(reference)))
    padded = torch.nn.functional.pad(reference["image"][None], [2] * 6, mode="replicate")[0]
    h, w, d = reference["image"].shape[1:]
    train, offsets = parser.get_parsed_content("train#preprocessing"), set()
    for seed in range(6):
        train.set_random_state(seed)
        moved = train(dict(item))
        # a plain tensor: a batched MetaTensor carrying the pad and crop in its metadata failed when the loss indexed
        # its per-column values (MONAI reads any index of a batched MetaTensor as patients; seen at 2 mm, 9 columns)
        assert type(moved["image"]) is torch.Tensor
        assert torch.equal(moved["readings"], reference["readings"])
        found = [
            (i, j, k)
            for i in range(5)
            for j in range(5)
            for k in range(5)
            if torch.allclose(moved["image"], padded[:, i : i + h, j : j + w, k : k + d], atol=1e-6)
        ]
        assert found, seed  # the unmoved box, moved as a whole by at most two voxels
        offsets.update(found)
    assert len(offsets) > 1


def test_a_resumed_fold_continues_its_one_cycle_schedule(side_datalist, tmp_path):
    """The one-cycle scheduler is in the resume checkpoint: a fold interrupted at the start of epoch 3 and run again
    steps through epochs 3 and 4 at the learning rates of an uninterrupted run (without it the schedule restarts at
    its lowest rate)."""

    class Interrupted(Exception):
        pass

    def rates(ckpt: str, stop: bool = False) -> dict:
        settings = {**TINY, "max_epochs": 4, "val_interval": 4}
        wf = _workflow("train_fold", CONFIGS, datalist_file=side_datalist, ckpt_dir=ckpt, fold=0, **settings)
        wf.initialize()
        trainer, seen = wf.parser.get_parsed_content("train#trainer"), {}
        optimizer = wf.parser.get_parsed_content("optimizer")

        def _record(engine) -> None:
            seen[(engine.state.epoch, engine.state.iteration)] = optimizer.param_groups[0]["lr"]

        def _stop(engine) -> None:
            raise Interrupted

        trainer.add_event_handler(Events.ITERATION_COMPLETED, _record)
        if stop:
            trainer.add_event_handler(Events.EPOCH_STARTED(once=3), _stop)
            with pytest.raises(RuntimeError):  # monai.bundle wraps the handler's exception
                wf.run()
            return seen
        wf.run()
        wf.finalize()
        return seen

    whole = rates(str(tmp_path / "whole"))
    rates(str(tmp_path / "killed"), stop=True)
    resumed = rates(str(tmp_path / "killed"))
    later = {k: v for k, v in whole.items() if k[0] >= 3}
    assert resumed.keys() == later.keys() and len(later) > 1
    assert all(resumed[k] == pytest.approx(later[k], rel=1e-9) for k in later), (resumed, later)


def test_reading_supervision_loss_adds_the_readings_mean_squared_error():
    logits = torch.tensor([[0.5, -1.0, 0.2, 0.1, 0.0, 0.3, 0.4, 0.1, -0.2, 0.3, 1.0]])
    target = torch.tensor([1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    outcome = bce(logits[:, 0], target) + 0.5 * (bce(logits[:, 1], target) + bce(logits[:, 2], target))
    readings = ((logits[:, 3:7] - logits[:, 7:]) ** 2).mean()
    assert float(ReadingSupervisionLoss(0.5, 2.0)(logits, target)) == pytest.approx(float(outcome + 2 * readings))
    assert float(ReadingSupervisionLoss(0.5, 0.0)(logits, target)) == pytest.approx(float(outcome))
    assert float(ReadingSupervisionLoss(0.5, 2.0, outcome=0.0)(logits, None)) == pytest.approx(float(2 * readings))


def test_mnt_dl_configuration_lowers_the_loss_and_is_evaluated_and_inferred(side_datalist, demo_cohort, tmp_path):
    ckpt = str(tmp_path / "models")
    fit = {**TINY, "max_epochs": 25, "learning_rate": 0.003, "patience": 50}
    losses = train_recording_losses(CONFIGS, side_datalist, ckpt, {0: fit, 1: {**TINY, "max_epochs": 1}})
    assert np.mean(losses[0][-3:]) < 0.8 * np.mean(losses[0][:3]), np.round(losses[0], 3).tolist()
    args = [f"--{k}={json.dumps(v).replace(' ', '')}" for k, v in TINY.items()]
    evaluated, pred = evaluated_and_inferred(
        [f"configs/{c}" for c in CONFIGS[1:]], side_datalist, demo_cohort, ckpt, tmp_path, args
    )
    assert float(pred["probability"]) == pytest.approx(evaluated, abs=1e-5)


def test_reading_pretraining_learns_the_pool_s_readings_and_fine_tuning_starts_from_them(side_datalist, tmp_path):
    """``--unlabeled`` with ``--model mnt_dl``: pretrain.json + the overlays + reading_pretrain.json teaches the network
    the reader's readings of an unlabeled pool (no label needed) and writes the encoder, the classifier and the reading
    head; training's ``load_pretrained_encoder`` with the overlay's prefixes loads all of them."""
    pool = generate(str(tmp_path / "pool"), patients=20, seed=7, modalities="ct", spacing=6.0, unlabeled=True)
    files = [f"configs/{c}" for c in ["pretrain.json", *CONFIGS[1:], "reading_pretrain.json"]]
    ckpt = str(tmp_path / "ssl")
    settings = {**TINY, "ssl_epochs": 20, "ssl_lr": 0.003, "unlabeled_file": pool, "ckpt_dir": ckpt}
    settings["datalist_file"] = side_datalist  # the leakage guard's split
    os.chdir(ROOT)
    wf = ConfigWorkflow(config_file=files, workflow_type="train", run_id="pretraining", **settings)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("pretrain#trainer")
    losses: list = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: losses.append([]))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses[-1].append(float(e.state.output["loss"])))
    wf.run()
    wf.finalize()
    epochs = [float(np.mean(x)) for x in losses]
    assert len(epochs) == 20 and np.mean(epochs[-3:]) < 0.7 * np.mean(epochs[:3]), np.round(epochs, 3).tolist()
    board = EventAccumulator(f"{ckpt}/pretrain/tensorboard")
    board.Reload()  # the loss curve a user watches: every iteration's loss
    curve = [e.value for e in board.Scalars("reading_loss_iteration")]
    assert np.allclose(curve, [v for epoch in losses for v in epoch], rtol=1e-4)
    saved = torch.load(f"{ckpt}/pretrain/encoder.pt", weights_only=True)["model"]
    parts = {"stem", "local", "slice_attention", "classifier", "reading_head", "reading_norm"}
    assert {k.split(".")[0] for k in saved} == parts  # no neighbourhood heads: the pool taught them nothing
    parser = _parser(["train.json", *CONFIGS[1:]], **TINY)
    network = load_pretrained_encoder(
        parser.get_parsed_content("network_def"), f"{ckpt}/pretrain/encoder.pt", parser["pretrained_prefixes"]
    )
    state = network.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


def test_simsiam_on_the_vessel_box_pretrains_the_encoder_that_training_and_reading_pretraining_start_from(
    side_datalist, tmp_path
):
    """``--ssl simsiam|both`` with ``--model mnt_dl``: SimSiam on MNT-DL's own input writes the encoder only (stem,
    local networks, slice attention); the folds (``simsiam``) and the reading pretraining (``both``) load it."""
    pool = generate(str(tmp_path / "pool"), patients=20, seed=7, modalities="ct", spacing=6.0, unlabeled=True)
    configs = job_configs("mnt_dl", pretrained=True, ssl="simsiam")
    ckpt = str(tmp_path / "ssl_simsiam")
    settings = {**TINY, "ssl_epochs": 3, "unlabeled_file": pool, "ckpt_dir": ckpt, "datalist_file": side_datalist}
    os.chdir(ROOT)
    files = ast.literal_eval(configs["simsiam"])
    wf = ConfigWorkflow(config_file=files, workflow_type="train", run_id="pretraining", **settings)
    wf.initialize()
    start = {k: v.clone() for k, v in wf.parser.get_parsed_content("simsiam").encoder.state_dict().items()}
    wf.run()
    wf.finalize()
    encoder = f"{ckpt}/pretrain/encoder.pt"
    saved = torch.load(encoder, weights_only=True)["model"]
    assert {k.split(".")[0] for k in saved} == {"stem", "local", "slice_attention"}
    assert not all(torch.equal(start[k], v) for k, v in saved.items())  # SimSiam moved the encoder
    parser = _parser([c.removeprefix("configs/") for c in ast.literal_eval(configs["train"])], **TINY)
    trained = load_pretrained_encoder(
        parser.get_parsed_content("network_def"), encoder, parser.get_parsed_content("pretrained_prefixes")
    )
    reading = [c.removeprefix("configs/") for c in ast.literal_eval(job_configs("mnt_dl", True, "both")["pretrain"])]
    pretraining = _parser(reading, **TINY, pretrained_encoder=encoder).get_parsed_content("network")
    for network in (trained, pretraining):
        state = network.state_dict()
        assert all(torch.equal(state[k].float(), v.float()) for k, v in saved.items())
    with pytest.raises(BundleInputError, match="--ssl simsiam"):
        job_configs("scanet", pretrained=True, ssl="simsiam")


@pytest.mark.parametrize("model", ["scanet", "resnet34"])
def test_scanet_and_resnet34_take_mnt_dl_s_input_and_are_evaluated_and_inferred(
    model, side_datalist, demo_cohort, tmp_path
):
    """``--model scanet|resnet34``: the box, mirror and reader's memberships MNT-DL is given (for SCANet a square box,
    the same channels on the same spacing), the outcome alone taught (no reading targets); trained through
    monai.bundle, evaluated and inferred like every model folder."""
    overlays = [name.strip("'") for name in MODELS[model].split(",")]
    square = {"vessel_box_mm": [[-45, 45], [-45, 45], [-27, 27]], "network_def#neighbourhood_size": 5}
    tiny = {**TINY, **square} if model == "scanet" else TINY  # SCANet: 16 x 16 x 10 at 6 mm, two neighbourhoods of 5
    files = ["train.json", *(name[len("configs/") :] for name in overlays)]
    parser = _parser(files, **tiny, datalist_file=side_datalist, ckpt_dir=str(tmp_path / "check"))
    with open(side_datalist) as f:
        item = json.load(f)["training"][0]
    image = parser.get_parsed_content("validate#preprocessing")(dict(item))["image"]
    maps = parser.get_parsed_content("reader_def").membership_maps(image[None, :4])[0]
    assert image.shape[0] == parser.get_parsed_content("in_channels") == 6 and torch.equal(image[4:], maps)
    assert maps[0].max() > 0.5  # the reader finds the arteries in this box too
    if model == "resnet34":  # the very input MNT-DL trains on
        mnt = _parser(CONFIGS, **TINY, datalist_file=side_datalist, ckpt_dir=str(tmp_path / "mnt"))
        assert torch.equal(image, mnt.get_parsed_content("validate#preprocessing")(dict(item))["image"])
    assert parser["target_transforms"] == [] and parser["label"] is None
    ckpt = str(tmp_path / "models")
    losses = train_recording_losses(files, side_datalist, ckpt, {k: {**tiny, "max_epochs": 2} for k in (0, 1)})
    assert all(len(v) == 2 and np.isfinite(v).all() for v in losses.values())
    args = [f"--{k}={json.dumps(v).replace(' ', '')}" for k, v in tiny.items()]
    evaluated, pred = evaluated_and_inferred(overlays, side_datalist, demo_cohort, ckpt, tmp_path, args)
    assert float(pred["probability"]) == pytest.approx(evaluated, abs=1e-5)
