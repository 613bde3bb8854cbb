"""Language-model architectures built from ``tinyllm.nn`` (``import tinyllm.models``)."""

from tinyllm.models.config import ModelConfig
from tinyllm.models.gpt import GPT
from tinyllm.models.llama import Llama
from tinyllm.models.lm import LanguageModel


def build_model(config: ModelConfig) -> LanguageModel:
    """The model of ``config.arch`` ("gpt" or "llama")."""
    return {"gpt": GPT, "llama": Llama}[config.arch](config)


def from_config(config: ModelConfig | dict) -> LanguageModel:
    """``build_model`` from a ModelConfig or a plain dict of its fields."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return build_model(config)


__all__ = ["GPT", "LanguageModel", "Llama", "ModelConfig", "build_model", "from_config"]
