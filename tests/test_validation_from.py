"""ValidationFrom: inner validation, checkpoint choice and early stopping only from a first epoch on."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from torch.utils.data import DataLoader, TensorDataset

from scripts.training.validation import ValidationFrom


def _engines(max_epochs: int):
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8, 1)).float()), batch_size=4)
    network = torch.nn.Linear(3, 1)
    prepare = lambda batch, device, non_blocking, **kwargs: (batch[0], batch[1])  # noqa: E731
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=data, network=network, prepare_batch=prepare
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=data,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        loss_function=torch.nn.BCEWithLogitsLoss(),
        prepare_batch=prepare,
    )
    return trainer, evaluator


@pytest.mark.parametrize("max_epochs, first_epoch, expected", [(6, 4, [4, 5, 6]), (2, 4, [2]), (3, 1, [1, 2, 3])])
def test_validator_runs_from_the_first_epoch_on_capped_at_max_epochs(max_epochs, first_epoch, expected):
    trainer, evaluator = _engines(max_epochs)
    ValidationFrom(first_epoch=first_epoch, validator=evaluator, interval=1).attach(trainer)
    ran: list = []
    evaluator.add_event_handler(Events.COMPLETED, lambda e: ran.append(trainer.state.epoch))
    trainer.run()
    assert ran == expected


def test_first_epoch_below_one_is_refused():
    with pytest.raises(ValueError, match="first_epoch"):
        ValidationFrom(first_epoch=0, interval=1)
