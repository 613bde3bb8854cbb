"""Neural-network modules (``tinyllm.nn``), PyTorch's names and parameter layouts."""

from tinyllm.nn import init, utils
from tinyllm.nn.attention import Attention
from tinyllm.nn.containers import ModuleDict, ModuleList, Sequential
from tinyllm.nn.conv import AvgPool2d, Conv2d, MaxPool2d, PatchEmbed
from tinyllm.nn.feedforward import MLP, GatedMLP
from tinyllm.nn.kv_cache import KVCache, LatentKVCache
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
from tinyllm.nn.mla import MultiHeadLatentAttention
from tinyllm.nn.module import Module, eval_mode
from tinyllm.nn.normalization import GroupNorm, LayerNorm, RMSNorm
from tinyllm.nn.parameter import Parameter
from tinyllm.nn.positional import (
    ALiBi,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    T5RelativePositionBias,
)
from tinyllm.nn.transformer import TransformerBlock

__all__ = [
    "GELU", "MLP", "ALiBi", "Attention", "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Dropout",
    "Embedding", "GatedMLP", "MaxPool2d", "PatchEmbed",
    "GroupNorm", "Identity", "KVCache", "LatentKVCache", "LayerNorm", "LearnedPositionalEmbedding",
    "Linear", "MSELoss", "Module", "ModuleDict", "ModuleList", "MultiHeadLatentAttention",
    "Parameter", "RMSNorm", "ReLU", "RotaryEmbedding", "Sequential", "SiLU", "Sigmoid",
    "SinusoidalPositionalEncoding", "T5RelativePositionBias", "Tanh", "TransformerBlock",
    "eval_mode", "init", "utils",
]  # fmt: skip
