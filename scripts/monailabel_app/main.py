"""MONAI Label app: ``monailabel start_server --app scripts/monailabel_app --studies /data/images
--conf bundle_root $PWD`` (from the bundle root, after training and evaluation). Needs the full
``pip install monailabel==0.8.5`` (a CUDA machine: monailabel's server imports torchvision, which has no build
for the CPU torch pinned here); the infer task itself only needs the monailabel wheel (``--no-deps``).

Training through MONAI Label is not wired: it would need a ``TrainTask`` that writes the datastore's labels into
the cohort contract (outcome grades per patient, dates for the test split) and then calls ``run training``; MONAI
Label's datastore holds images and segmentation labels, not outcome tables, so the cohort CSV stays the source.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from scripts.monailabel_app.outcome_task import OutcomeInferTask  # noqa: E402


class OutcomeApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.bundle_root = conf.get("bundle_root", os.path.dirname(os.path.dirname(app_dir)))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="thrombectomy-outcome",
            description="Thrombectomy outcome prediction (MNT-DL fold ensemble)",
        )

    def init_infers(self) -> Dict[str, InferTask]:
        overlays = [c for c in self.conf.get("config_files", "configs/inference.json").split(",") if c]
        return {"outcome": OutcomeInferTask(self.bundle_root, overlays, device=self.conf.get("device", "cpu"))}

    def init_trainers(self) -> Dict[str, Any]:
        return {}
