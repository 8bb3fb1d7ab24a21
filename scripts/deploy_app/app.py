"""MONAI Deploy application: NCCT + CTA (or the MR sequences) in, outcome probability out, as DICOM too.

``python -m scripts.deploy_app -i INPUT -o OUTPUT -m MODELS [--rules FILE]`` (from the bundle root), MODELS being the
folder written by :mod:`scripts.deploy_app.export` (``fold{k}/model.ts``, MONAI Deploy's named models). INPUT is
either

- **a DICOM study as PACS sends it** (one folder of mixed files): the app is built as MONAI Deploy apps are,
  ``DICOMDataLoaderOperator`` -> :class:`StudySeriesSelectorOperator` (MONAI Deploy's selector running the bundle's
  rules, ``configs/series_rules.json``: the same choice as the CLIs' ``--study``) -> :class:`SeriesVolumesOperator`
  (MONAI Deploy's ``DICOMSeriesToVolumeOperator``, for every selected series) -> :class:`OutcomeInferenceOperator`
  -> :class:`OutcomeSRWriterOperator` (the DICOM answers, :mod:`scripts.inference.dicom_answer`) and
  :class:`PredictionWriterOperator`; or
- one NIfTI file (``ncct.nii.gz``) or one DICOM series folder (``ncct/``) per sequence of the model.

A model that reads more than the images (the main job's ClotReadingNet: the occlusion side and site, age, IVT,
NIHSS) takes them from ``case.json`` in INPUT (``{"side": "L", "location": "M1", "age": 70, "ivt": 1, "nihss":
14}``), age and sex also from a study's DICOM header; a missing one is named in one line.

OUTPUT receives ``prediction.json`` (the fold-ensemble probability, its SD over folds, the prediction at the
evaluation's cut-off, the cut-off, the warning; the main job's clot measurements) and the main job's
``key_image.png``; from a study also ``series_selection.json`` and the answer as DICOM objects of the study
(:mod:`scripts.inference.dicom_answer`): ``outcome_sr.dcm``, and for the main job ``measurements_sr.dcm`` (TID 1500),
``clot_seg.dcm`` (vessel and clot on the CTA's slices) and ``key_image_sc.dcm``.

:class:`OutcomeInferenceOperator` is used instead of ``MonaiBundleInferenceOperator`` because the model takes several
named sequences as channels, which that operator's single-image input mapping does not express; it runs the bundle's
own preprocessing, read from the ``inference.json`` embedded in the TorchScript, then each fold's ``model.ts``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from typing import Any, Dict, List

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Fragment, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries
from monai.deploy.operators import (
    DICOMDataLoaderOperator,
    DICOMSeriesSelectorOperator,
    DICOMSeriesToVolumeOperator,
)
from monai.transforms import Orientation

from scripts import BundleInputError
from scripts.data.dicom_study import RULES_FILE, group_series, header, load_rules, named_rules, select, selection_record
from scripts.data.io import atomic_write_json
from scripts.data.profile import case_profile, ood_warning
from scripts.inference.dicom_answer import write_dicom_answer
from scripts.inference.dicom_images import box_affine
from scripts.inference.measurements import measurement_fields, write_key_image
from scripts.inference.predict import combine_folds

logger = logging.getLogger(__name__)
KEY_VIEW = "key_view"  # the result's key image array, on its way to key_image.png
CLOT = "clot"  # the result's clot memberships and their box, on their way to the DICOM SEG


def _sequence_path(folder: str, key: str) -> str | None:
    for name in (f"{key}.nii.gz", f"{key}.nii", key):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


CASE_FILE = "case.json"


def case_values(folder: str, dataset: Any = None) -> Dict[str, Any]:
    """The cohort columns a model may need beside the images (occlusion ``location`` and ``side``, clinical values):
    ``folder/case.json`` when the input holds one ({"side": "L", "location": "M1", "age": 70, ...}), and the patient's
    age and sex from a DICOM header (``dataset``) where the file does not give them."""
    values: Dict[str, Any] = {}
    path = os.path.join(folder, CASE_FILE) if os.path.isdir(folder) else ""
    if path and os.path.isfile(path):
        try:
            with open(path) as f:
                values = json.load(f)
        except ValueError as error:
            raise BundleInputError(f"{path}: not JSON ({str(error).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise BundleInputError(f'{path}: expected an object of cohort columns, e.g. {{"side": "L"}}')
    age = str(getattr(dataset, "PatientAge", "") or "")
    if "age" not in values and age[:-1].isdigit() and age.endswith("Y"):  # DICOM AS: "071Y"
        values["age"] = int(age[:-1])
    if "sex" not in values and str(getattr(dataset, "PatientSex", "") or "") in ("M", "F"):
        values["sex"] = str(dataset.PatientSex)
    return values


def needed_values(parser: ConfigParser) -> List[str]:
    """The cohort columns the exported model reads beside the images: its clinical columns, and the occlusion side
    when its preprocessing turns the occluded hemisphere first (``MirrorAlignd``)."""
    columns = list(parser.get_parsed_content("clinical_columns") or {}) if parser.get("clinical_columns") else []
    turns = "MirrorAlignd" in json.dumps(parser.get("align_transforms") or [])
    return (["side"] if turns else []) + columns


def _embedded(path: str) -> Dict[str, str]:
    """The files :mod:`scripts.deploy_app.export` embedded in a fold's TorchScript."""
    extra = {
        "inference.json": "",
        "cutoffs.json": "",
        "input_profile.json": "",
        "metadata.json": "",
        "trained_on.json": "",
        "measurements.json": "",
    }
    torch.jit.load(path, map_location="cpu", _extra_files=extra)
    return extra


def _fold_models(app_context: AppContext) -> List[Any]:
    models = app_context.models
    if models is None:
        raise BundleInputError(f"{app_context.model_path}: no models (export them with scripts.deploy_app.export)")
    if not hasattr(models, "items"):
        return [models]
    # fold order (fold2 before fold10): evaluation's Platt parameters are per fold
    return [m for _, m in sorted(models.items(), key=lambda kv: int(re.sub(r"\D", "", kv[0]) or 0))]


def model_keys(app_context: AppContext) -> List[str]:
    """The sequences the exported models read (their embedded ``inference.json``'s ``image_keys``)."""
    extra = _embedded(_fold_models(app_context)[0].path)
    return list(ConfigParser(json.loads(extra["inference.json"])).get_parsed_content("image_keys"))


class StudySeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """MONAI Deploy's series selector with the bundle's rules and choice (:func:`scripts.data.dicom_study.select`,
    the same as the CLIs' ``--study``): one series per sequence the model reads, or one line naming the input
    folder and what is missing. Outputs ``study_selected_series_list`` (the SDK's type, selection name = sequence)."""

    def __init__(self, fragment: Fragment, *args: Any, keys: List[str], rules: str, where: str, **kwargs: Any) -> None:
        self.keys, self.rules_path, self.where = keys, rules, where
        self.record: Dict[str, Any] = {}
        super().__init__(fragment, *args, rules=json.dumps(named_rules(load_rules(rules))), all_matched=True, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        super().setup(spec)
        spec.output("selection_record")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        # the SDK's compute also logs the chosen series' UID: a DICOM identifier, kept out of the logs here
        studies = op_input.receive(self.input_name_study_list)
        op_output.emit(self.filter(self._load_rules(), studies), self.output_name_selected_series)
        op_output.emit(self.record, "selection_record")

    def filter(
        self,
        selection_rules: Any,
        dicom_study_list: Any,
        all_matched: bool = False,
        sort_by_sop_instance_count: bool = False,
    ) -> List[StudySelectedSeries]:
        entries, studies = [], {}
        for study in dicom_study_list or []:
            for series in study.get_all_series():
                studies[id(series)] = study
                for sop in series.get_sop_instances():
                    dataset = sop.get_native_sop_instance()
                    entries.append((str(dataset.filename), header(dataset), series))
        chosen = select(group_series(entries), self.keys, selection_rules, where=self.where)
        self.record = selection_record(chosen)
        first = next(iter(chosen.values()))["series"].source
        selected = StudySelectedSeries(studies[id(first)])
        for key, choice in chosen.items():
            series = choice["series"].source
            files = set(choice["series"].files)
            if len(files) != len(series.get_sop_instances()):  # an ``instances`` rule kept part of the series
                series = copy.copy(series)
                series._sop_instances = [
                    s for s in series._sop_instances if str(s.get_native_sop_instance().filename) in files
                ]
            selected.add_selected_series(SelectedSeries(key, series, None))
        return [selected]


class SeriesVolumesOperator(DICOMSeriesToVolumeOperator):
    """MONAI Deploy's ``DICOMSeriesToVolumeOperator`` (pixel data decoded by pydicom, rescaled to HU, slices ordered
    by position, RAS affine) for every selected series; the SDK's emits only the first. Output ``images``:
    {selection name: the SDK's Image}; output ``header``: the first selected instance's dataset (age and sex for a
    model with clinical values, :func:`case_values`)."""

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name_series)
        spec.output("images")
        spec.output("header")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        selected = op_input.receive(self.input_name_series)[0]
        images = {}
        for series in selected.selected_series:
            one = StudySelectedSeries(selected.study)
            one.add_selected_series(series)
            images[series.selection_name] = self.convert_to_image([one])
        op_output.emit(images, "images")
        first = selected.selected_series[0].series.get_sop_instances()[0]
        op_output.emit(first.get_native_sop_instance(), "header")


def _as_metatensor(image: Any, name: str) -> MetaTensor:
    """An SDK Image (``DHW`` array, ``nifti_affine_transform``) as the channel-first RAS MetaTensor ``LoadImaged``
    gives from a file (the transposition MONAI Deploy's ``InMemImageReader`` applies)."""
    meta = image.metadata()
    array = np.asarray(image.asnumpy(), dtype=np.float32).T[None]
    return MetaTensor(
        torch.from_numpy(np.ascontiguousarray(array)),
        affine=torch.as_tensor(meta["affine"]),
        meta={"filename_or_obj": name},
    )


class OutcomeInferenceOperator(Operator):
    """The sequences -> fold-ensemble prediction dict (output port ``result``). With ``from_study`` the images come
    in memory on input port ``images`` (:class:`SeriesVolumesOperator`); otherwise it reads the per-sequence files
    of the input folder."""

    def __init__(
        self, fragment: Fragment, *args: Any, app_context: AppContext, from_study: bool = False, **kwargs: Any
    ) -> None:
        self.app_context, self.from_study = app_context, from_study
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        if self.from_study:
            spec.input("images")
            spec.input("header")
        spec.output("result")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        models = _fold_models(self.app_context)
        extra = _embedded(models[0].path)
        parser = ConfigParser(json.loads(extra["inference.json"]))
        keys = parser.get_parsed_content("image_keys")
        folder = str(self.app_context.input_path)
        header = None
        if self.from_study:
            images = op_input.receive("images")
            header = op_input.receive("header")
            item = {k: _as_metatensor(images[k], f"{folder}: {k.upper()} series") for k in keys}
        else:
            item = {k: _sequence_path(folder, k) for k in keys}
            for k, path in item.items():
                if path is None:
                    raise BundleInputError(f"{folder}: no {k} image ({k}.nii.gz or a DICOM series folder {k}/)")
        values = case_values(folder, header)
        missing = [name for name in needed_values(parser) if name not in values]
        if missing:
            example = ", ".join(f'"{name}": ...' for name in missing)
            raise BundleInputError(
                f"{folder}: the model needs {', '.join(missing)}: give them in {folder}/{CASE_FILE} ({{{example}}})"
            )
        preprocessing = parser.get_parsed_content("preprocessing")
        ready = preprocessing({"patient_id": "input", **values, **item})
        inputs = [ready["image"].unsqueeze(0)] + (
            [torch.as_tensor(ready["clinical"])[None]] if "clinical" in ready else []
        )
        probs = []
        for model in models:
            net = model.predictor
            device = next(net.parameters()).device
            with torch.no_grad():
                probs.append(float(torch.sigmoid(net(*[t.to(device) for t in inputs])).reshape(-1)[0]))
        stored = json.loads(extra["cutoffs.json"])
        cutoff = float(stored["ensemble"])
        mean, sd = combine_folds([[q] for q in probs], stored)  # Platt-scaled per fold when evaluation fitted it
        p = float(mean[0])
        profile = json.loads(extra["input_profile.json"] or "null")  # absent from models exported before 0.6
        result = {
            "probability": p,
            "probability_sd": float(sd[0]),
            "prediction": int(p >= cutoff),
            "cutoff": cutoff,
            "folds": len(probs),
            "warning": ood_warning(case_profile(item, keys), profile),
        }
        # the main job's clot measurements: fixed readings of the configured network, no fold weights needed (nor its
        # learned reader, which the fold models hold and the package need not ship beside them)
        if "reading_net_file" in parser:
            parser["reading_net_file"] = None
        reader = parser.get_parsed_content("network_def")
        if hasattr(reader, "clinical_measurements"):
            reference = json.loads(extra["measurements.json"] or "{}")  # absent from older exports
            result["measurements"] = measurement_fields(values, reader.clinical_measurements(inputs[0])[0], reference)
            result[KEY_VIEW] = reader.key_views(inputs[0])[0].numpy()  # written as key_image.png, not into the JSON
            if self.from_study and "cta" in item:  # where the clot was read, for the SEG on the CTA's slices
                cta = Orientation("RAS")(item["cta"])
                affine = box_affine(preprocessing, cta)
                memberships = reader.membership_maps(inputs[0])[0].numpy()
                result[CLOT] = {"memberships": memberships, "affine": affine, "side": values.get("side")}
        if result["warning"]:
            logger.warning("input unlike the training cohort: %s", result["warning"])
        logger.info("outcome probability %.4f (%d fold models)", p, len(probs))
        op_output.emit(result, "result")


class PredictionWriterOperator(Operator):
    """Writes the ``result`` dict to ``OUTPUT/prediction.json`` (atomically), and the main job's key image to
    ``OUTPUT/key_image.png``."""

    def __init__(self, fragment: Fragment, *args: Any, output_folder: str, **kwargs: Any) -> None:
        self.output_folder = output_folder
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("result")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        result: Dict[str, Any] = op_input.receive("result")
        os.makedirs(self.output_folder, exist_ok=True)
        if KEY_VIEW in result:
            write_key_image(os.path.join(self.output_folder, "key_image.png"), result[KEY_VIEW])
        answer = {k: v for k, v in result.items() if k not in (KEY_VIEW, CLOT)}
        atomic_write_json(os.path.join(self.output_folder, "prediction.json"), answer)


class OutcomeSRWriterOperator(Operator):
    """Writes the answer's DICOM objects (:func:`scripts.inference.dicom_answer.write_dicom_answer`: the outcome SR;
    for the main job also the TID 1500 measurement report, the clot SEG on the CTA and the key image as a secondary
    capture), referencing the selected input series, and ``OUTPUT/series_selection.json`` (which series, and why)."""

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        app_context: AppContext,
        output_folder: str,
        keep_identifiers: bool = False,
        **kwargs: Any,
    ) -> None:
        self.app_context, self.output_folder, self.keep_identifiers = app_context, output_folder, keep_identifiers
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("result")
        spec.input("study_selected_series_list")
        spec.input("selection_record")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        result = op_input.receive("result")
        selected = op_input.receive("study_selected_series_list")[0]
        record = op_input.receive("selection_record")
        extra = _embedded(_fold_models(self.app_context)[0].path)
        meta = json.loads(extra["metadata.json"] or "{}")
        label = (json.loads(extra["trained_on.json"] or "null") or {}).get("label", "fpe")
        datasets = {
            s.selection_name: [sop.get_native_sop_instance() for sop in s.series.get_sop_instances()]
            for s in selected.selected_series
        }
        evidence = [ds for series in datasets.values() for ds in series]
        clot = result.get(CLOT)
        if clot is not None:
            clot = {**clot, "view": result[KEY_VIEW]}
        cta = datasets.get("cta", [])
        write_dicom_answer(self.output_folder, result, evidence, cta, meta, label, clot, self.keep_identifiers)
        atomic_write_json(os.path.join(self.output_folder, "series_selection.json"), record)


class OutcomeApp(Application):
    """Thrombectomy outcome prediction as a MONAI Deploy application (module docstring). ``--rules FILE``: series
    rules for DICOM studies (default ``configs/series_rules.json``); ``--keep_identifiers``: the DICOM answers carry
    the patient's name, ID and birth date (for a PACS that files results by patient ID; default: empty)."""

    def compose(self) -> None:
        argv = list(self.argv)
        rules = RULES_FILE
        if "--rules" in argv:
            at = argv.index("--rules")
            rules = argv[at + 1]
            del argv[at : at + 2]
        keep_identifiers = "--keep_identifiers" in argv
        if keep_identifiers:
            argv.remove("--keep_identifiers")
        app_context = Application.init_app_context(argv)
        folder, out = str(app_context.input_path), str(app_context.output_path)
        writer = PredictionWriterOperator(self, output_folder=out, name="writer")
        keys = model_keys(app_context)
        if all(_sequence_path(folder, k) for k in keys) or not os.path.isdir(folder):
            infer = OutcomeInferenceOperator(self, CountCondition(self, 1), app_context=app_context, name="outcome")
            self.add_flow(infer, writer, {("result", "result")})
            return
        from pathlib import Path

        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(folder), name="dicom_loader")
        selector = StudySeriesSelectorOperator(self, keys=keys, rules=rules, where=folder, name="series_selector")
        volumes = SeriesVolumesOperator(self, name="series_to_volumes")
        infer = OutcomeInferenceOperator(self, app_context=app_context, from_study=True, name="outcome")
        report = OutcomeSRWriterOperator(
            self, app_context=app_context, output_folder=out, keep_identifiers=keep_identifiers, name="sr_writer"
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, volumes, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(volumes, infer, {("images", "images"), ("header", "header")})
        self.add_flow(infer, writer, {("result", "result")})
        self.add_flow(infer, report, {("result", "result")})
        self.add_flow(
            selector,
            report,
            {("study_selected_series_list", "study_selected_series_list"), ("selection_record", "selection_record")},
        )


if __name__ == "__main__":
    OutcomeApp().run()
