"""Language-model architectures built from ``tinyllm.nn`` (``import tinyllm.models``)."""

import dataclasses

from tinyllm.models.bert import BertConfig, BertModel
from tinyllm.models.config import ModelConfig
from tinyllm.models.encoder_decoder import BidirectionalLM, EncoderDecoder, EncoderDecoderConfig
from tinyllm.models.gpt import GPT
from tinyllm.models.llama import Llama
from tinyllm.models.lm import LanguageModel
from tinyllm.models.mamba import MambaConfig, MambaLM
from tinyllm.models.pretrained import (
    LoadReport,
    PretrainedWeightsError,
    hf_to_tinyllm_name,
    load_hf_state_dict,
    load_pretrained,
    load_pretrained_tokenizer,
    tinyllm_to_hf_name,
)
from tinyllm.models.rwkv import RWKVLM, RWKVConfig


def build_model(config: ModelConfig | MambaConfig | RWKVConfig) -> LanguageModel | MambaLM | RWKVLM:
    """The model of ``config.arch``: "gpt" or "llama" (a ModelConfig), "mamba" (a MambaConfig),
    "rwkv" (an RWKVConfig)."""
    if isinstance(config, MambaConfig):
        return MambaLM(config)
    if isinstance(config, RWKVConfig):
        return RWKVLM(config)
    return {"gpt": GPT, "llama": Llama}[config.arch](config)


def from_config(config: ModelConfig | MambaConfig | dict) -> LanguageModel | MambaLM:
    """``build_model`` from a config or a plain dict of its fields (``arch`` picks the class:
    "mamba" a MambaConfig, anything else a ModelConfig)."""
    if isinstance(config, dict):
        if config.get("arch") == "mamba":
            known = {f.name for f in dataclasses.fields(MambaConfig)}
            unknown = sorted(set(config) - known)
            if unknown:
                raise ValueError(f"MambaConfig: unknown keys {unknown}")
            config = MambaConfig.from_dict(config)
        elif config.get("arch") == "rwkv":
            known = {f.name for f in dataclasses.fields(RWKVConfig)}
            unknown = sorted(set(config) - known)
            if unknown:
                raise ValueError(f"RWKVConfig: unknown keys {unknown}")
            config = RWKVConfig.from_dict(config)
        else:
            config = ModelConfig.from_dict(config)
    return build_model(config)


__all__ = [
    "GPT", "BertConfig", "BertModel", "BidirectionalLM", "EncoderDecoder", "EncoderDecoderConfig",
    "LanguageModel", "Llama", "LoadReport", "MambaConfig",
    "MambaLM", "ModelConfig", "RWKVConfig", "RWKVLM",
    "PretrainedWeightsError", "build_model", "from_config", "hf_to_tinyllm_name",
    "load_hf_state_dict", "load_pretrained", "load_pretrained_tokenizer", "tinyllm_to_hf_name",
]  # fmt: skip
