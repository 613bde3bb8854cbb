"""``tinyllm agent``: fine-tune a small byte-level Llama on tool-use traces and run it in ReAct.

    tinyllm agent train --seed 0 --out agent.safetensors      # 1,200 steps
    tinyllm agent run --load agent.safetensors --question "What is 12 * 34?"
    tinyllm agent run --load agent.safetensors --constrained --k 5
    tinyllm agent run --load agent.safetensors --direct

``run`` without ``--question`` asks held-out questions (``--n`` of each kind). Without
``--load`` it trains a model from ``--seed`` first. The transcript of each question is printed:
the model writes Thought / Action / Action Input, the tools (``calc``, ``lookup``) write the
Observation. The table over 3 seeds is ``python experiments/agents.py``.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("agent", help="a tinyllm model that uses tools (ReAct)")
    sub = p.add_subparsers(dest="agent_command", metavar="ACTION")
    train = sub.add_parser("train", help="fine-tune a model on synthetic tool-use traces")
    _training_args(train)
    train.add_argument("--out", required=True, help="where to save the weights (.safetensors)")
    train.set_defaults(func=run_train)
    run = sub.add_parser("run", help="answer questions with the ReAct loop; print transcripts")
    _training_args(run)
    run.add_argument("--load", default=None, help="weights from `tinyllm agent train`")
    run.add_argument("--question", action="append", default=None, help="(repeatable)")
    run.add_argument("--n", type=int, default=2, help="held-out questions of each kind")
    run.add_argument("--constrained", action="store_true", help="schema-constrained actions")
    run.add_argument("--k", type=int, default=1, help="self-consistency samples (1: greedy)")
    run.add_argument("--temperature", type=float, default=0.8, help="sampling when k > 1")
    run.add_argument("--direct", action="store_true", help="answer without tools")
    run.set_defaults(func=run_agent)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _training_args(p) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")


def _config(args):
    from tinyllm.agents.finetune import AgentTrainConfig

    return AgentTrainConfig(
        seed=args.seed, steps=args.steps, batch_size=args.batch_size, d_model=args.d_model,
        n_layer=args.n_layer,
    )  # fmt: skip


def _train(args):
    from tinyllm.agents.finetune import finetune

    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value < 1:
            print(f"tinyllm agent: {flag} must be >= 1, got {value}", file=sys.stderr)
            return None
    result = finetune(_config(args), progress=not args.no_progress)
    print(
        f"fine-tuned {result.model.num_parameters():,} parameters for {args.steps} steps in "
        f"{result.seconds:.0f} s; last loss {result.losses[-1]:.4f}"
    )
    return result.model


def run_train(args) -> int:
    from tinyllm.agents.finetune import save_agent

    model = _train(args)
    if model is None:
        return 2
    print(f"saved {save_agent(args.out, model, _config(args))}")
    return 0


def run_agent(args) -> int:
    import numpy as np

    from tinyllm.agents.evaluate import Strategy, run_task
    from tinyllm.agents.finetune import load_agent
    from tinyllm.agents.toolkit import agent_registry
    from tinyllm.agents.traces import held_out_tasks

    for flag, value in (("--k", args.k), ("--n", args.n)):
        if value < 1:
            print(f"tinyllm agent run: {flag} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.question:
        tasks = [_task_for(q) for q in args.question]
    else:
        try:
            tasks = held_out_tasks(args.n)
        except ValueError as exc:
            print(f"tinyllm agent run: --n {args.n}: {exc}", file=sys.stderr)
            return 2
    if args.load:
        from tinyllm.io.checkpoint import CheckpointError

        try:
            model, _ = load_agent(args.load)
        except (OSError, ValueError, CheckpointError) as exc:
            print(f"tinyllm agent run: {exc}", file=sys.stderr)
            return 2
    else:
        model = _train(args)
        if model is None:
            return 2
    registry = agent_registry()
    strategy = Strategy("direct" if args.direct else "react", args.constrained, args.k)
    rng = np.random.default_rng(args.seed)
    correct = 0
    for task in tasks:
        if task is None:
            continue
        outcome = run_task(model, registry, task, strategy, rng, args.temperature)
        correct += outcome.correct
        print(f"=== {strategy.name}")
        print(outcome.transcript.rstrip())
        if args.k > 1:
            print(f"votes: {outcome.votes}")
        verdict = "right" if outcome.correct else f"wrong (expected {outcome.expected})"
        print(f"answer: {outcome.answer!r}: {verdict}\n")
    print(f"{correct} of {sum(t is not None for t in tasks)} right")
    return 0


def _task_for(question: str):
    """A ``Task`` for a question of one of the two trained forms (its expected answer needs
    the operands or the word); other questions are not supported."""
    import re

    from tinyllm.agents.traces import calc_task, lookup_task

    m = re.fullmatch(r"What is (\d+) ([+*-]) (\d+)\?", question.strip())
    if m:
        return calc_task(int(m.group(1)), m.group(2), int(m.group(3)))
    m = re.fullmatch(r"Which help topic mentions '([a-z]+)'\?", question.strip())
    if m:
        return lookup_task(m.group(1))
    print(
        f"tinyllm agent run: unsupported question {question!r}: ask 'What is A op B?' "
        "(op one of + - *) or \"Which help topic mentions 'word'?\"",
        file=sys.stderr,
    )
    return None
