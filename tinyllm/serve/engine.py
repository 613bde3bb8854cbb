"""Continuous batching (Orca's iteration-level scheduling) on the paged KV cache (vLLM).

Each ``step()``:
1. the running requests each need a slot for their next token; when the free blocks run out,
   the most recently admitted running request is preempted by recompute (its blocks freed,
   back to the front of the queue; its prompt + generated tokens are prefilled again later);
2. waiting requests are admitted first-come first-served while their whole context (minus
   prefix blocks shared with live requests) fits in the free blocks and the token budget;
3. one forward of the ragged batch (prefill chunks and decode tokens together);
4. each request samples its next token with its own processors and its own seeded stream
   (``seeded_uniforms(seed, step)``: a preempted request draws the same tokens), and leaves
   the batch at once when it hits max_tokens, an EOS token or a stop string.

Parallel samples (``SamplingParams.n``, vLLM's sequence group) share the prompt by
copy-on-write: the group is admitted and prefilled once (sample 0); right after that
forward, samples 1 .. n-1 fork its block table (``PagedKVCache.fork``: every block's
reference count + 1, no copy) and sample their first tokens from the same logits, each with
its own seed (``seed + i`` when a seed is given). A shared block is copied only when a
sample first writes into it: the prompt's last, partial block, on each sample's first
decode step (n - 1 copies; the last writer keeps the original), and never a full block.
A preempted sample is recomputed alone, like any request.
"""

from __future__ import annotations

import codecs
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tinyllm.generation.processors import (
    build_processors,
    greedy,
    sample_from_uniforms,
    seeded_uniforms,
)
from tinyllm.generation.stop import StopStringMatcher
from tinyllm.kernels import log_softmax_forward
from tinyllm.serve.block_allocator import OutOfBlocks
from tinyllm.serve.runner import PagedRunner


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None
    n: int = 1  # parallel samples of the prompt (forked block tables, copy-on-write)
    logprobs: int | None = None  # record each token's log-probability and the top k


@dataclass
class Request:
    id: object
    prompt: list[int]
    params: SamplingParams
    output: list[int] = field(default_factory=list)
    text: str = ""
    finished: bool = False
    finish_reason: str | None = None
    computed: int = 0  # tokens whose K/V are in the cache
    seed: int = 0
    matcher: StopStringMatcher | None = None
    decoder: object = None
    new_text: str = ""
    forks: list = field(default_factory=list)  # sample 0 only: samples to fork after prefill
    # with params.logprobs = k: per output token (token, log p(token), [(id, log p)] top k),
    # log p under the model (log_softmax of the raw logits, before any processor)
    logprobs: list = field(default_factory=list)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output


class LLMEngine:
    def __init__(
        self,
        model,
        num_blocks: int = 256,
        block_size: int = 16,
        max_num_seqs: int = 32,
        max_num_batched_tokens: int = 2048,
        prefix_sharing: bool = True,
        token_bytes: Callable[[int], bytes] | None = None,
        kernel: str = "reference",
    ) -> None:
        self.runner = PagedRunner(model, num_blocks, block_size, kernel)
        self.cache = self.runner.cache
        self.S = block_size
        self.max_len = model.config.block_size
        self.vocab = model.config.vocab_size
        self.max_num_seqs, self.budget = max_num_seqs, max_num_batched_tokens
        self.prefix_sharing = prefix_sharing
        self.token_bytes = token_bytes or (lambda i: bytes([i % 256]))
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[object, Request] = {}
        self._ids = itertools.count()
        self.stats = {"steps": 0, "preemptions": 0, "shared_blocks": 0, "batched_tokens": 0,
                      "forks": 0}  # fmt: skip

    # ------------------------------------------------------------ requests
    def add_request(self, prompt: list[int], params: SamplingParams | None = None, id=None):
        """Queue a prompt; returns its id. With ``params.n`` > 1 the samples are requests
        ``id`` (sample 0) and ``(id, 1) .. (id, n - 1)``: see ``samples(id)``."""
        params = params or SamplingParams()
        if not prompt:
            raise ValueError("LLMEngine.add_request: the prompt must not be empty")
        if not isinstance(params.n, int) or not 1 <= params.n <= self.max_num_seqs:
            raise ValueError(
                f"LLMEngine.add_request: n must be an int in [1, max_num_seqs = "
                f"{self.max_num_seqs}], got {params.n!r}"
            )
        if params.logprobs is not None and (
            not isinstance(params.logprobs, int) or not 0 <= params.logprobs <= self.vocab
        ):
            raise ValueError(
                f"LLMEngine.add_request: logprobs must be None or an int in [0, {self.vocab}], "
                f"got {params.logprobs!r}"
            )
        if len(prompt) + params.max_tokens > self.max_len:
            raise ValueError(
                f"LLMEngine.add_request: prompt ({len(prompt)} tokens) + max_tokens "
                f"({params.max_tokens}) exceeds the context length {self.max_len}"
            )
        if any(not 0 <= t < self.vocab for t in prompt):
            raise ValueError(f"LLMEngine.add_request: token ids must be in [0, {self.vocab})")
        if (
            self.cache.blocks_needed(len(prompt) + params.max_tokens)
            > self.cache.allocator.num_blocks
        ):
            raise ValueError("LLMEngine.add_request: the request needs more blocks than exist")
        rid = next(self._ids) if id is None else id
        if rid in self.requests:
            raise ValueError(f"LLMEngine.add_request: id {rid!r} is already in use")
        group = []
        for i in range(params.n):
            seed = (
                params.seed + i
                if params.seed is not None
                else int(np.random.SeedSequence().entropy % 2**63)
            )
            req = Request(rid if i == 0 else (rid, i), list(prompt), params, seed=seed)
            req.matcher = StopStringMatcher(params.stop) if params.stop else None
            req.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            self.requests[req.id] = req
            group.append(req)
        group[0].forks = group[1:]
        self.waiting.append(group[0])
        return rid

    def samples(self, rid) -> list[Request]:
        """The n samples of request ``rid`` (sample 0 first)."""
        first = self.requests[rid]
        return [first] + [self.requests[(rid, i)] for i in range(1, first.params.n)]

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # ------------------------------------------------------------ scheduling
    def _prefix_blocks(self, req: Request) -> list[int]:
        """Live blocks holding this request's first full prompt blocks (never the block of
        its last token, which must be computed for its logits)."""
        if not self.prefix_sharing:
            return []
        out, key = [], None
        for b in range((len(req.tokens) - 1) // self.S):
            key = (key, tuple(req.tokens[b * self.S : (b + 1) * self.S]))
            block = self.cache.allocator.lookup(key)
            if block is None:
                break
            out.append(block)
        return out

    def _register_prefix(self, req: Request) -> None:
        if not self.prefix_sharing:
            return
        key, table = None, self.cache.tables[req.id]
        for b in range(min(req.computed, len(req.prompt)) // self.S):
            key = (key, tuple(req.prompt[b * self.S : (b + 1) * self.S]))
            self.cache.allocator.register(key, table[b])

    def _preempt(self, req: Request) -> None:
        self.cache.free(req.id)
        req.computed = 0
        self.running.remove(req)
        self.waiting.appendleft(req)
        self.stats["preemptions"] += 1

    def _schedule(self) -> list[tuple[Request, list[int], int]]:
        batch: list[tuple[Request, list[int], int]] = []
        # 1. the running requests decode one token each; preempt the newest when short
        for req in list(self.running):
            if req not in self.running:
                continue  # preempted by an earlier one in this loop
            while True:
                try:
                    self.cache.ensure(req.id, req.computed, req.computed + 1)
                    break
                except OutOfBlocks:
                    victim = self.running[-1]
                    self._preempt(victim)
                    if victim is req:
                        break
            if req in self.running:
                batch.append((req, [req.tokens[-1]], req.computed))
        tokens = len(batch)
        # 2. admit waiting requests (FCFS) while blocks and the token budget allow
        while self.waiting and len(self.running) + 1 + len(self.waiting[0].forks) <= (
            self.max_num_seqs
        ):
            req = self.waiting[0]
            shared = self._prefix_blocks(req)
            n = len(req.tokens) - len(shared) * self.S
            need = self.cache.blocks_needed(len(req.tokens)) - len(shared)
            if need > self.cache.allocator.num_free or tokens + n > self.budget:
                break
            self.waiting.popleft()
            self.cache.new(req.id, shared)
            self.cache.ensure(req.id, len(shared) * self.S, len(req.tokens))
            self.stats["shared_blocks"] += len(shared)
            req.computed = len(shared) * self.S
            self.running.append(req)
            batch.append((req, req.tokens[req.computed :], req.computed))
            tokens += n
        return batch

    # ------------------------------------------------------------ one iteration
    def step(self) -> list[Request]:
        """One iteration; returns the requests that produced a token (their ``new_text``
        holds the text safe to stream now)."""
        batch = self._schedule()
        if not batch:
            if self.waiting:
                raise RuntimeError("LLMEngine: a waiting request can never be scheduled")
            return []
        logits = self.runner.forward([(r.id, t, p) for r, t, p in batch])
        self.stats["steps"] += 1
        self.stats["batched_tokens"] += sum(len(t) for _, t, _ in batch)
        out = []
        for row, (req, t, p) in enumerate(batch):
            req.computed = p + len(t)
            self._register_prefix(req)
            forks, req.forks = req.forks, []
            for child in forks:  # parallel samples: share every block, copy on first write
                self.cache.fork(req.id, child.id)
                child.computed = req.computed
                self.running.append(child)
                self.stats["forks"] += 1
            for r in [req] + forks:
                token = self._sample(r, logits[row : row + 1])
                r.output.append(token)
                self._finish_check(r, token)
                out.append(r)
        for req in out:
            if req.finished:
                self.running.remove(req)
                self.cache.free(req.id)
        return out

    def _sample(self, req: Request, logits: np.ndarray) -> int:
        p = req.params
        procs = build_processors(
            temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p,
            repetition_penalty=p.repetition_penalty, frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty, prompt_length=len(req.prompt),
        )  # fmt: skip
        scores = procs(np.asarray([req.tokens]), logits)
        if p.temperature == 0:
            token = int(greedy(scores)[0])
        else:
            u = seeded_uniforms(req.seed, len(req.output))
            token = int(sample_from_uniforms(scores, u)[0])
        if p.logprobs is not None:
            logp = log_softmax_forward(np.asarray(logits[0], dtype=np.float64))
            top = np.argsort(-logp, kind="stable")[: p.logprobs]
            req.logprobs.append(
                (token, float(logp[token]), [(int(i), float(logp[i])) for i in top])
            )
        return token

    def _finish_check(self, req: Request, token: int) -> None:
        piece = req.decoder.decode(self.token_bytes(token))
        if req.matcher is not None:
            emit, stopped = req.matcher.feed(piece)
        else:
            emit, stopped = piece, False
        if token in req.params.stop_token_ids:
            req.finished, req.finish_reason = True, "stop"
        elif stopped:
            req.finished, req.finish_reason = True, "stop"
        elif len(req.output) >= req.params.max_tokens:
            req.finished, req.finish_reason = True, "length"
        if req.finished and not stopped:
            emit += req.decoder.decode(b"", final=True)
            if req.matcher is not None:
                emit += req.matcher.flush()
        req.new_text = emit
        req.text += emit

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Request]:
        """Run a list of prompts to completion (all admitted at once); the requests in
        order, the n samples of each prompt one after another."""
        ids = [self.add_request(p, params) for p in prompts]
        while self.has_unfinished():
            self.step()
        return [r for i in ids for r in self.samples(i)]
