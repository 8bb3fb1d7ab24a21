"""Running the folds of ``configs/train.json``: all folds in sequence, resume and completion markers.

``python -m monai.bundle run training --config_file configs/train.json [--fold k]`` runs the id
``training``, which calls :func:`train_folds`. It starts one ``monai.bundle run train_fold`` process
per fold with the same command-line arguments plus ``--fold k`` (each fold in a fresh process, so
memory is returned and an interrupted fold resumes on its own). Folds whose ``done.json`` marker
exists are skipped; delete the fold folder to retrain it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import sys
from typing import Any, Dict, List, Sequence

import torch
from ignite.engine import Events

from scripts import BundleInputError
from scripts.data.io import atomic_write_json, folder_lock
from scripts.training.model_record import record_model

DONE = "done.json"
TRAINED_ON = "trained_on.json"


def fold_list(fold: object, num_folds: int) -> List[int]:
    """``"all"`` -> every fold; an int (or its string) -> that fold, checked against ``num_folds``."""
    if str(fold).lower() == "all":
        return list(range(num_folds))
    try:
        k = int(str(fold))
    except ValueError:
        raise BundleInputError(f"--fold '{fold}': use an integer 0..{num_folds - 1} or 'all'") from None
    if not 0 <= k < num_folds:
        raise BundleInputError(f"--fold {k}: the datalist has folds 0..{num_folds - 1}")
    return [k]


def _cli_arguments(argv: Sequence[str]) -> List[str]:
    """The ``monai.bundle run`` arguments of this process without the run id and ``--fold``."""
    if len(argv) < 2 or argv[1] != "run" or not argv[0].replace(os.sep, "/").endswith("monai/bundle/__main__.py"):
        raise BundleInputError(
            "training all folds needs the command line `python -m monai.bundle run training --config_file ...`; "
            "in Python, run the id 'train_fold' once per fold with fold=k"
        )
    args, rest = [], list(argv[2:])
    if rest and not rest[0].startswith("-"):
        rest = rest[1:]  # positional run id
    skip = False
    for i, a in enumerate(rest):
        if skip:
            skip = False
            continue
        if a in ("--fold", "--run_id"):
            skip = True
        elif not re.match(r"--(fold|run_id)=", a):
            args.append(a)
    return args


def datalist_fingerprint(datalist: Dict[str, Any]) -> Dict[str, Any]:
    """What fold models depend on: the label and every development patient's outer fold (SHA-256 of the sorted
    (patient_id, fold, label) triples)."""
    triples = sorted((str(d["patient_id"]), int(d["fold"]), int(d["label"])) for d in datalist["training"])
    digest = hashlib.sha256(json.dumps(triples).encode()).hexdigest()
    return {"label": datalist["settings"]["label"], "patients": len(triples), "sha256": digest}


def check_trained_on(ckpt_dir: str, datalist: Dict[str, Any] | None, record: bool = False) -> None:
    """Refuse fold models in ``ckpt_dir`` that were trained on another datalist (other patients, folds or label):
    finished folds would be skipped or evaluated on patients they were trained on. ``record``: write the
    fingerprint when the folder has none (training)."""
    if datalist is None:
        return
    path = os.path.join(ckpt_dir, TRAINED_ON)
    mine = datalist_fingerprint(datalist)
    if os.path.isfile(path):
        theirs = read_json(path)
        if theirs != mine:
            raise BundleInputError(
                f"{ckpt_dir}: holds fold models trained on another datalist ({theirs['patients']} patients, label "
                f"{theirs['label']}; this one: {mine['patients']}, {mine['label']}); choose another --ckpt_dir"
            )
    elif record:
        atomic_write_json(path, mine)


def train_folds(
    fold: object,
    num_folds: int,
    ckpt_dir: str,
    argv: Sequence[str] | None = None,
    datalist: Dict[str, Any] | None = None,
    validation_part: str = "inner_val",
) -> List[int]:
    """Train the requested folds one after another in child processes.

    Holds the lock of ``ckpt_dir`` meanwhile: a second training or evaluation on the same folder is refused; models
    of another ``datalist`` in it are refused (:func:`check_trained_on`), and so are finished folds validated on
    another part (the optimistic protocol's models never mix with the inner-validation protocol's). Records the
    configuration beside the fold models (:func:`scripts.training.model_record.record_model`).

    Args:
        fold: one fold index (an int or its string), or "all".
        num_folds: the split's number of folds.
        ckpt_dir: the model folder.
        argv: the command line passed on to each fold's process (default: this process's).
        datalist: the split, recorded in ``trained_on.json``.
        validation_part: "inner_val" or "outer" (the optimistic protocol).

    Returns:
        the folds trained now.
    """
    os.makedirs(ckpt_dir, exist_ok=True)
    with folder_lock(ckpt_dir, "training"):
        check_trained_on(ckpt_dir, datalist, record=True)
        record_model(ckpt_dir, _cli_arguments(sys.argv if argv is None else argv))
        return _train_folds(fold, num_folds, ckpt_dir, argv, validation_part)


def _train_folds(
    fold: object,
    num_folds: int,
    ckpt_dir: str,
    argv: Sequence[str] | None = None,
    validation_part: str = "inner_val",
) -> List[int]:
    folds = fold_list(fold, num_folds)
    args = _cli_arguments(sys.argv if argv is None else argv)
    trained = []
    for k in folds:
        done = os.path.join(ckpt_dir, f"fold{k}", DONE)
        if os.path.exists(done):
            theirs = read_json(done).get("validated_on", "inner_val")
            if theirs != validation_part:
                raise BundleInputError(
                    f"{done}: fold {k} was validated on '{theirs}', this training validates on '{validation_part}'; "
                    "choose another --ckpt_dir"
                )
            print(f"fold {k}: already trained ({done}), skipped", flush=True)
            continue
        print(f"fold {k}: training", flush=True)
        cmd = [sys.executable, "-m", "monai.bundle", "run", "train_fold", *args, "--fold", str(k)]
        result = subprocess.run(cmd)
        if result.returncode != 0:
            if not os.path.exists(os.path.join(ckpt_dir, f"fold{k}", DONE)):
                raise SystemExit(result.returncode)
            # the fold finished and was recorded; only the process teardown failed (seen with gloo under
            # torchrun: "terminate called without an active exception" on exit)
            print(f"fold {k}: trained and recorded, but its process exited with status {result.returncode}", flush=True)
        trained.append(k)
    return trained


def init_distributed(backend: str, fold: object) -> int:
    """Join the torchrun process group of this fold process; return the rank.

    Called from ``train_fold`` rather than ``initialize``: under ``run training`` the launching process
    only dispatches folds to child processes, which inherit torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT) and form one group per fold. Each fold's keys live under their own prefix
    of the rendezvous store (torchrun's agent store, or one hosted by rank 0), so successive folds do
    not see each other's keys.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=rank == 0 and not agent_store
        )
        dist.init_process_group(backend, store=dist.PrefixStore(f"fold{fold}/", store), rank=rank, world_size=world)
    return dist.get_rank()


def resume_checkpoint(fold_dir: str) -> str | None:
    """Latest per-epoch checkpoint of an interrupted fold, or None."""
    found = glob.glob(os.path.join(fold_dir, "resume_checkpoint_epoch=*.pt"))
    if not found:
        return None
    return max(found, key=lambda p: int(re.search(r"epoch=(\d+)", p).group(1)))  # type: ignore[union-attr]


def track_best(saver: object, evaluator: object, fold_dir: str) -> None:
    """Keep the best inner-validation metric across an interruption.

    After each validation the evaluator's best metric and epoch go to ``best.json``; when the fold
    resumes, they are given back to the evaluator and to the best-model ``CheckpointSaver``, so a
    worse model after the resume never replaces ``model.pt``.
    """
    path = os.path.join(fold_dir, "best.json")
    if resume_checkpoint(fold_dir) is not None and os.path.isfile(path):
        best = read_json(path)
        saver.load_state_dict({"_saved": [(best["metric"], "model.pt")]})  # type: ignore[attr-defined]
        evaluator.state.best_metric = best["metric"]  # type: ignore[attr-defined]
        evaluator.state.best_metric_epoch = best["epoch"]  # type: ignore[attr-defined]

    def _record(engine: object) -> None:
        state = engine.state  # type: ignore[attr-defined]
        atomic_write_json(path, {"metric": float(state.best_metric), "epoch": int(state.best_metric_epoch)})

    evaluator.add_event_handler(Events.EPOCH_COMPLETED, _record)  # type: ignore[attr-defined]


def reseed_each_epoch(trainer: object, seed: int, transform: object) -> None:
    """Draw every epoch's randomness (shuffling, augmentation, dropout) from ``seed + epoch`` alone.

    At each epoch start the global generators (``monai.utils.set_determinism``) and the random transforms of the
    training chain (``Compose.set_random_state``) are reseeded; ignite creates the epoch's data iterator (and its
    shuffle order, and the DataLoader workers' seeds) after that event. A fold resumed from its epoch-k checkpoint
    therefore trains epochs k+1, k+2, ... exactly as an uninterrupted run does (tested with SIGKILL on CPU).
    """
    from monai.utils import set_determinism

    def _reseed(engine: object) -> None:
        value = int(seed) + int(engine.state.epoch)  # type: ignore[attr-defined]
        set_determinism(seed=value)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=value)  # type: ignore[attr-defined]

    trainer.add_event_handler(Events.EPOCH_STARTED, _reseed)  # type: ignore[attr-defined]


def mark_done(fold_dir: str, trainer: object, evaluator: object, validated_on: str = "inner_val") -> None:
    """Write ``done.json`` (epochs run, best validation metric, the datalist part validated on: ``inner_val``, or
    ``outer`` under the papers' optimistic protocol) and drop the resume checkpoints."""
    state = evaluator.state  # type: ignore[attr-defined]
    atomic_write_json(
        os.path.join(fold_dir, DONE),
        {
            "epochs": trainer.state.epoch,  # type: ignore[attr-defined]
            "best_inner_val_metric": float(state.best_metric),
            "best_epoch": int(state.best_metric_epoch),
            "validated_on": validated_on,
        },
    )
    for path in glob.glob(os.path.join(fold_dir, "resume_checkpoint_epoch=*.pt")) + [
        os.path.join(fold_dir, "best.json")
    ]:
        if os.path.exists(path):
            os.remove(path)


def validated_on(ckpt_dir: str, folds: int) -> List[str]:
    """The datalist part each fold's checkpoint was chosen on (``done.json``; ``inner_val`` when not recorded)."""
    parts = []
    for k in range(folds):
        path = os.path.join(ckpt_dir, f"fold{k}", DONE)
        parts.append(read_json(path).get("validated_on", "inner_val") if os.path.isfile(path) else "inner_val")
    return parts


def load_weights(network: torch.nn.Module, path: str, device: object = "cpu") -> torch.nn.Module:
    """Load a CheckpointSaver file (``{"model": state_dict}``) or a raw state dict, strictly."""
    if not os.path.isfile(path):
        raise BundleInputError(f"{path}: model checkpoint not found (train the folds first)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated or overwritten files: UnpicklingError, RuntimeError, EOFError ...
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise BundleInputError(f"{path}: corrupted or not a model checkpoint ({first[:100]})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError:
        raise BundleInputError(
            f"{path}: does not fit the configured network (other layers or sizes); give the config overlays and "
            "overrides it was trained with"
        ) from None
    return network


def read_json(path: str) -> dict:
    """Read a JSON file with a one-line error when it is missing."""
    if not os.path.isfile(path):
        raise BundleInputError(f"{path}: not found")
    with open(path) as f:
        return json.load(f)


def fold_checkpoints(ckpt_dir: str) -> List[str]:
    """``ckpt_dir/fold*/model.pt`` in fold order (error if there are none)."""
    found = glob.glob(os.path.join(ckpt_dir, "fold*", "model.pt"))
    if not found:
        raise BundleInputError(f"{ckpt_dir}: no fold models (fold*/model.pt); train the bundle first")
    return sorted(found, key=lambda p: int(re.search(r"fold(\d+)", p).group(1)))  # type: ignore[union-attr]
