"""MNT-DL on the mirrored vessel box, supervised by the clot reader's own readings of each scan.

The published network (Zhang et al., AJNR 2024) learns the outcome from whole-head slices and ~170 labels on our demo
at chance: the clot is a few voxels of a 3 mm head. This configuration keeps its parts (per-slice ResNet, attention
within slice neighbourhoods, the cross-attention volume classifier, the auxiliary neighbourhood logits) and changes
what it sees and what it is taught:

- input: the main job's mirrored vessel box (NCCT, CTA and their per-hemisphere aligned mirrors, the occluded side
  first; ``configs/clot_readings.json``), where the clot is, its other hemisphere as the control; and, by
  :class:`ReaderMapsd`, two more channels: the reader's vessel and clot memberships of the same box (where the aligned
  mirror shows an artery, and where that artery is unfilled). They are computed per scan without labels, as the
  readings are; from ~190 labelled scans the network did not find the clot in the image channels alone
  (docs/performance.md), and with the maps it is shown where to look, not what the clot's length, density or
  perviousness are;
- a second head on the classifier's volume feature predicts the readings :class:`ClotReadingNet` takes off the same
  input (the rules' clot voxels, clot NCCT asymmetry, perviousness, distal filling, and with the main job's
  ``reading_net`` its learned length, density, perviousness and collateral grade): free, dense targets the literature
  ties to first-pass success, computed without labels (deep supervision on the readings) once per scan by
  :class:`ReaderReadingsd` in the cached preprocessing, so an unlabeled pool teaches them too
  (``configs/reading_pretrain.json``);
- the clinical values (when ``clinical_columns``) enter as one linear term on the logit, as in the main job;
- with ``outcome_from_readings`` (``configs/experiments/reading_bottleneck.json``; measured, not the default), the
  outcome logit is one linear layer on the predicted readings (detached: they are taught by the reader alone) instead
  of on the 128-wide volume feature: a sequential concept bottleneck (Koh et al., ICML 2020), a handful of weights for
  ~190 labelled scans, as the main job's linear layer on the reader's readings.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Mapping

import torch
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor
from torch import nn

from scripts.networks.clot_readings import READINGS, ClotReadingNet, reader_readings
from scripts.networks.mnt_dl import MNTDL
from scripts.networks.tabular import ColumnSpec, TabularEncoder


class ReadingMNTDL(MNTDL):
    """MNT-DL whose volume feature also predicts the clot reader's readings of its input.

    ``forward(x[, clinical])``: ``x`` (B, C, H, W, D) NCCT, CTA, mirrored NCCT, mirrored CTA in [0, 1] with the D
    axial slices last, then any further channels (C = 6 with :class:`ReaderMapsd`'s memberships); ``clinical`` (B, R)
    raw clinical values when ``clinical_columns`` is given. Output: the logit (B, 1). ``forward_all`` (training,
    through :class:`scripts.networks.WithAuxiliaryLogits`): (B, 1 + K + 2 R') with R' the readings the reader's linear
    layer takes (its ``linear_readings``): the logit, the K neighbourhood logits, the predicted readings and the
    reader's readings of ``x`` standardised by the training batch's own statistics, or with ``cumulative_targets`` by
    those of every training batch so far (the targets of :class:`scripts.training.losses.ReadingSupervisionLoss`; read
    off the first four channels).

    Args:
        reader: the :class:`ClotReadingNet` whose readings are the targets (the main job's ``reader_def`` in
            ``configs/clot_readings.json``; only its settings and ``linear_readings`` are kept).
        clinical_columns: {name: "numeric" | [categories]}; None = image only.
        outcome_from_readings: the logit is a linear layer on the predicted readings (+ the clinical term) instead of
            the classifier's on the volume feature.
        cumulative_targets: standardise the targets by the cumulative mean and variance of all training batches so
            far instead of each batch's own (a batch of 8 standardised by itself is a noisy target).
        kwargs: :class:`MNTDL`'s (``in_channels`` 4, or 6 with :class:`ReaderMapsd`; ``num_slices`` the box's).
    """

    def __init__(
        self,
        reader: ClotReadingNet,
        clinical_columns: Dict[str, ColumnSpec] | None = None,
        outcome_from_readings: bool = False,
        cumulative_targets: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**{"in_channels": 4, "head": "cross_attention", **kwargs})
        if self.head != "cross_attention":
            raise ValueError("ReadingMNTDL reads the readings off the cross-attention head's volume feature")
        self.reader = reader.reader_settings
        self.reader_readings = reader.readings  # what the reader's measurements give per scan
        self.reading_columns = list(reader.linear_readings)
        self.readings = len(self.reading_columns)
        self.reading_head = nn.Linear(self.classifier.fc.in_features, self.readings)
        # the targets in comparable units
        self.reading_norm = nn.BatchNorm1d(self.readings, affine=False, momentum=None if cumulative_targets else 0.1)
        self.cumulative_targets = cumulative_targets
        self.reading_logit = nn.Linear(self.readings, 1) if outcome_from_readings else None
        if outcome_from_readings:  # the classifier's own linear layer is not used: frozen, so that DDP waits for none
            self.classifier.fc.requires_grad_(False)
        if clinical_columns:
            self.tabular = TabularEncoder(clinical_columns)
            self.clinical_head = nn.Linear(self.tabular.out_features, 1)
            nn.init.zeros_(self.clinical_head.weight)

    def parameter_groups(self, head_lr: float) -> List[Dict[str, Any]]:
        """The optimizer's parameter groups: the network, then the logit's own linear layers (on the predicted readings
        or the volume feature, and the clinical term) at ``head_lr`` without weight decay. A handful of weights on
        standardised inputs, fitted toward their maximum likelihood as the main job's linear layer is: at the
        network's rate they barely leave their start in 30 epochs (docs/performance.md)."""
        head = [self.classifier.fc if self.reading_logit is None else self.reading_logit]
        head += [self.clinical_head] if hasattr(self, "clinical_head") else []
        ids = {id(p) for layer in head for p in layer.parameters()}
        body = [p for p in self.parameters() if id(p) not in ids]
        return [
            {"params": body},
            {"params": [p for layer in head for p in layer.parameters()], "lr": head_lr, "weight_decay": 0.0},
        ]

    def _logit(self, volume: torch.Tensor, clinical: torch.Tensor | None) -> torch.Tensor:
        if self.reading_logit is None:
            logit = self.classifier.fc(volume)
        else:
            logit = self.reading_logit(self.reading_head(volume).detach())
        tabular = getattr(self, "tabular", None)
        if tabular is not None:
            if clinical is None:
                raise ValueError("this ReadingMNTDL was built with clinical_columns: pass the clinical values")
            logit = logit + self.clinical_head(tabular(clinical).to(logit.dtype))
        return logit

    def forward_all(
        self, x: torch.Tensor, clinical: torch.Tensor | None = None, readings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C, H, W, D) [, (B, R)] [, readings (B, R'): the reader's readings of ``x``, cached by
        :class:`ReaderReadingsd`; None = the rules' read here, for a reader without ``reading_net``] -> (B, 1 + K + 2
        R'): logit, neighbourhood logits, predicted and read readings."""
        if readings is None and self.reader_readings != len(READINGS):
            raise ValueError("the learned readings are read once per scan by ReaderReadingsd: pass them as readings")
        feats = self.slice_features(x)
        groups = feats.reshape(feats.shape[0], self.num_neighbourhoods, -1)
        aux = [head(groups[:, k]) for k, head in enumerate(self.aux_heads)]
        volume = self.classifier.features(feats)
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            read = reader_readings(x[:, :4].float(), self.reader) if readings is None else readings.float()
            read = read.reshape(len(x), -1)[:, self.reading_columns]
            norm = self.reading_norm
            targets = norm(read)
            if self.cumulative_targets:  # the running statistics, this batch added in training
                targets = (read - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
        predicted = self.reading_head(volume)
        return torch.cat([self._logit(volume, clinical), *aux, predicted.float(), targets], dim=1)

    def forward(
        self, x: torch.Tensor, clinical: torch.Tensor | None = None, readings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C, H, W, D) [, (B, R)] -> logit (B, 1); ``readings`` (training's targets) are not used."""
        return self._logit(self.classifier.features(self.slice_features(x)), clinical)


class ReaderReadingsd(MapTransform):
    """The reader's readings (:meth:`ClotReadingNet.measurements`) of ``keys`` (a (C, H, W, D) mirrored vessel box, read
    off its first four channels) as ``name`` (4,) or, with its ``reading_net``, (8,), fp32: the targets of
    :class:`ReadingMNTDL`, read once per scan in the deterministic (cached) preprocessing instead of every batch.

    Args:
        keys: the vessel box.
        reader: the :class:`ClotReadingNet` whose readings are the targets (``reader_def``).
        name: the item key of the readings.
    """

    def __init__(self, keys: Any, reader: ClotReadingNet, name: str = "readings") -> None:
        super().__init__(keys)
        self.reader, self.name = reader, name

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            with torch.no_grad():
                image = convert_to_tensor(d[key], dtype=torch.float32, track_meta=False)
                d[self.name] = self.reader.measurements(image[None, :4])[0]
        return d


class ReaderMapsd(MapTransform):
    """The reader's vessel and clot memberships (:meth:`ClotReadingNet.membership_maps`) of ``keys`` (a (4, H, W, D)
    mirrored vessel box, the occluded side first) appended as two channels: (6, H, W, D), fp32, in [0, 1].

    Args:
        keys: the vessel box.
        reader: the :class:`ClotReadingNet` whose memberships are appended (``reader_def``).
    """

    def __init__(self, keys: Any, reader: ClotReadingNet) -> None:
        super().__init__(keys)
        self.reader = reader

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], dtype=torch.float32, track_meta=False)
            if image.shape[0] != 4:
                raise ValueError(f"{key}: expected the (4, H, W, D) mirrored vessel box, got {list(image.shape)}")
            d[key] = torch.cat([image, self.reader.membership_maps(image[None])[0]])
        return d
