"""Language-model architectures built from ``tinyllm.nn`` (``import tinyllm.models``)."""

from tinyllm.models.bert import BertConfig, BertModel
from tinyllm.models.config import ModelConfig
from tinyllm.models.gpt import GPT
from tinyllm.models.llama import Llama
from tinyllm.models.lm import LanguageModel
from tinyllm.models.pretrained import (
    LoadReport,
    PretrainedWeightsError,
    hf_to_tinyllm_name,
    load_hf_state_dict,
    load_pretrained,
    load_pretrained_tokenizer,
    tinyllm_to_hf_name,
)


def build_model(config: ModelConfig) -> LanguageModel:
    """The model of ``config.arch`` ("gpt" or "llama")."""
    return {"gpt": GPT, "llama": Llama}[config.arch](config)


def from_config(config: ModelConfig | dict) -> LanguageModel:
    """``build_model`` from a ModelConfig or a plain dict of its fields."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return build_model(config)


__all__ = [
    "GPT", "BertConfig", "BertModel", "LanguageModel", "Llama", "LoadReport", "ModelConfig",
    "PretrainedWeightsError", "build_model", "from_config", "hf_to_tinyllm_name",
    "load_hf_state_dict", "load_pretrained", "load_pretrained_tokenizer", "tinyllm_to_hf_name",
]  # fmt: skip
