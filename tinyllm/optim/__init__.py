"""Optimizers and schedules (``tinyllm.optim``), with PyTorch's update rules."""

from tinyllm.optim import lr_scheduler, schedules
from tinyllm.optim.adafactor import Adafactor
from tinyllm.optim.adamw import Adam, AdamW
from tinyllm.optim.lion import Lion
from tinyllm.optim.optimizer import Optimizer
from tinyllm.optim.param_groups import param_groups_weight_decay
from tinyllm.optim.sgd import SGD

__all__ = [
    "SGD",
    "Adafactor",
    "Adam",
    "AdamW",
    "Lion",
    "Optimizer",
    "lr_scheduler",
    "param_groups_weight_decay",
    "schedules",
]
