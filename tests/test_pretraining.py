"""SimSiam through monai.bundle: pretrain.json on a generated unlabeled pool (loss falls, no collapse, cosine
lr with a fixed predictor lr, leakage guard), a deliberately collapsing setup caught by the monitor, and
fine-tuning with train.json --pretrained_encoder and a frozen-encoder warm-up."""

from __future__ import annotations

import csv
import logging
import math
import os

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from scripts import BundleInputError
from scripts.training.pretraining import encoder_state
from tests.conftest import ROOT

TINY = {"spatial_size": [24, 24], "num_slices": 10, "widths": [4, 8, 8, 16], "num_heads": 2, "dropout": 0.0}
SSL = {"ssl_dim": 32, "ssl_pred_dim": 8, "ssl_batch_size": 8, "crop_scale": 0.8}


def _bundle_error(excinfo: pytest.ExceptionInfo) -> str:
    """The BundleInputError message behind MONAI's 'Failed to evaluate' wrapper."""
    error: BaseException | None = excinfo.value
    while error is not None and not isinstance(error, BundleInputError):
        error = error.__cause__
    assert error is not None, "no BundleInputError in the exception chain"
    return str(error)


def _workflow(config: str, run_id: str, **override) -> ConfigWorkflow:
    os.chdir(ROOT)
    wf = ConfigWorkflow(
        config_file=os.path.join("configs", config),
        meta_file="configs/metadata.json",
        logging_file="configs/logging.conf",
        workflow_type="train",
        run_id=run_id,
        **{**TINY, **override},
    )
    wf.initialize()
    return wf


@pytest.fixture(scope="module")
def pool(demo_cohort, datalist_2fold, tmp_path_factory):
    """An unlabeled pool of 20 generated patients, plus two cohort patients (one of the test set, one of
    fold 0) that the leakage guard must remove."""
    from scripts.data.split import load_datalist
    from scripts.demo.generator import generate

    out = tmp_path_factory.mktemp("pool")
    path = generate(str(out), patients=20, seed=5, modalities="ct", spacing=6.0, unlabeled=True, world="uniform")
    datalist = load_datalist(datalist_2fold)
    intruders = [datalist["test"][0], datalist["training"][0]]
    with open(path, "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(
            [d["patient_id"], d["side"], d["ncct"], d["cta"]] for d in intruders
        )
    return path, [d["patient_id"] for d in intruders]


@pytest.fixture(scope="module")
def pretrained(pool, datalist_2fold, tmp_path_factory):
    """Pretrain 20 epochs; record the epoch metrics and the learning rates of both groups per epoch."""
    ckpt = str(tmp_path_factory.mktemp("ssl"))
    wf = _workflow(
        "pretrain.json",
        "pretraining",
        unlabeled_file=pool[0],
        datalist_file=datalist_2fold,
        ckpt_dir=ckpt,
        ssl_epochs=20,
        ssl_lr=0.5,
        **SSL,
    )
    trainer = wf.parser.get_parsed_content("pretrain#trainer")
    items = wf.parser.get_parsed_content("pretrain#dataset").data
    history: list = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: history.append({**e.state.metrics, "lr": [g["lr"] for g in e.optimizer.param_groups]}),
    )
    wf.run()
    wf.finalize()
    return ckpt, history, items


def test_pretraining_lowers_the_loss_without_collapse(pretrained, pool):
    ckpt, history, items = pretrained
    ids = {d["patient_id"] for d in items}
    assert len(ids) == 20 and not ids & set(pool[1])  # the leakage guard removed the cohort patients
    losses = [h["ssl_loss"] for h in history]
    assert len(losses) == 20 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1
    healthy = 1 / 32**0.5
    assert all(h["collapse_score"] > 0.2 * healthy for h in history)
    # cosine decay on encoder + projector (step after each epoch), predictor lr fixed
    assert history[0]["lr"][1] == history[-1]["lr"][1] == pytest.approx(0.5)
    assert history[4]["lr"][0] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 5 / 20)))
    assert history[-1]["lr"][0] == pytest.approx(0.0, abs=1e-12)
    assert os.path.isfile(os.path.join(ckpt, "pretrain", "encoder.pt"))


def test_pretraining_reads_the_pool_through_the_disk_cache(pool, datalist_2fold, tmp_path):
    """``dataset_cache: disk`` for pretraining: the pool's deterministic part lands in the cache folder once and the
    two views stay random per access."""
    from monai.data import PersistentDataset

    cache = tmp_path / "cache"
    wf = _workflow(
        "pretrain.json",
        "pretraining",
        unlabeled_file=pool[0],
        datalist_file=datalist_2fold,
        ckpt_dir=str(tmp_path),
        dataset_cache="disk",
        cache_dir=str(cache),
        **SSL,
    )
    dataset = wf.parser.get_parsed_content("pretrain#dataset")
    assert isinstance(dataset, PersistentDataset)
    first, second = dataset[0], dataset[0]
    assert len(os.listdir(cache)) == 1 and not torch.equal(first["view1"], second["view1"])


def test_leakage_guard_can_refuse(pool, datalist_2fold, tmp_path):
    wf = _workflow(
        "pretrain.json",
        "pretraining",
        unlabeled_file=pool[0],
        datalist_file=datalist_2fold,
        ckpt_dir=str(tmp_path),
        on_overlap="refuse",
        **SSL,
    )
    with pytest.raises(RuntimeError) as excinfo:
        wf.parser.get_parsed_content("pretrain#dataset")
    assert "holds 2 patient(s) of the test set or reported folds" in _bundle_error(excinfo)


def test_collapsing_setup_is_caught_by_the_monitor(pool, datalist_2fold, tmp_path, caplog):
    """No predictor, no stop-gradient, no output BatchNorm: the trivial constant solution is reachable."""
    wf = _workflow(
        "pretrain.json",
        "pretraining",
        unlabeled_file=pool[0],
        datalist_file=datalist_2fold,
        ckpt_dir=str(tmp_path),
        ssl_epochs=8,
        ssl_lr=0.5,
        use_predictor=False,
        stop_gradient=False,
        output_bn=False,
        fix_predictor_lr=False,
        **SSL,
    )
    logger = logging.getLogger("scripts.training.pretraining")
    logger.addHandler(caplog.handler)  # the bundle's logging.conf has replaced the root handlers
    try:
        wf.run()
    finally:
        logger.removeHandler(caplog.handler)
    trainer = wf.parser.get_parsed_content("pretrain#trainer")
    wf.finalize()
    assert trainer.state.metrics["collapse_score"] < 0.2 / 32**0.5
    assert "SimSiam collapse" in caplog.text


def test_fine_tuning_loads_the_encoder_and_warms_up_frozen(pretrained, datalist_2fold, tmp_path):
    ckpt, _, _ = pretrained
    encoder_file = os.path.join(ckpt, "pretrain", "encoder.pt")
    saved = torch.load(encoder_file, weights_only=True)["model"]
    wf = _workflow(
        "train.json",
        "train_fold",
        datalist_file=datalist_2fold,
        ckpt_dir=str(tmp_path),
        fold=0,
        pretrained_encoder=encoder_file,
        freeze_encoder_epochs=1,
        max_epochs=2,
        batch_size=4,
    )
    network = wf.parser.get_parsed_content("network")
    for key, value in encoder_state(network.state_dict()).items():
        assert torch.equal(value.cpu(), saved[key]), key
    snapshots: list = []
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: snapshots.append({k: v.detach().clone() for k, v in network.named_parameters()}),
    )
    wf.run()
    wf.finalize()
    stem, head = "stem.0.weight", "classifier.fc.weight"
    assert torch.equal(snapshots[0][stem], saved[stem])  # epoch 1: encoder frozen
    assert not torch.equal(snapshots[1][stem], saved[stem])  # epoch 2: encoder learns
    assert not torch.equal(snapshots[0][head], snapshots[1][head])
    wider = _workflow(
        "train.json",
        "train_fold",
        datalist_file=datalist_2fold,
        ckpt_dir=str(tmp_path),
        fold=0,
        pretrained_encoder=encoder_file,
        widths=[4, 8, 8, 32],
    )
    with pytest.raises(RuntimeError) as excinfo:
        wider.parser.get_parsed_content("network")
    assert "shape mismatch local.2.0.bn1.bias (16,) vs (32,)" in _bundle_error(excinfo)


def test_interrupted_pretraining_resumes(pool, datalist_2fold, tmp_path):
    args = dict(unlabeled_file=pool[0], datalist_file=datalist_2fold, ckpt_dir=str(tmp_path), ssl_epochs=4, **SSL)
    wf = _workflow("pretrain.json", "pretraining", **args)
    trainer = wf.parser.get_parsed_content("pretrain#trainer")
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    wf.run()
    wf.finalize()
    encoder = os.path.join(str(tmp_path), "pretrain", "encoder.pt")
    assert not os.path.exists(encoder)
    assert os.path.isfile(os.path.join(str(tmp_path), "pretrain", "resume_checkpoint_epoch=2.pt"))
    wf = _workflow("pretrain.json", "pretraining", **args)
    trainer = wf.parser.get_parsed_content("pretrain#trainer")
    epochs: list = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    wf.run()
    wf.finalize()
    assert epochs == [3, 4] and os.path.isfile(encoder)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine schedule resumed too
