"""MONAI Label infer task: the bundle's fold ensemble on one patient -> ``{label, score}``.

A subclass of MONAI Label's ``InferTask`` interface (``monailabel.interfaces.tasks.infer_v2``), not of
``BundleInferTask``: that one restores a segmentation into the input image (``add_post_restore``) and imports
``monailabel.transform.post``, which needs torchvision; this task only classifies. It builds the network and
preprocessing from the bundle's own ``configs/inference.json`` (plus overlays, or the model folder's recorded
configuration: :mod:`scripts.training.model_record`), so MONAI Label predicts exactly what ``monai.bundle run``
predicts.

Request: ``{"image": PATH}`` where PATH is the first sequence of the model (NCCT for the CT model; a NIfTI file
or DICOM series directory); the other sequences come as request keys (``{"cta": PATH}``) or, by MONAI Label
datastore convention, from files beside the image named with the sequence in place of the first one
(``case7_ncct.nii.gz`` -> ``case7_cta.nii.gz``). A whole DICOM study as PACS sends it comes as ``{"study": DIR}``
(or as an ``image`` folder holding several series): the series are chosen by ``configs/series_rules.json``
(:mod:`scripts.data.dicom_study`, ``"series_rules"`` in the request for a site's file) and the choice is returned
as ``series``. Result: ``(None, {"label": 0|1, "score": p, ...})``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Sequence, Tuple

from monai.bundle import ConfigParser
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from scripts import BundleInputError, find_input_error
from scripts.data.dicom_study import index_folder, study_series
from scripts.data.profile import case_profile, ood_warning, read_profile
from scripts.inference.predict import ensemble_predict
from scripts.training.kfold import fold_checkpoints


class OutcomeInferTask(InferTask):
    """Classification infer task for MONAI Label over the bundle at ``bundle_root``."""

    def __init__(
        self,
        bundle_root: str,
        config_files: Sequence[str] = ("configs/inference.json",),
        ckpt_dir: str | None = None,
        overrides: Dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        self.bundle_root = os.path.abspath(bundle_root)
        self.parser = ConfigParser()
        self.parser.read_config([os.path.join(self.bundle_root, f) for f in config_files])
        self.ckpt_dir = ckpt_dir or os.path.join(self.bundle_root, "models")
        self.parser.update(  # ckpt_dir: the input checks read the fold models' grid.json from it
            {
                "bundle_root": self.bundle_root,
                "ckpt_dir": self.ckpt_dir,
                "device": f"$torch.device('{device}')",
                **(overrides or {}),
            }
        )
        self.image_keys = list(self.parser.get_parsed_content("model_image_keys"))
        meta_file = os.path.join(self.bundle_root, "configs", "metadata.json")
        meta = ConfigParser.load_config_file(meta_file) if os.path.isfile(meta_file) else {}
        super().__init__(
            type=InferType.CLASSIFICATION,
            labels={"favourable outcome": 1},
            dimension=3,
            description=meta.get("task", "thrombectomy outcome prediction") + f" from {', '.join(self.image_keys)}",
            config={"device": device},
        )

    def is_valid(self) -> bool:
        try:
            fold_checkpoints(self.ckpt_dir)
        except BundleInputError:
            return False
        return os.path.isfile(os.path.join(self.ckpt_dir, "cutoffs.json"))

    def _item(self, request: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any] | None]:
        """The request as a data item, and the series choice when it named a study."""
        image, study = request.get("image"), request.get("study")
        if not study and image and os.path.isdir(image) and len(index_folder(image)) > 1:
            study = image
        if study:
            item, record = study_series(study, self.image_keys, request.get("series_rules"))
            return {"patient_id": str(request.get("patient_id", "case")), **item}, record
        if not image:
            raise BundleInputError("request has no 'image'")
        first = self.image_keys[0]
        item = {"patient_id": str(request.get("patient_id", "case")), first: image}
        for key in self.image_keys[1:]:
            path = request.get(key) or os.path.join(os.path.dirname(image), os.path.basename(image).replace(first, key))
            if path == image or not os.path.exists(path):
                raise BundleInputError(f"request: no {key} image (give it as '{key}' or beside {image})")
            item[key] = path
        return item, None

    def __call__(self, request: Dict[str, Any]) -> Tuple[None, Dict[str, Any]]:
        item, series = self._item(request)
        try:
            mean, sd, cutoff = self._predict(item)
        except Exception as error:  # MONAI wraps transform errors: give the server the input error itself
            found = find_input_error(error)
            if found is None:
                raise
            raise found from None
        p = float(mean[0])
        warning = ood_warning(case_profile(item, self.image_keys), read_profile(self.ckpt_dir))
        result = {"label": int(p >= cutoff), "score": p, "score_sd": float(sd[0]), "cutoff": cutoff, "warning": warning}
        return None, {**result, **({"series": series} if series else {})}

    def _predict(self, item: Dict[str, Any]) -> Tuple[Any, Any, float]:
        return ensemble_predict(
            network=self.parser.get_parsed_content("network"),
            preprocessing=self.parser.get_parsed_content("model_preprocessing"),
            data=[item],
            ckpt_dir=self.ckpt_dir,
            device=self.parser.get_parsed_content("device"),
            inferer=self.parser.get_parsed_content("inferer"),
            postprocessing=self.parser.get_parsed_content("postprocessing"),
            batch_size=1,
        )
