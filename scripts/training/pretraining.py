"""SimSiam pretraining for MONAI engines and its fine-tuning glue: unlabeled data behind a leakage guard,
two-view augmentations, SGD parameter groups with a cosine schedule, the collapse monitor, encoder export,
strict encoder loading and a frozen-encoder warm-up. Used by ``configs/pretrain.json`` and ``train.json``."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import torch

from scripts import BundleInputError
from scripts.data.cohort import read_image_table
from scripts.data.io import atomic_write

ENCODER_PREFIXES = ("stem.", "local.", "slice_attention.")
logger = logging.getLogger(__name__)


def leakage_guard(
    unlabeled: List[Dict[str, Any]], datalist: Dict[str, Any], folds: Iterable[int], on_overlap: str = "drop"
) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Remove from an unlabeled (SSL) datalist every patient of the prospective test set and of the outer
    folds being reported. ``on_overlap="refuse"`` raises instead. Returns (kept items, dropped ids)."""
    reported = {d["patient_id"] for d in datalist["test"]}
    reported |= {d["patient_id"] for d in datalist["training"] if d["fold"] in set(folds)}
    dropped = sorted({d["patient_id"] for d in unlabeled if d.get("patient_id") in reported})
    if dropped and on_overlap == "refuse":
        raise BundleInputError(
            f"the unlabeled datalist holds {len(dropped)} patient(s) of the test set or reported folds "
            f"(e.g. {', '.join(dropped[:3])}); remove them or use on_overlap=drop"
        )
    if on_overlap not in ("drop", "refuse"):
        raise BundleInputError(f"on_overlap '{on_overlap}': use drop or refuse")
    if dropped:
        logger.warning("leakage guard: dropped %d unlabeled patient(s) of the test set or reported folds", len(dropped))
    return [d for d in unlabeled if d.get("patient_id") not in reported], dropped


def unlabeled_items(
    unlabeled_file: str,
    image_keys: Sequence[str],
    datalist_file: str | None,
    reported_folds: Any = "all",
    on_overlap: str = "drop",
    columns: Dict[str, Sequence[str]] | None = None,
) -> List[Dict[str, Any]]:
    """The unlabeled table's items after the leakage guard.

    Args:
        unlabeled_file: the pool's table (``patient_id`` + image columns, paths relative to it).
        image_keys: the sequences every item must have.
        datalist_file: the split to guard against (its test set and the reported outer folds); None skips the guard.
        reported_folds: the outer folds that will be reported; "all" = every fold.
        on_overlap: "drop" the overlapping patients or "refuse" the pool.
        columns: {name: allowed values} of other columns every row must hold (``side`` for the mirrored vessel box).

    Returns:
        the pool's items.
    """
    items = read_image_table(unlabeled_file, image_keys, columns)
    if not datalist_file:
        logger.warning("no datalist given: the unlabeled data is not checked against test patients")
        return items
    from scripts.data.split import load_datalist
    from scripts.training.kfold import fold_list

    datalist = load_datalist(datalist_file)
    n = datalist["settings"]["folds"]
    chosen = reported_folds if isinstance(reported_folds, (list, tuple)) else [reported_folds]
    folds = sorted({k for f in chosen for k in fold_list(f, n)})
    kept, _ = leakage_guard(items, datalist, folds, on_overlap)
    if len(kept) < 2:
        raise BundleInputError(f"{unlabeled_file}: fewer than 2 unlabeled patients left after the leakage guard")
    logger.info("pretraining on %d unlabeled patient(s)", len(kept))
    return kept


def simsiam_parameter_groups(model: torch.nn.Module) -> List[Dict[str, Any]]:
    """SGD parameter groups: encoder + projector first, predictor second (so its lr can stay fixed; see
    :func:`simsiam_lr_lambdas`)."""
    predictor = [p for n, p in model.named_parameters() if n.startswith("predictor.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("predictor.")]
    return [{"params": rest, "name": "encoder+projector"}, {"params": predictor, "name": "predictor"}]


class CosineDecay:
    """``LambdaLR`` factor 0.5 (1 + cos(pi epoch / epochs)) (SimSiam's schedule); picklable."""

    def __init__(self, epochs: int) -> None:
        self.epochs = max(int(epochs), 1)

    def __call__(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))


def simsiam_lr_lambdas(epochs: int, fix_predictor_lr: bool = True) -> List[Any]:
    """Per-group ``LambdaLR`` factors for :func:`simsiam_parameter_groups`: cosine, and constant for the
    predictor when ``fix_predictor_lr``."""
    return [CosineDecay(epochs), (lambda epoch: 1.0) if fix_predictor_lr else CosineDecay(epochs)]


def save_encoder(model: torch.nn.Module, path: str, prefixes: Sequence[str] = ENCODER_PREFIXES) -> str:
    """Write the encoder part (the tensors under ``prefixes``) of a SimSiam (or MNT-DL) model to ``path`` atomically;
    return the path."""
    state = {k: v.detach().cpu() for k, v in encoder_state(model.state_dict(), prefixes).items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: torch.save({"model": state}, tmp), suffix=".pt")
    logger.info("pretrained encoder written to %s", path)
    return path


def encoder_state(
    state: Dict[str, torch.Tensor], prefixes: Sequence[str] = ENCODER_PREFIXES
) -> Dict[str, torch.Tensor]:
    """The encoder part (by default stem, local networks, slice attention) of an MNT-DL or SimSiam state dict."""
    out = {}
    for key, value in state.items():
        key = key[len("encoder.") :] if key.startswith("encoder.") else key
        if key.startswith(tuple(prefixes)):
            out[key] = value
    return out


def load_pretrained_encoder(
    network: torch.nn.Module, path: str | None, prefixes: Sequence[str] = ENCODER_PREFIXES
) -> torch.nn.Module:
    """Load the encoder weights (the tensors under ``prefixes``) of a pretraining checkpoint into ``network`` strictly
    (no-op when ``path`` is empty) and return the network.

    Every encoder tensor of the network must be in the checkpoint with the same shape and no other encoder
    tensor may be there; otherwise the error names the keys. The classifier heads keep their initialisation.
    """
    if not path:
        return network
    if not os.path.isfile(path):
        raise BundleInputError(f"{path}: pretrained encoder checkpoint not found")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    saved = encoder_state(saved.get("model", saved) if isinstance(saved, dict) else saved, prefixes)
    own = encoder_state(network.state_dict(), prefixes)
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    shapes = sorted(k for k in set(own) & set(saved) if own[k].shape != saved[k].shape)
    problems = []
    if missing:
        problems.append(
            f"missing {', '.join(missing[:5])}" + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        )
    if unexpected:
        problems.append(
            f"unexpected {', '.join(unexpected[:5])}"
            + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else "")
        )
    if shapes:
        problems.append(
            "shape mismatch " + ", ".join(f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}" for k in shapes[:5])
        )
    if problems:
        raise BundleInputError(f"{path}: encoder does not match the network: " + "; ".join(problems))
    network.load_state_dict(saved, strict=False)  # heads are not part of the encoder; all encoder keys matched above
    logger.info("encoder weights loaded from %s (%d tensors)", path, len(saved))
    return network


def encoder_parameter_groups(network: torch.nn.Module) -> List[Dict[str, Any]]:
    """Optimizer parameter groups of an MNT-DL classifier: encoder first, heads second (for
    :class:`EncoderWarmup`)."""
    named = list(network.named_parameters())
    encoder = [p for n, p in named if n.startswith(ENCODER_PREFIXES)]
    heads = [p for n, p in named if not n.startswith(ENCODER_PREFIXES)]
    return [{"params": encoder, "name": "encoder"}, {"params": heads, "name": "heads"}]


class EncoderWarmup:
    """Keep the encoder (optimizer group 0 of :func:`encoder_parameter_groups`) frozen for the first
    ``epochs`` epochs by giving it lr 0, so only the heads learn; then restore its lr. With AdamW an lr of 0
    leaves the weights unchanged (decoupled weight decay is scaled by lr too), and it works under DDP where
    toggling ``requires_grad`` would not. BatchNorm running statistics still adapt during the warm-up."""

    def __init__(self, optimizer: torch.optim.Optimizer, epochs: int = 0) -> None:
        self.optimizer, self.epochs = optimizer, int(epochs)
        if self.epochs > 0 and optimizer.param_groups[0].get("name") != "encoder":
            raise BundleInputError(
                "freeze_encoder_epochs needs an optimizer built with "
                "scripts.training.pretraining.encoder_parameter_groups"
            )
        self.lr = optimizer.param_groups[0]["lr"]

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if self.epochs > 0:
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Any) -> None:
        frozen = engine.state.epoch <= self.epochs
        self.optimizer.param_groups[0]["lr"] = 0.0 if frozen else self.lr
        if engine.state.epoch in (1, self.epochs + 1):
            logger.info("epoch %d: encoder %s", engine.state.epoch, "frozen" if frozen else "trainable")


def view_transforms(key: str, spatial_size: List[int], num_slices: int, crop_scale: float = 0.7) -> List[Any]:
    """Random transforms making one SimSiam view ``key`` of a (C, H, W, D) image; each view gets its own
    instances, so the two views are augmented independently. In-plane random resized crop, small affine,
    per-channel intensity scale/shift/gamma, blur, noise, and a left-right flip on the anatomical x axis."""
    from monai import transforms as T

    size = list(spatial_size) + [num_slices]
    return [
        T.RandSpatialCropd(key, roi_size=[int(s * crop_scale) for s in spatial_size] + [num_slices], random_size=True),
        T.Resized(key, spatial_size=size, mode="trilinear"),
        T.RandAffined(key, prob=0.5, rotate_range=[0.0, 0.0, 0.26], scale_range=[0.1, 0.1, 0.0], padding_mode="zeros"),
        T.RandScaleIntensityd(key, factors=0.2, prob=0.8, channel_wise=True),
        T.RandShiftIntensityd(key, offsets=0.1, prob=0.8, channel_wise=True),
        T.RandAdjustContrastd(key, gamma=(0.7, 1.5), prob=0.5),
        T.RandGaussianSmoothd(key, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.0, 0.1), prob=0.3),
        T.RandGaussianNoised(key, std=0.03, prob=0.5),
        T.RandFlipd(key, prob=0.5, spatial_axis=0),
    ]


class CollapseMonitor:
    """Logs the collapse score (:func:`scripts.networks.simsiam.collapse_score`) of each epoch's projections
    as ``engine.state.metrics["collapse_score"]`` (and the epoch's mean loss as ``"ssl_loss"``) and warns
    when it falls below ``threshold`` (a fraction of the healthy value 1 / sqrt(dim))."""

    def __init__(self, threshold: float = 0.2) -> None:
        self.threshold = threshold
        self.scores: List[float] = []
        self.losses: List[float] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _start(self, engine: Any) -> None:
        self.scores.clear()
        self.losses.clear()

    def _iteration(self, engine: Any) -> None:
        from scripts.networks.simsiam import collapse_score

        self.scores.append(collapse_score(engine.state.output["z"]))
        if "loss" in engine.state.output:
            self.losses.append(float(engine.state.output["loss"]))

    def _epoch(self, engine: Any) -> None:
        z = engine.state.output["z"]
        healthy = 1 / float(z.shape[1]) ** 0.5
        score = sum(self.scores) / max(len(self.scores), 1)
        engine.state.metrics["collapse_score"] = score
        if self.losses:
            engine.state.metrics["ssl_loss"] = sum(self.losses) / len(self.losses)
        if score < self.threshold * healthy:
            logger.warning(
                "SimSiam collapse: epoch %d projection std %.4f < %.2f x healthy %.4f",
                engine.state.epoch,
                score,
                self.threshold,
                healthy,
            )


def pretrain(
    trainer: Any,
    resume_handlers: Sequence[Any],
    network: torch.nn.Module,
    encoder_file: str,
    prefixes: Sequence[str] = ENCODER_PREFIXES,
) -> str:
    """Run the pretraining (SimSiam, or the readings; resuming an interrupted run) and write the encoder (the tensors
    under ``prefixes``); an existing ``encoder_file`` is kept (delete it, and the resume checkpoints beside it, to
    pretrain again)."""
    if os.path.isfile(encoder_file):
        logger.info("%s exists: pretraining is done (delete it to pretrain again)", encoder_file)
        return encoder_file
    for handler in resume_handlers:
        handler.attach(trainer)
    trainer.run()
    if trainer.state.epoch < trainer.state.max_epochs:
        logger.warning(
            "pretraining stopped at epoch %d of %d: no encoder written; run again to resume",
            trainer.state.epoch,
            trainer.state.max_epochs,
        )
        return ""
    return save_encoder(network, encoder_file, prefixes)


def simsiam_iteration(engine: Any, batch: Dict[str, Any]) -> Dict[str, Any]:
    """One SimSiam step for a MONAI ``SupervisedTrainer`` (``iteration_update``): two views -> loss -> step."""
    x1, x2 = batch["view1"].to(engine.state.device), batch["view2"].to(engine.state.device)
    engine.network.train()
    engine.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x1.device.type, enabled=bool(engine.amp)):
        p1, p2, z1, z2 = engine.network(x1, x2)
        loss = engine.loss_function(p1, p2, z1, z2)
    if engine.amp and engine.scaler is not None:
        engine.scaler.scale(loss).backward()
        engine.scaler.step(engine.optimizer)
        engine.scaler.update()
    else:
        loss.backward()
        engine.optimizer.step()
    return {"loss": loss.detach(), "z": z1.detach()}
