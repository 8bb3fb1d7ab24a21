"""The model folder describes its model: the configuration a training ran with, recorded beside the fold models.

``python -m monai.bundle run training --config_file "['configs/train.json', OVERLAYS...]" --ckpt_dir DIR [--key
value ...]`` writes ``DIR/model_config.json`` once (:func:`record_model`): the overlays given after ``train.json``
(their paths and their JSON content at training time) and the command-line overrides that are not data, paths or
the device. Inference and evaluation read it back (:func:`recorded_parser`): ``configs/inference.json`` (or
``train.json`` + ``evaluate.json``) with ``--ckpt_dir DIR`` builds the network, the preprocessing and the sequences
from the recorded overlays and overrides, so a model folder needs no flags that only its trainer knew. A folder
without a record (trained in Python with the run id ``train_fold``, or by a bundle that did not write one) keeps the
configuration given on the command line.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Sequence, Tuple

from fire import parser as fire_parser
from monai.bundle import ConfigParser

from scripts import BundleInputError
from scripts.data.io import atomic_write_json, read_json_in

RECORD = "model_config.json"
# base configs and training-only overlays: the inference side has its own base (configs/inference.json)
NOT_RECORDED_FILES = ("train.json", "multi_gpu_train.json", "evaluate.json")
# overrides that name data, folders, the device or the run, not the model
NOT_RECORDED_KEYS = (
    "config_file",
    "meta_file",
    "logging_file",
    "args_file",
    "tracking",
    "run_id",
    "init_id",
    "final_id",
    "fold",
    "dataset_dir",
    "datalist_file",
    "ckpt_dir",
    "output_dir",
    "cache_dir",
    "dataset_cache",
    "device",
    "num_workers",
    "pretrained_encoder",
    "unlabeled_file",
    "bundle_root",
)


def command_line_config(args: Sequence[str]) -> Tuple[List[str], Dict[str, Any]]:
    """``monai.bundle run`` arguments (without the run id) -> (the config files, the other overrides), each value
    parsed as ``python -m monai.bundle`` (Python Fire) parses it."""
    values: Dict[str, Any] = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("--"):
            continue
        key, equals, value = arg[2:].partition("=")
        if not equals and rest and not rest[0].startswith("--"):
            value = rest.pop(0)
        values[key] = fire_parser.DefaultParseValue(value) if (value or equals) else True  # a bare flag: True
    files = values.pop("config_file", [])
    return ([files] if isinstance(files, str) else list(files)), values


def model_record(args: Sequence[str]) -> Dict[str, Any]:
    """What :func:`record_model` writes for these ``monai.bundle run`` arguments."""
    files, overrides = command_line_config(args)
    overlays = [f for f in files if os.path.basename(f) not in NOT_RECORDED_FILES]
    configs = []
    for path in overlays:
        configs.append({"file": path, "content": ConfigParser.load_config_file(path)})
    kept = {k: v for k, v in sorted(overrides.items()) if k not in NOT_RECORDED_KEYS}
    return {"overlays": [os.path.basename(f) for f in overlays], "configs": configs, "overrides": kept}


def record_model(ckpt_dir: str, args: Sequence[str]) -> None:
    """Write ``ckpt_dir/model_config.json`` when the folder has none; refuse fold models of other overlays."""
    mine = model_record(args)
    theirs = read_json_in(ckpt_dir, RECORD)
    if theirs is None:
        atomic_write_json(os.path.join(ckpt_dir, RECORD), mine)
    elif theirs["overlays"] != mine["overlays"]:
        raise BundleInputError(
            f"{ckpt_dir}: holds fold models configured with {theirs['overlays'] or 'no overlay'}, this training has "
            f"{mine['overlays'] or 'no overlay'}; choose another --ckpt_dir"
        )


def command_line_overrides(argv: Sequence[str]) -> Dict[str, Any]:
    """The overrides of this process's command line when it is ``python -m monai.bundle run [ID] ...`` or
    ``python -m scripts.inference.quick ...`` (the same arguments), else none (a workflow built in Python)."""
    program = argv[0].replace(os.sep, "/") if argv else ""
    if program.endswith("monai/bundle/__main__.py") and len(argv) > 1 and argv[1] == "run":
        args = list(argv[2:])
        args = args[1:] if args and not args[0].startswith("-") else args
    elif program.endswith("scripts/inference/quick.py"):
        args = list(argv[1:])
    else:
        return {}
    return command_line_config(args)[1]


def recorded_parser(ckpt_dir: str, base: Sequence[str], fixed: Dict[str, Any]) -> ConfigParser | None:
    """The configuration of the model folder ``ckpt_dir``: the ``base`` config files, the recorded overlays and
    overrides, this process's own command-line overrides (so a contradicting ``--widths`` still meets the fold
    models), then ``fixed`` (values of the calling workflow: folders, device, input checks); None without a record.

    Args:
        ckpt_dir: the model folder.
        base: the base config files (``configs/inference.json``).
        fixed: ids set last, as parsed values.
    """
    record = read_json_in(ckpt_dir, RECORD)
    if record is None:
        return None
    merged = ConfigParser(config={})
    for content in [ConfigParser.load_config_files(list(base))] + [c["content"] for c in record["configs"]]:
        for key, value in content.items():
            try:
                merged[key] = value
            except (KeyError, IndexError, TypeError):
                pass  # patches an id the base does not have (a training handler): nothing inference builds
    parser = ConfigParser(merged.get())
    parser.update(record["overrides"])
    parser.update(command_line_overrides(sys.argv))
    parser.update(fixed)
    parser.get_parsed_content("imports")
    return parser


def pick(parser: ConfigParser | None, key: str, default: Any) -> Any:
    """``key`` parsed from a model folder's configuration (:func:`recorded_parser`), or ``default`` without one."""
    return default if parser is None else parser.get_parsed_content(key)
