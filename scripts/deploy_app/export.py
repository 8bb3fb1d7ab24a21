"""Export the fold models for MONAI Deploy: one TorchScript per fold with the metadata, the inference config
and the evaluation's cut-offs embedded, laid out as MONAI Deploy's named-model folder.

``python -m scripts.deploy_app.export --ckpt_dir models --out deploy_models [--config_file configs/inference.json]``
writes ``OUT/fold{k}/model.ts``: ``network_def`` of the model folder's own configuration (its recorded overlays,
:mod:`scripts.training.model_record`) with its fold weights, scripted (traced when it does not script), with the
configuration, ``cutoffs.json``, the input profile and the metadata as extra files (what ``monai.bundle ckpt_export``
embeds, plus what the app needs), so a Deploy package needs nothing but the model folder.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from typing import Any, Dict, List, Sequence

import fire
import torch
from monai.bundle import ConfigParser

from scripts import BundleInputError
from scripts.data.checks import read_grid
from scripts.data.io import atomic_write, read_json_in
from scripts.data.profile import read_profile
from scripts.inference.measurements import read_reference
from scripts.training.kfold import fold_checkpoints, load_weights
from scripts.training.model_record import recorded_parser


def model_config(ckpt_dir: str, config_file: str | Sequence[str], overrides: Dict[str, Any]) -> ConfigParser:
    """The inference configuration of the fold models in ``ckpt_dir``: their recorded overlays and overrides
    (:mod:`scripts.training.model_record`) on ``config_file``, or ``config_file`` alone for a folder without a record;
    ``overrides`` last."""
    files = [config_file] if isinstance(config_file, str) else list(config_file)
    parser = recorded_parser(ckpt_dir, files, {"ckpt_dir": ckpt_dir, "model_config": None, **overrides})
    if parser is None:
        parser = ConfigParser()
        parser.read_config(files)
        parser.update(overrides)
    return parser


def _torchscript(network: torch.nn.Module, config: ConfigParser) -> torch.jit.ScriptModule:
    """``network`` scripted, or traced on a zero input of the configured shape when it does not script (the main job's
    ClotReadingNet: keyword settings and a memo of its readings); a traced model takes one patient at a time, as the
    Deploy app gives it."""
    network.eval()
    try:
        return torch.jit.script(network)
    except Exception:  # TorchScript's frontend raises many error types for unsupported Python
        shape = [1, config.get_parsed_content("in_channels"), *config.get_parsed_content("spatial_size")]
        example = [torch.zeros(shape + [config.get_parsed_content("num_slices")])]
        if config.get("clinical_columns"):
            example.append(torch.zeros(1, len(config.get_parsed_content("clinical_columns"))))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the readings' memo key: a Python float
            return torch.jit.trace(network, tuple(example), check_trace=False)


def export(
    ckpt_dir: str = "models",
    out: str = "deploy_models",
    config_file: str | Sequence[str] = "configs/inference.json",
    meta_file: str = "configs/metadata.json",
    **overrides: Any,
) -> List[str]:
    """Export every fold; returns the written paths.

    Args:
        ckpt_dir: the model folder (fold models, ``cutoffs.json``; ``model_config.json`` when training recorded it).
        out: the Deploy model folder to write.
        config_file: the inference config (and overlays, for a folder without a record).
        meta_file: the bundle metadata embedded in each TorchScript.
        overrides: config ids (e.g. ``widths``), applied last.
    """
    cutoffs = os.path.join(ckpt_dir, "cutoffs.json")
    if not os.path.isfile(cutoffs):
        raise BundleInputError(f"{cutoffs}: not found; run the evaluation before exporting")
    config = model_config(ckpt_dir, config_file, overrides)
    extra = {
        "metadata.json": json.dumps(ConfigParser.load_config_file(meta_file)),
        # the model's own configuration and the grid the fold models were trained on (the app checks its input)
        "inference.json": json.dumps({**config.get(), "input_grid": read_grid(ckpt_dir)}),
        "cutoffs.json": json.dumps(json.load(open(cutoffs))),
        "input_profile.json": json.dumps(read_profile(ckpt_dir)),  # the training cohort's image statistics
        "trained_on.json": json.dumps(read_json_in(ckpt_dir, "trained_on.json")),  # the label, for the SR
        "measurements.json": json.dumps(read_reference(ckpt_dir)),  # the training cohort's clot measurements
    }
    written = []
    for ckpt in fold_checkpoints(ckpt_dir):
        fold = re.search(r"fold(\d+)", ckpt).group(1)  # type: ignore[union-attr]
        target = os.path.join(out, f"fold{fold}", "model.ts")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        network = load_weights(config.get_parsed_content("network_def", instantiate=True, lazy=False), ckpt)
        module = _torchscript(network, config)
        atomic_write(target, lambda path: torch.jit.save(module, path, _extra_files=extra), suffix=".ts")
        written.append(target)
    return written


if __name__ == "__main__":
    fire.Fire(export)
