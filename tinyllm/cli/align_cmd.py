"""``tinyllm align ppo|dpo|grpo|reward RUN``: align a trained run on a checkable reward.

Every method starts from a ``tinyllm train`` run folder (policy and frozen reference are two
copies of its checkpoint) and writes ``runs/<name>/`` like ``tinyllm train``: the JSONL log,
a progress bar, ``reward_kl.png`` (reward and KL to the reference over steps, with the
method's reference band), the aligned checkpoint, and ``summary.json`` with the alignment
tax (validation bits/byte before and after).
"""

from __future__ import annotations

import dataclasses
import sys
import typing

METHOD_HELP = {
    "ppo": "PPO with a value head, per-token KL penalty, GAE, clipped losses",
    "dpo": "DPO / cDPO / IPO / hinge on preference pairs ranked by the reward",
    "grpo": "GRPO: G samples per prompt, group-normalized advantages, k3 KL",
    "reward": "train a reward model (Bradley-Terry or Plackett-Luce), held-out accuracy",
}

FLAG_HELP = {
    "steps": "optimizer steps (PPO/GRPO: one rollout each)",
    "learning_rate": "AdamW learning rate",
    "seed": "random seed (prompts, sampling)",
    "name": "run folder name under --out-dir (default align-<method>-s<seed>)",
    "eval_interval": "evaluate reward and KL on held-out prompts every N steps",
    "eval_prompts": "number of held-out prompts per evaluation",
    "tax_batches": "validation batches for the alignment tax (bits/byte before and after)",
    "max_new_tokens": "bytes sampled per completion (the task: end a sentence within them)",
    "kl_coef": "PPO: KL penalty coefficient (initial value when --adaptive-kl); with the "
    "default learning rate the default holds the KL to the reference near 3 nats/completion",
    "adaptive_kl": "PPO: adapt the KL coefficient toward --target-kl",
    "target_kl": "PPO: the KL (nats per completion) the adaptive controller steers toward",
    "kl_horizon": "PPO: the adaptive controller's horizon (larger: slower coefficient changes)",
    "beta": "DPO: inverse temperature; GRPO: k3 KL coefficient; the default holds the KL to "
    "the reference near 3 nats/completion (GRPO; DPO 3-5) (smaller: more reward and more KL)",
    "loss_type": "DPO: sigmoid|robust|ipo|hinge; GRPO: grpo|bnpo|dr_grpo",
    "reward_model": "PPO: optimize a `tinyllm align reward` run's model instead of the program",
    "loss": "reward: bradley_terry or plackett_luce",
}


def _kind(f: dataclasses.Field):
    hint = f.type if not isinstance(f.type, str) else f.type
    if isinstance(f.default, bool):
        return bool
    if isinstance(f.default, int):
        return int
    if isinstance(f.default, float):
        return float
    if "float" in str(hint):
        return float
    if "int" in str(hint):
        return int
    return str


def register(subparsers) -> None:
    from tinyllm.alignment.runner import CONFIGS

    p = subparsers.add_parser(
        "align",
        help="align a trained run: PPO, DPO/IPO, GRPO, or train a reward model",
        description="Run an alignment method from a `tinyllm train` run folder on a checkable "
        "reward (end a sentence within N bytes); writes runs/<name>/ with log.jsonl, "
        "reward_kl.png, checkpoint and summary.json (reward, KL, alignment tax).",
    )
    methods = p.add_subparsers(dest="method", metavar="METHOD")
    for method, cls in CONFIGS.items():
        m = methods.add_parser(method, help=METHOD_HELP[method])
        m.add_argument(
            "base_run",
            nargs="?",
            default=None,
            help=f"the `tinyllm train` run folder to start from (default {cls.base_run})",
        )
        m.add_argument("--no-progress", action="store_true", help="no progress bar")
        for f in dataclasses.fields(cls):
            if f.name == "base_run":
                continue
            flag = "--" + f.name.replace("_", "-")
            kind = _kind(f)
            helptext = f"{FLAG_HELP.get(f.name, '')} (default {f.default})".strip()
            if kind is bool:
                m.add_argument(
                    flag, dest=f.name, action=argparse_bool(), default=None, help=helptext
                )
            else:
                m.add_argument(flag, dest=f.name, type=kind, default=None, help=helptext)
        m.set_defaults(func=run, config_class=cls)
    p.set_defaults(func=run, config_class=None)


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction


def config_from_args(args):
    cls = args.config_class
    values = {}
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    if getattr(args, "base_run", None):
        values["base_run"] = args.base_run
    config = cls(**values)
    config.validate()
    return config


def run(args) -> int:
    if args.config_class is None:
        print(
            "tinyllm align: choose a method: ppo, dpo, grpo or reward (tinyllm align --help)",
            file=sys.stderr,
        )
        return 2
    from tinyllm.alignment.runner import align
    from tinyllm.io.checkpoint import CheckpointError

    try:
        config = config_from_args(args)
        summary = align(config, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"tinyllm align {args.method}: {exc}", file=sys.stderr)
        return 2
    print()
    if config.method == "reward":
        print(
            f"done: held-out pair accuracy {summary['heldout_accuracy_before']:.3f} -> "
            f"{summary['heldout_accuracy_after']:.3f} in {summary['wall_s']:.0f} s"
        )
    else:
        print(
            f"done: reward {summary['reward_before']:.3f} -> {summary['reward_after']:.3f}, "
            f"KL to the reference {summary['kl_after']:.3f} nats, alignment tax "
            f"{summary['alignment_tax_bits_per_byte']:+.4f} bits/byte "
            f"({summary['val_bits_per_byte_before']:.4f} -> "
            f"{summary['val_bits_per_byte_after']:.4f}) in {summary['wall_s']:.0f} s"
        )
    print(f"run folder: {summary['run_dir']}")
    return 0


_ = typing  # (annotations of the config dataclasses are strings under __future__)
