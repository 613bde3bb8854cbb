"""A tinyllm language model as the ``generate(prompt) -> str`` the ReAct loop drives.

``ModelPolicy`` decodes bytes (ids 0-255, ``EOS`` = 256) with ``models.decoder.Decoder``'s KV
cache. Successive ReAct calls extend the previous prompt, so the cache is kept between calls:
the longest common prefix of the old and new ids stays cached and only the rest is prefilled.

Without a constraint a step ends at the stop string ``Observation:`` (the loop writes the
observation), at the newline that ends a ``Final Answer:`` line, at EOS, or after
``max_new_tokens``. With ``constrained=True`` every token is sampled from the mask of
``step_regex(registry)`` (``token_mask.RegexGuide``): a thought, then either an action whose
input is the canonical JSON of a document of that tool's schema (``json_schema.py``) or a final
answer, then a newline; the step ends when the automaton accepts. The regex's free parts are
bounded (thought <= 80 printable characters, answer <= 40, schema strings have ``maxLength``),
so a constrained step is at most 289 bytes for ``toolkit.agent_registry()`` (90 for the
thought, 199 for a ``calc`` action whose 40 characters take 4 UTF-8 bytes each): with the
default ``max_new_tokens`` (320) and room in the context every constrained step is complete,
and every action it writes parses and validates.
"""

from __future__ import annotations

import numpy as np

from tinyllm import backend
from tinyllm.agents.json_schema import schema_to_regex
from tinyllm.agents.regex import DEAD, regex_escape
from tinyllm.agents.token_mask import RegexGuide, TokenVocabulary
from tinyllm.agents.tools import ToolRegistry
from tinyllm.agents.traces import EOS
from tinyllm.generation.sampling import sample_next
from tinyllm.models.decoder import Decoder

THOUGHT_CHARS = 80
ANSWER_CHARS = 40
STOP = "Observation:"


def step_regex(registry: ToolRegistry) -> str:
    """The language of one ReAct step over ``registry``'s tools (see the module docstring)."""
    actions = [
        f"Action: {regex_escape(name)}\\nAction Input: (?:{schema_to_regex(tool.parameters)})\\n"
        for name, tool in registry.tools.items()
    ]
    final = f"Final Answer: [ -~]{{1,{ANSWER_CHARS}}}\\n"
    return f"Thought: [ -~]{{1,{THOUGHT_CHARS}}}\\n(?:" + "|".join(actions + [final]) + ")"


def step_guide(registry: ToolRegistry) -> RegexGuide:
    """The step grammar's automaton and masks over the byte vocabulary (masks are cached in
    it per state: share one guide between policies to reuse them)."""
    return RegexGuide(step_regex(registry), byte_vocabulary())


def byte_vocabulary() -> TokenVocabulary:
    return TokenVocabulary.bytes_level()  # 256 byte tokens, EOS = 256 (as traces.EOS)


class ModelPolicy:
    """``__call__(prompt) -> str``: one sampled (or greedy, ``temperature=0``) continuation.

    ``guide`` (from ``step_guide``) may be shared between policies so its cached masks are
    reused; by default a constrained policy builds its own.

    ``stats`` counts generated tokens and calls; ``last_stop`` says why the last call ended
    ("stop", "final", "eos", "accept", "length", "context"); ``last_ids`` holds its byte ids
    (the returned text decodes them with ``errors="replace"``).
    """

    def __init__(
        self,
        model,
        registry: ToolRegistry | None = None,
        constrained: bool = False,
        temperature: float = 0.0,
        max_new_tokens: int = 320,
        rng: np.random.Generator | None = None,
        stop_at_newline: bool = False,
        guide: RegexGuide | None = None,
        max_context: int = 2048,
    ) -> None:
        if constrained and registry is None and guide is None:
            raise ValueError("ModelPolicy: constrained decoding needs the tool registry")
        if model.config.vocab_size <= EOS:
            raise ValueError(
                f"ModelPolicy: the model's vocabulary ({model.config.vocab_size}) has no EOS "
                f"id {EOS}"
            )
        self.model = model
        self.temperature = float(temperature)
        self.max_new_tokens = int(max_new_tokens)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.stop_at_newline = stop_at_newline
        if constrained and guide is None:
            guide = step_guide(registry)
        self.guide = guide if constrained else None
        # the KV cache's length: RoPE has no table limit, and a ReAct run of 4 steps of at most
        # 289 bytes plus observations fits in 2048, so every constrained step can complete
        self.block = int(max_context)
        self._decoder: Decoder | None = None
        self._cached: list[int] = []  # ids whose K/V are in the decoder's cache
        self.stats = {"calls": 0, "tokens": 0}
        self.last_stop = ""
        self.last_ids: list[int] = []  # the byte ids of the last call's output

    def _logits_after(self, ids: list[int]) -> np.ndarray:
        """Next-token logits after ``ids`` [V], reusing the cached common prefix."""
        if len(ids) > self.block:
            raise ValueError(
                f"ModelPolicy: the context has {len(ids)} tokens, more than max_context "
                f"{self.block}"
            )
        if self._decoder is None:
            self._decoder = Decoder(self.model, 1, self.block)
        common = 0
        for a, b in zip(self._cached, ids, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token is fed to get logits
        self._decoder.truncate(min(common, self._decoder.pos))
        self._cached = self._cached[:common]
        rest = np.asarray([ids[common:]], dtype=np.int64)
        logits = self._decoder.prefill(rest) if rest.shape[1] > 1 else self._decoder.step(rest[0])
        self._cached = list(ids)
        return backend.to_numpy(logits)[0].astype(np.float64)

    def __call__(self, prompt: str) -> str:
        self.model.eval()
        ids = list(prompt.encode("utf-8"))
        out: list[int] = []
        state = self.guide.initial if self.guide is not None else None
        self.stats["calls"] += 1
        self.last_stop = "length"
        for _ in range(self.max_new_tokens):
            if len(ids) + len(out) >= self.block:  # the context is full: the step ends here
                self.last_stop = "context"
                break
            logits = self._logits_after(ids + out)
            if self.guide is not None:
                logits = np.where(self.guide.mask(state), logits, -np.inf)
            token = int(sample_next(logits[None], self.rng, self.temperature)[0])
            self.stats["tokens"] += 1
            if token == EOS:
                self.last_stop = "eos"
                break
            out.append(token)
            if self.guide is not None:
                state = self.guide.next_state(state, token)
                if state == DEAD:  # cannot happen: the mask allowed only live tokens
                    raise RuntimeError("ModelPolicy: constrained decoding left the language")
                if self.guide.is_accepting(state):
                    self.last_stop = "accept"
                    break
                continue
            if token == ord("\n"):
                text = bytes(out).decode("utf-8", errors="replace")
                last_line = text.rstrip("\n").rsplit("\n", 1)[-1]
                if self.stop_at_newline or last_line.startswith("Final Answer:"):
                    self.last_stop = "final"
                    break
            if token == ord(":") and bytes(out).endswith(STOP.encode()):
                self.last_stop = "stop"
                break
        self.last_ids = out
        return bytes(out).decode("utf-8", errors="replace")
