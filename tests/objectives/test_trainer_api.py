"""tinyllm.objectives.trainer's public names: each exists, and the unused ``train_objective``
wrapper is gone (an objective run is ``tinyllm.train.train(config)``: ``task_for`` picks the
``ObjectiveTask``)."""

import tinyllm.objectives.trainer as trainer
from tinyllm.train.config import TrainConfig
from tinyllm.train.loop import task_for


def test_exports_exist_and_train_objective_is_gone():
    assert all(hasattr(trainer, name) for name in trainer.__all__)
    assert "train_objective" not in trainer.__all__
    assert not hasattr(trainer, "train_objective")


def test_train_picks_the_objective_task_itself():
    config = TrainConfig(d_model=16, n_layer=1, n_head=2, seq_len=16, objective="mlm")
    assert isinstance(task_for(config), trainer.ObjectiveTask)
