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
    arch: str = "llama"  # "llama", "gpt", "mamba" or "rwkv"
    d_model: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # None: same as n_head (MHA)
    seq_len: int = 128  # context length
    ffn_hidden: int | None = None  # None: the architecture's default
    dropout: float = 0.0
    tie_embeddings: bool | None = None  # None: the architecture's default
    # mamba only (the transformer fields n_head, n_kv_head, ffn_hidden do not apply to it)
    d_state: int = 16  # N, the SSM state per channel
    d_conv: int = 4  # width of the causal depthwise convolution
    expand: int = 2  # d_inner = expand * d_model
    # mixture of experts (llama only; moe_experts = 0: the dense model)
    moe_experts: int = 0  # E experts per layer replace the SwiGLU FFN
    moe_top_k: int = 2  # experts per token
    moe_router: str = "softmax_topk"  # softmax_topk | topk_softmax | noisy_topk | aux_free
    moe_aux_coef: float = 0.01  # Switch load-balancing loss coefficient
    moe_z_coef: float = 0.001  # router z-loss coefficient
    moe_capacity_factor: float | None = None  # None: no token dropping
    moe_shared_experts: int = 0  # DeepSeekMoE shared experts (always active)
    moe_expert_hidden: int | None = None  # None: ffn_hidden (each expert a full FFN)
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
    precision: str = "fp32"  # fp32 | fp16 (autocast + loss scaling) | bf16 (autocast)
    loss_scale_growth_interval: int = 2000  # fp16: clean steps before the loss scale doubles
    # data
    data: str | None = None  # a UTF-8 text file; None: the embedded corpus
    tokenizer: str | None = None  # a BPE tokenizer JSON; None: bytes (vocabulary 256)
    objective: str = "clm"  # clm | mlm | prefixlm | span (tinyllm.objectives)
    # bookkeeping
    seed: int = 0
    device: str = "cpu"
    eval_interval: int = 100
    eval_batches: int | None = None  # None: the whole validation split; n: its first n batches
    log_interval: int = 10
    checkpoint_interval: int = 500
    name: str | None = None  # run folder name under out_dir; None: derived from the config
    out_dir: str = "runs"
    log_grads: bool = False
    sample_tokens: int = 200
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        positive = ["d_model", "n_layer", "n_head", "seq_len", "steps", "batch_size", "grad_accum"]
        positive += ["d_state", "d_conv", "expand"]
        for name in positive + ["eval_interval", "log_interval"]:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.eval_batches is not None and self.eval_batches <= 0:
            raise ValueError(
                f"eval_batches must be positive or None (the whole split), got {self.eval_batches}"
            )
        if self.arch == "mamba":
            # fields a Mamba has no use for: refused rather than silently ignored
            for name in ("n_kv_head", "ffn_hidden"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} does not apply to arch 'mamba' (no attention, no MLP), "
                        f"got {getattr(self, name)}"
                    )
            if self.dropout != 0.0:
                raise ValueError(f"dropout does not apply to arch 'mamba', got {self.dropout}")
        else:
            for name in MAMBA_FIELDS:
                if getattr(self, name) != MAMBA_DEFAULTS[name]:
                    raise ValueError(
                        f"{name} applies to arch 'mamba' only, got {name}={getattr(self, name)} "
                        f"with arch {self.arch!r}"
                    )
            if self.arch == "rwkv":  # RWKV-4: no attention heads, no dropout
                if self.n_kv_head is not None or self.dropout != 0.0:
                    raise ValueError(
                        f"n_kv_head and dropout do not apply to arch 'rwkv', got "
                        f"n_kv_head={self.n_kv_head}, dropout={self.dropout}"
                    )
            elif self.d_model % self.n_head:
                raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
            if self.n_kv_head is not None and self.n_head % self.n_kv_head:
                raise ValueError(
                    f"n_head {self.n_head} is not divisible by n_kv_head {self.n_kv_head}"
                )
        self._validate_moe()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective != "clm":
            from tinyllm.objectives.trainer import validate_objective

            validate_objective(self)
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup < 0:
            raise ValueError("lr must be > 0, min_lr_ratio in [0, 1], warmup >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        from tinyllm.amp.training import check_precision

        check_precision(self.precision)
        if self.loss_scale_growth_interval <= 0:
            raise ValueError(
                "loss_scale_growth_interval must be positive, got "
                f"{self.loss_scale_growth_interval}"
            )
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    def _validate_moe(self) -> None:
        if self.moe_experts == 0:
            for name in MOE_FIELDS[1:]:
                if getattr(self, name) != DEFAULTS[name]:
                    raise ValueError(
                        f"{name} applies to a mixture of experts only (set moe_experts), got "
                        f"{name}={getattr(self, name)}"
                    )
            return
        if self.arch != "llama":
            raise ValueError(f"moe_experts applies to arch 'llama' only, got arch {self.arch!r}")
        if self.moe_experts < 0 or not 1 <= self.moe_top_k <= self.moe_experts:
            raise ValueError(
                f"moe_experts must be >= 0 and moe_top_k in [1, moe_experts], got "
                f"moe_experts={self.moe_experts}, moe_top_k={self.moe_top_k}"
            )
        if self.moe_router not in MOE_TRAIN_ROUTERS:
            raise ValueError(
                f"moe_router must be one of {MOE_TRAIN_ROUTERS} for a causal LM, got "
                f"{self.moe_router!r} (expert_choice and soft MoE see other positions of the "
                "batch; hash routing needs token ids in every layer)"
            )
        if self.moe_capacity_factor is not None and self.moe_capacity_factor <= 0:
            raise ValueError(f"moe_capacity_factor must be > 0, got {self.moe_capacity_factor}")
        if self.moe_shared_experts < 0 or self.moe_aux_coef < 0 or self.moe_z_coef < 0:
            raise ValueError("moe_shared_experts, moe_aux_coef and moe_z_coef must be >= 0")
        if self.moe_expert_hidden is not None and self.moe_expert_hidden <= 0:
            raise ValueError(f"moe_expert_hidden must be positive, got {self.moe_expert_hidden}")

    def moe_kwargs(self) -> dict | None:
        """The ``MoE`` layer's arguments for this run, or None for a dense model."""
        if not self.moe_experts:
            return None
        return {
            "num_experts": self.moe_experts, "top_k": self.moe_top_k, "router": self.moe_router,
            "aux_loss_coef": self.moe_aux_coef, "z_loss_coef": self.moe_z_coef,
            "capacity_factor": self.moe_capacity_factor,
            "num_shared_experts": self.moe_shared_experts,
            "expert_hidden": self.moe_expert_hidden,
        }  # fmt: skip

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


ARCHS = ("llama", "gpt", "mamba", "rwkv")
OBJECTIVES = ("clm", "mlm", "prefixlm", "span")  # tinyllm.objectives.tasks.OBJECTIVES
MAMBA_FIELDS = ("d_state", "d_conv", "expand")
MOE_FIELDS = ("moe_experts", "moe_top_k", "moe_router", "moe_aux_coef", "moe_z_coef",
              "moe_capacity_factor", "moe_shared_experts", "moe_expert_hidden")  # fmt: skip
MOE_TRAIN_ROUTERS = ("softmax_topk", "topk_softmax", "noisy_topk", "aux_free")
# every field's default: what a configuration saved before a field existed meant by it
DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(TrainConfig)
    if f.default is not dataclasses.MISSING
}
MAMBA_DEFAULTS = {name: DEFAULTS[name] for name in MAMBA_FIELDS}


def saved_value(saved: dict, key: str):
    """``saved[key]``, or the field's default when ``saved`` (an older run's configuration,
    written before ``key`` existed) lacks it."""
    return saved[key] if key in saved else DEFAULTS.get(key)


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
