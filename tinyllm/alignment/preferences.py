"""Preference data made from the checkable reward: the "labeller" is a program.

For each prompt, K completions are sampled from the reference model and ranked by the task's
reward (ties broken by shorter completion first, then at random). Pairs for DPO and
Bradley-Terry are (best, worst) of a prompt's K samples when their rewards differ; rankings
for Plackett-Luce are all K samples in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tinyllm
from tinyllm.alignment.pipeline import generate_completions

__all__ = ["PreferenceData", "make_preferences"]


@dataclass
class PreferenceData:
    prompts: list  # [N] prompts
    completions: list  # [N][K] completions
    rewards: np.ndarray  # [N, K]
    ranking: np.ndarray  # [N, K] indices best first

    def pairs(self, strict: bool = True) -> tuple[list, list, list]:
        """(prompts, chosen, rejected): best vs worst of each prompt (reward differs if strict)."""
        p, c, r = [], [], []
        for i, prompt in enumerate(self.prompts):
            best, worst = self.ranking[i, 0], self.ranking[i, -1]
            if strict and self.rewards[i, best] == self.rewards[i, worst]:
                continue
            p.append(prompt)
            c.append(self.completions[i][best])
            r.append(self.completions[i][worst])
        return p, c, r

    def split(self, fraction: float) -> tuple[PreferenceData, PreferenceData]:
        n = int(len(self.prompts) * fraction)
        a = PreferenceData(
            self.prompts[:n], self.completions[:n], self.rewards[:n], self.ranking[:n]
        )
        b = PreferenceData(
            self.prompts[n:], self.completions[n:], self.rewards[n:], self.ranking[n:]
        )
        return a, b


@tinyllm.no_grad()
def make_preferences(
    model,
    task,
    n_prompts: int,
    k: int,
    max_new_tokens: int,
    rng,
    temperature: float = 1.0,
    split: str = "train",
) -> PreferenceData:
    """Sample ``k`` completions for each of ``n_prompts`` prompts and rank them by reward."""
    prompts = task.prompts(n_prompts, rng, split=split)
    flat = [p for p in prompts for _ in range(k)]
    completions = generate_completions(
        model, flat, max_new_tokens, rng, temperature, stop=task.stop
    )
    rewards = task.rewards(completions).reshape(n_prompts, k)
    grouped = [completions[i * k : (i + 1) * k] for i in range(n_prompts)]
    lengths = np.asarray([[len(c) for c in g] for g in grouped], dtype=np.float64)
    noise = rng.random((n_prompts, k))
    ranking = np.lexsort((noise, lengths, -rewards), axis=-1)  # reward desc, length asc
    return PreferenceData(prompts, grouped, rewards, ranking)
