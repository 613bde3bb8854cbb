"""Optimizers and schedules (``tinyllm.optim``), with PyTorch's update rules."""

from tinyllm.optim import lr_scheduler
from tinyllm.optim.adamw import Adam, AdamW
from tinyllm.optim.optimizer import Optimizer
from tinyllm.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
