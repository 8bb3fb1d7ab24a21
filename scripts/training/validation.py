"""Inner validation from a first epoch on: MONAI's ValidationHandler that skips the earliest epochs.

With a few dozen inner-validation patients, the untrained model's log loss (about ln 2) can be the lowest a fold
ever reaches; checkpoint choice and early stopping then keep a model that has learned nothing (measured on the demo:
one fold at outer ROC-AUC 0.485, ``benchmarks/replica_ablation.py``). Validating only from ``first_epoch`` on keeps
the checkpoint, the best metric in ``best.json`` and the early-stopping patience to trained models.
"""

from __future__ import annotations

from typing import Any

from monai.handlers import ValidationHandler


class ValidationFrom(ValidationHandler):
    """``ValidationHandler`` that runs the validator only from epoch ``first_epoch`` on.

    ``first_epoch`` is capped at the trainer's ``max_epochs``, so a short run (tests, ``--max_epochs 1``) still
    validates and saves a checkpoint.
    """

    def __init__(self, first_epoch: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(first_epoch) < 1:
            raise ValueError(f"first_epoch must be >= 1, got {first_epoch}")
        self.first_epoch = int(first_epoch)

    def __call__(self, engine: Any) -> None:
        if engine.state.epoch < min(self.first_epoch, engine.state.max_epochs):
            return
        super().__call__(engine)
