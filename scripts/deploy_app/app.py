"""MONAI Deploy application: NCCT + CTA (or the MR sequences) in, outcome probability out.

``python -m scripts.deploy_app.app -i INPUT -o OUTPUT -m MODELS`` (from the bundle root), where INPUT holds one
NIfTI file (``ncct.nii.gz``) or one DICOM series folder (``ncct/``) per sequence of the model, MODELS is the
folder written by :mod:`scripts.deploy_app.export` (``fold{k}/model.ts``, MONAI Deploy's named models), and
OUTPUT receives ``prediction.json``: the fold-ensemble probability, its SD over folds, the prediction at the
evaluation's cut-off and the cut-off.

Two operators on the Holoscan-based MONAI Deploy SDK: :class:`OutcomeInferenceOperator` (a thin inference
operator: the bundle's own preprocessing, read from the ``inference.json`` embedded in the TorchScript, then each
fold's ``model.ts``; used instead of ``MonaiBundleInferenceOperator`` because the model takes several named
sequences as channels, which that operator's single-image input mapping does not express) and
:class:`PredictionWriterOperator`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Dict, List

import torch
from monai.bundle import ConfigParser
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Operator, OperatorSpec

from scripts import BundleInputError
from scripts.data.io import atomic_write_json
from scripts.data.profile import case_profile, ood_warning
from scripts.inference.predict import combine_folds

logger = logging.getLogger(__name__)


def _sequence_path(folder: str, key: str) -> str:
    for name in (f"{key}.nii.gz", f"{key}.nii", key):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise BundleInputError(f"{folder}: no {key} image ({key}.nii.gz or a DICOM series folder {key}/)")


class OutcomeInferenceOperator(Operator):
    """Input folder -> fold-ensemble prediction dict. Output port ``result``."""

    def __init__(self, fragment: Fragment, *args: Any, app_context: AppContext, **kwargs: Any) -> None:
        self.app_context = app_context
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("result")

    def _fold_models(self) -> List[Any]:
        models = self.app_context.models
        if models is None:
            raise BundleInputError(
                f"{self.app_context.model_path}: no models (export them with scripts.deploy_app.export)"
            )
        if not hasattr(models, "items"):
            return [models]
        # fold order (fold2 before fold10): evaluation's Platt parameters are per fold
        return [m for _, m in sorted(models.items(), key=lambda kv: int(re.sub(r"\D", "", kv[0]) or 0))]

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        models = self._fold_models()
        extra = {"inference.json": "", "cutoffs.json": "", "input_profile.json": ""}
        torch.jit.load(models[0].path, map_location="cpu", _extra_files=extra)
        parser = ConfigParser(json.loads(extra["inference.json"]))
        keys = parser.get_parsed_content("image_keys")
        item = {k: _sequence_path(self.app_context.input_path, k) for k in keys}
        image = parser.get_parsed_content("preprocessing")(item)["image"].unsqueeze(0)
        probs = []
        for model in models:
            net = model.predictor
            device = next(net.parameters()).device
            with torch.no_grad():
                probs.append(float(torch.sigmoid(net(image.to(device))).reshape(-1)[0]))
        stored = json.loads(extra["cutoffs.json"])
        cutoff = float(stored["ensemble"])
        mean, sd = combine_folds([[q] for q in probs], stored)  # Platt-scaled per fold when evaluation fitted it
        p = float(mean[0])
        profile = json.loads(extra["input_profile.json"] or "null")  # absent from models exported before 0.6
        result = {"probability": p, "probability_sd": float(sd[0]), "prediction": int(p >= cutoff), "cutoff": cutoff,
                  "folds": len(probs), "warning": ood_warning(case_profile(item, keys), profile)}  # fmt: skip
        if result["warning"]:
            logger.warning("input unlike the training cohort: %s", result["warning"])
        logger.info("outcome probability %.4f (%d fold models)", p, len(probs))
        op_output.emit(result, "result")


class PredictionWriterOperator(Operator):
    """Writes the ``result`` dict to ``OUTPUT/prediction.json`` (atomically)."""

    def __init__(self, fragment: Fragment, *args: Any, output_folder: str, **kwargs: Any) -> None:
        self.output_folder = output_folder
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("result")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        result: Dict[str, Any] = op_input.receive("result")
        os.makedirs(self.output_folder, exist_ok=True)
        atomic_write_json(os.path.join(self.output_folder, "prediction.json"), result)


class OutcomeApp(Application):
    """Thrombectomy outcome prediction as a MONAI Deploy application."""

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        infer = OutcomeInferenceOperator(self, CountCondition(self, 1), app_context=app_context, name="outcome")
        writer = PredictionWriterOperator(self, output_folder=str(app_context.output_path), name="writer")
        self.add_flow(infer, writer, {("result", "result")})


if __name__ == "__main__":
    OutcomeApp().run()
