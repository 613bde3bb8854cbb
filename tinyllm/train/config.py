"""The configuration of a training run: model shape, optimization, data and bookkeeping.

Every field is a flag of ``tinyllm train`` (``--d-model 256``) and a key of a TOML/JSON
``--config`` file (``d_model = 256``); flags given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    # model
    arch: str = "llama"  # "llama" or "gpt"
    d_model: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # None: same as n_head (MHA)
    seq_len: int = 128  # context length
    ffn_hidden: int | None = None  # None: the architecture's default
    dropout: float = 0.0
    tie_embeddings: bool | None = None  # None: the architecture's default
    # optimization
    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # data
    data: str | None = None  # a UTF-8 text file; None: the embedded corpus
    tokenizer: str | None = None  # a BPE tokenizer JSON; None: bytes (vocabulary 256)
    # bookkeeping
    seed: int = 0
    device: str = "cpu"
    eval_interval: int = 100
    eval_batches: int = 8
    log_interval: int = 10
    checkpoint_interval: int = 500
    name: str | None = None  # run folder name under out_dir; None: derived from the config
    out_dir: str = "runs"
    log_grads: bool = False
    sample_tokens: int = 200
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.arch not in ("llama", "gpt"):
            raise ValueError(f"arch must be 'llama' or 'gpt', got {self.arch!r}")
        positive = ["d_model", "n_layer", "n_head", "seq_len", "steps", "batch_size", "grad_accum"]
        for name in positive + ["eval_interval", "eval_batches", "log_interval"]:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            raise ValueError(f"n_head {self.n_head} is not divisible by n_kv_head {self.n_kv_head}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup < 0:
            raise ValueError("lr must be > 0, min_lr_ratio in [0, 1], warmup >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys: {unknown}; known: {sorted(known)}")
        return cls(**values)

    def run_name(self) -> str:
        return self.name or f"{self.arch}-d{self.d_model}-l{self.n_layer}-s{self.seed}"


def load_config_file(path: str | Path) -> dict:
    """Read a TOML (``.toml``) or JSON file of configuration keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no such file: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        return tomllib.loads(text)
    return json.loads(text)
