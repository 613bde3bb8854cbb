"""Each training objective as a task: its model, how a batch is made from raw text, its loss.

A task turns rows of raw tokens [B, L] (windows of the corpus) into model inputs and labels,
with every random choice drawn from the generator it is given (in training: the run's batch
generator, which checkpoints save, so a resumed run draws the same masks). Its loss is the
mean cross-entropy in nats over the tokens that carry a label:

    task       model                  rows (raw tokens)      loss per ...
    mlm        BidirectionalLM        T                      selected token (15 %: masked,
                                                             randomized or kept)
    prefixlm   BidirectionalLM with   T + 1 (T inputs,       continuation token (positions
               the prefix mask        T targets)             t >= P - 1)
    span       EncoderDecoder         random_spans_helper(T) target token (noise tokens,
                                      (141 for T = 128)      sentinels and </s>: 29 for T = 128)

These are different numbers of different things: a CLM's loss per token, a masked token's
loss (which sees both sides), a continuation token's loss (which sees a bidirectional
prefix) and a span target's loss (with sentinels that are easy to predict) are not
comparable one-to-one. Vocabularies: "mlm" bytes + <pad> <mask> </s> (259 over bytes),
"prefixlm" bytes only (256), "span" bytes + 3 + 100 sentinels (359).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.objectives.masked_lm import IGNORE_INDEX, mask_tokens
from tinyllm.objectives.prefix_lm import prefix_lm_labels, prefix_lm_mask, sample_prefix_lengths
from tinyllm.objectives.span_corruption import random_spans_helper, span_corrupt
from tinyllm.objectives.vocab import SpecialTokens
from tinyllm.train.config import OBJECTIVES

__all__ = ["OBJECTIVES", "MaskedLMTask", "PrefixLMTask", "SpanCorruptionTask", "make_task",
           "target_loss"]  # fmt: skip


def target_loss(logits, labels: np.ndarray, device: str = "cpu", reduction: str = "mean"):
    """Cross-entropy (nats) of logits [..., V] against labels [...], over labels != -100."""
    V = logits.shape[-1]
    flat = tinyllm.tensor(np.asarray(labels, dtype=np.int64).reshape(-1), device=device)
    return F.cross_entropy(
        logits.reshape(-1, V), flat, ignore_index=IGNORE_INDEX, reduction=reduction
    )


@dataclass
class Batch:
    """Arrays a task's model reads (``inputs``), its ``labels`` and the labelled-token count."""

    inputs: dict
    labels: np.ndarray

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


class _Task:
    name = ""

    def __init__(self, base_vocab: int, seq_len: int) -> None:
        self.base_vocab, self.seq_len = int(base_vocab), int(seq_len)

    def model_config(self, d_model: int, n_layer: int, n_head: int, ffn_hidden=None,
                     dropout: float = 0.0):  # fmt: skip
        from tinyllm.models.encoder_decoder import EncoderDecoderConfig

        return EncoderDecoderConfig(
            vocab_size=self.vocab_size, d_model=d_model, n_layer=n_layer, n_head=n_head,
            ffn_hidden=ffn_hidden, dropout=dropout,
        )  # fmt: skip

    def logits(self, model, batch: Batch, device: str):
        raise NotImplementedError

    def loss(self, model, batch: Batch, device: str = "cpu", reduction: str = "mean"):
        """Mean (or summed) cross-entropy over the batch's labelled tokens."""
        return target_loss(self.logits(model, batch, device), batch.labels, device, reduction)


def _ids(a, device):
    return tinyllm.tensor(np.asarray(a, dtype=np.int64), device=device)


class MaskedLMTask(_Task):
    """BERT's masked LM on rows of ``seq_len`` tokens (``tinyllm.objectives.masked_lm``)."""

    name = "mlm"

    def __init__(self, base_vocab: int, seq_len: int, whole_word: bool = False) -> None:
        super().__init__(base_vocab, seq_len)
        self.specials = SpecialTokens(base_vocab, num_sentinels=0)
        self.vocab_size = self.specials.vocab_size
        self.raw_length = seq_len
        if whole_word and base_vocab != 256:
            raise ValueError("MaskedLMTask: whole-word masking needs byte tokens (word = bytes "
                             "between whitespace)")  # fmt: skip
        self.whole_word = whole_word

    def build_model(self, config):
        from tinyllm.models.encoder_decoder import BidirectionalLM

        return BidirectionalLM(config)

    def make_batch(self, raw: np.ndarray, rng: np.random.Generator) -> Batch:
        from tinyllm.objectives.masked_lm import byte_word_ids

        words = byte_word_ids(raw) if self.whole_word else None
        inputs, labels = mask_tokens(raw, rng, mask_id=self.specials.mask, n_data=self.base_vocab,
                                     word_ids=words)  # fmt: skip
        return Batch({"idx": inputs}, labels)

    def logits(self, model, batch: Batch, device: str):
        return model(_ids(batch.inputs["idx"], device))


class PrefixLMTask(_Task):
    """PrefixLM on rows of ``seq_len + 1`` tokens (``tinyllm.objectives.prefix_lm``)."""

    name = "prefixlm"

    def __init__(self, base_vocab: int, seq_len: int) -> None:
        super().__init__(base_vocab, seq_len)
        self.vocab_size = base_vocab
        self.raw_length = seq_len + 1

    def build_model(self, config):
        from tinyllm.models.encoder_decoder import BidirectionalLM

        return BidirectionalLM(config)

    def make_batch(self, raw: np.ndarray, rng: np.random.Generator) -> Batch:
        x, y = raw[:, :-1], raw[:, 1:]
        prefix = sample_prefix_lengths(rng, x.shape[0], x.shape[1])
        mask = prefix_lm_mask(prefix, x.shape[1])
        return Batch({"idx": x, "attn_mask": mask, "prefix": prefix}, prefix_lm_labels(y, prefix))

    def logits(self, model, batch: Batch, device: str):
        return model(_ids(batch.inputs["idx"], device), attn_mask=batch.inputs["attn_mask"])


class SpanCorruptionTask(_Task):
    """T5's span corruption with an encoder-decoder (``tinyllm.objectives.span_corruption``):
    raw rows of ``random_spans_helper(seq_len)[0]`` tokens give encoder inputs of at most
    ``seq_len`` tokens; the decoder reads <pad> + targets[:-1] (T5's teacher forcing)."""

    name = "span"

    def __init__(self, base_vocab: int, seq_len: int, noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0) -> None:  # fmt: skip
        super().__init__(base_vocab, seq_len)
        self.specials = SpecialTokens(base_vocab, num_sentinels=100)
        self.vocab_size = self.specials.vocab_size
        self.noise_density, self.mean_span = noise_density, mean_noise_span_length
        self.raw_length, self.targets_length = random_spans_helper(
            seq_len, noise_density, mean_noise_span_length
        )

    def build_model(self, config):
        from tinyllm.models.encoder_decoder import EncoderDecoder

        return EncoderDecoder(config)

    def make_batch(self, raw: np.ndarray, rng: np.random.Generator) -> Batch:
        inputs, targets = span_corrupt(raw, rng, self.specials, self.noise_density,
                                       self.mean_span)  # fmt: skip
        start = np.full((targets.shape[0], 1), self.specials.pad, dtype=np.int64)
        decoder_in = np.concatenate([start, targets[:, :-1]], axis=1)
        return Batch({"input_ids": inputs, "decoder_input_ids": decoder_in}, targets)

    def logits(self, model, batch: Batch, device: str):
        return model(_ids(batch.inputs["input_ids"], device),
                     _ids(batch.inputs["decoder_input_ids"], device))  # fmt: skip


def make_task(objective: str, base_vocab: int, seq_len: int, **kwargs) -> _Task:
    """The task of ``objective`` ("mlm", "prefixlm" or "span"; "clm" is the main loop's)."""
    tasks = {"mlm": MaskedLMTask, "prefixlm": PrefixLMTask, "span": SpanCorruptionTask}
    if objective not in tasks:
        raise ValueError(f"make_task: objective must be one of {sorted(tasks)}, got {objective!r}")
    return tasks[objective](base_vocab, seq_len, **kwargs)
