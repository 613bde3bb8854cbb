"""Heads on a tinyllm language model: a scalar reward model and a policy with a value head.

``RewardModel`` (TRL: ``AutoModelForSequenceClassification`` with one label): the LM's trunk,
then ``score`` = Linear(C, 1), read at the **last real token** of each sequence (never at a
pad):
    r(x, y) = w . h_{last}(x, y) + b

``CausalLMWithValueHead`` (TRL: ``AutoModelForCausalLMWithValueHead``): one trunk, two heads
   logits = lm_head(h_t)           the policy
   V_t    = v_head(h_t)            the value of the state after token t
so ``forward`` returns (logits [B, T, V], values [B, T]).
"""

from __future__ import annotations

import numpy as np

import tinyllm
from tinyllm.alignment.pipeline import CompletionBatch, lm_forward, sequence_logprobs
from tinyllm.nn import Linear, Module, init

__all__ = ["CausalLMWithValueHead", "RewardModel"]


class RewardModel(Module):
    """A scalar reward from a GPT/Llama trunk (the LM head is kept but unused)."""

    def __init__(self, lm) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config
        self.score = Linear(lm.config.d_model, 1)
        init.normal_(self.score.weight, 0.0, 1.0 / np.sqrt(lm.config.d_model + 1))
        init.zeros_(self.score.bias)

    def forward(self, input_ids, attention_mask) -> tinyllm.Tensor:
        """Rewards [B] of padded sequences (left or right padding)."""
        am = np.asarray(attention_mask)
        _, hidden = lm_forward(self.lm, input_ids, am, return_hidden=True)
        B, T = am.shape
        last = T - 1 - np.argmax(am[:, ::-1], axis=1)  # index of each row's last real token
        h = hidden[tinyllm.tensor(np.arange(B)), tinyllm.tensor(last)]  # [B, C]
        return self.score(h).squeeze(-1)

    def score_batch(self, batch: CompletionBatch) -> tinyllm.Tensor:
        return self(batch.input_ids, batch.attention_mask)


class CausalLMWithValueHead(Module):
    """A policy LM and a value head on its final hidden states."""

    def __init__(self, lm) -> None:
        super().__init__()
        self.pretrained_model = lm
        self.config = lm.config
        self.v_head = Linear(lm.config.d_model, 1)
        init.zeros_(self.v_head.weight)
        init.zeros_(self.v_head.bias)

    def forward(self, input_ids, attention_mask=None):
        logits, hidden = lm_forward(
            self.pretrained_model, input_ids, attention_mask, return_hidden=True
        )
        return logits, self.v_head(hidden).squeeze(-1)

    def generate(self, *args, **kwargs):
        return self.pretrained_model.generate(*args, **kwargs)

    def batch_forward(self, batch: CompletionBatch, temperature: float = 1.0):
        """(per-label log-probs [B, L-1], values [B, L-1], logits [B, L-1, V]) of a batch."""
        logits, values = self(batch.input_ids[:, :-1], batch.attention_mask[:, :-1])
        if temperature != 1.0:
            logits = logits / temperature
        return sequence_logprobs(logits, batch.labels, batch.label_mask), values, logits
