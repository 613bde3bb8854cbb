"""Training language models: configuration, the loop, checkpoints, the reference band."""

from tinyllm.train.config import TrainConfig
from tinyllm.train.loop import RunResult, train

__all__ = ["RunResult", "TrainConfig", "train"]
