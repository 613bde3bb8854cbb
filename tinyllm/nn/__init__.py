"""Neural-network modules (``tinyllm.nn``), PyTorch's names and parameter layouts."""

from tinyllm.nn import init, utils
from tinyllm.nn.containers import ModuleDict, ModuleList, Sequential
from tinyllm.nn.layers import (
    GELU,
    CrossEntropyLoss,
    Dropout,
    Embedding,
    Identity,
    Linear,
    MSELoss,
    ReLU,
    Sigmoid,
    SiLU,
    Tanh,
)
from tinyllm.nn.module import Module
from tinyllm.nn.parameter import Parameter

__all__ = [
    "GELU", "CrossEntropyLoss", "Dropout", "Embedding", "Identity", "Linear", "MSELoss",
    "Module", "ModuleDict", "ModuleList", "Parameter", "ReLU", "Sequential", "SiLU", "Sigmoid",
    "Tanh", "init", "utils",
]  # fmt: skip
