"""Export the fold models for MONAI Deploy: one TorchScript per fold with the metadata, the inference config
and the evaluation's cut-offs embedded, laid out as MONAI Deploy's named-model folder.

``python -m scripts.deploy_app.export --ckpt_dir models --out deploy_models [--config_file configs/inference.json]``
writes ``OUT/fold{k}/model.ts``. Each file is ``python -m monai.bundle ckpt_export`` of ``network_def`` (scripted)
with ``cutoffs.json`` added as an extra file, so a Deploy package needs nothing but the model folder.
"""

from __future__ import annotations

import json
import os
import re
from typing import List, Sequence, Union

import fire
import torch
from monai.bundle import ConfigParser, ckpt_export

from scripts import BundleInputError
from scripts.data.checks import read_grid
from scripts.data.io import atomic_write, read_json_in
from scripts.data.profile import read_profile
from scripts.training.kfold import fold_checkpoints

EXTRA_FILES = ("metadata.json", "inference.json", "cutoffs.json", "input_profile.json", "trained_on.json")


def export(
    ckpt_dir: str = "models",
    out: str = "deploy_models",
    config_file: Union[str, Sequence[str]] = "configs/inference.json",
    meta_file: str = "configs/metadata.json",
    **overrides,
) -> List[str]:
    """Export every fold; returns the written paths. ``overrides`` are config ids (e.g. ``widths``)."""
    cutoffs = os.path.join(ckpt_dir, "cutoffs.json")
    if not os.path.isfile(cutoffs):
        raise BundleInputError(f"{cutoffs}: not found; run the evaluation before exporting")
    config = ConfigParser()
    config.read_config(config_file)
    config.update(overrides)
    written = []
    for ckpt in fold_checkpoints(ckpt_dir):
        fold = re.search(r"fold(\d+)", ckpt).group(1)  # type: ignore[union-attr]
        target = os.path.join(out, f"fold{fold}", "model.ts")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".export.ts"
        ckpt_export(net_id="network_def", filepath=tmp, ckpt_file=ckpt, meta_file=meta_file,
                    config_file=config_file, **overrides)  # fmt: skip
        extra = {name: "" for name in EXTRA_FILES[:2]}
        module = torch.jit.load(tmp, _extra_files=extra)
        # the embedded config must carry the overrides (ckpt_export embeds the files as written)
        # and the grid the fold models were trained on (the app checks its input against it)
        extra["inference.json"] = json.dumps({**config.get(), "input_grid": read_grid(ckpt_dir)})
        extra["cutoffs.json"] = json.dumps(json.load(open(cutoffs)))
        extra["input_profile.json"] = json.dumps(read_profile(ckpt_dir))  # the training cohort's image statistics
        extra["trained_on.json"] = json.dumps(read_json_in(ckpt_dir, "trained_on.json"))  # the label, for the SR
        atomic_write(target, lambda path: torch.jit.save(module, path, _extra_files=extra), suffix=".ts")
        os.remove(tmp)
        written.append(target)
    return written


if __name__ == "__main__":
    fire.Fire(export)
