"""Experiment tracking: `--tracking mlflow` (MONAI's MLFlowHandler) records one run per fold with the training
loss and the inner-validation ROC-AUC in a local SQLite store."""

from __future__ import annotations

import os

import pytest
from monai.bundle import ConfigWorkflow

from tests.conftest import ROOT

mlflow = pytest.importorskip("mlflow", reason="optional: pip install -r requirements-tracking.txt")


def test_mlflow_tracking_records_the_fold(side_datalist, tmp_path):
    os.chdir(ROOT)
    uri = "sqlite:///" + str(tmp_path / "mlruns.db")
    wf = ConfigWorkflow(
        config_file="configs/train.json",
        meta_file="configs/metadata.json",
        logging_file="configs/logging.conf",
        workflow_type="train",
        run_id="train_fold",
        tracking="mlflow",
        datalist_file=side_datalist,
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        tracking_uri=uri,
        fold=1,
        max_epochs=2,
        spatial_size=[24, 24],
        num_slices=10,
        widths=[4, 8, 8, 16],
        num_heads=2,
        batch_size=4,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["thrombectomy_outcome"], output_format="list")
    assert [r.info.run_name for r in runs] == ["fold1"]
    client = mlflow.tracking.MlflowClient(uri)
    auc = client.get_metric_history(runs[0].info.run_id, "val_auc")
    loss = client.get_metric_history(runs[0].info.run_id, "train_loss")
    assert [m.step for m in auc] == [1, 2] and all(0.0 <= m.value <= 1.0 for m in auc)
    assert len(loss) >= 2 and all(m.value > 0 for m in loss)
