"""One default run of a vision task, the same for ``tinyllm vision train`` and
``experiments/multimodal.py`` (so that the reference bands measured by the one apply to
the other):

    vit      train_vit(seed, steps)                                test accuracy
    clip     train_clip(seed, steps)                               zero-shot, recall@1/5
    caption  train_vit(seed, vit_steps), then train_caption on its tokens, the ViT frozen
             (vit_lr_mult 0)                                       captioning accuracy
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_STEPS", "TASKS", "TaskRun", "run_task"]

TASKS = ("vit", "clip", "caption")
DEFAULT_STEPS = {"vit": 1500, "clip": 2000, "caption": 600}


@dataclass
class TaskRun:
    model: object
    metrics: dict
    vit: object = None  # the classifier (vit task) or the caption task's encoder
    # caption: (images, words, labels) of the whole test split
    examples: tuple = field(default_factory=tuple)


def run_task(task: str, seed: int = 0, steps: int | None = None, *, projector: str = "mlp",
             pos_embed: str = "learned", vit_steps: int | None = None,
             vit_lr_mult: float = 0.0, quiet: bool = False) -> TaskRun:  # fmt: skip
    """Train ``task`` ("vit" | "clip" | "caption") with the defaults unless given; metrics
    carry every setting that a reference band must match."""
    from tinyllm.vision.train import train_caption, train_clip, train_vit

    if task not in TASKS:
        raise ValueError(f"run_task: task must be one of {TASKS}, got {task!r}")
    steps = DEFAULT_STEPS[task] if steps is None else steps
    if steps < 1:
        raise ValueError(f"run_task: steps must be >= 1, got {steps}")
    if task == "vit":
        model, metrics = train_vit(seed, steps, pos_embed=pos_embed, quiet=quiet)
        return TaskRun(model, metrics, vit=model)
    if task == "clip":
        model, metrics = train_clip(seed, steps, quiet=quiet)
        return TaskRun(model, metrics)
    vit_steps = DEFAULT_STEPS["vit"] if vit_steps is None else vit_steps
    vit, vit_metrics = train_vit(seed, vit_steps, pos_embed=pos_embed, quiet=quiet)
    model, metrics, examples = train_caption(seed, steps, projector=projector, vit=vit,
                                             vit_lr_mult=vit_lr_mult, quiet=quiet)  # fmt: skip
    metrics.update(vit_steps=vit_steps, pos_embed=pos_embed,
                   vit_test_accuracy=vit_metrics["test_accuracy"])  # fmt: skip
    return TaskRun(model, metrics, vit=vit, examples=examples)
