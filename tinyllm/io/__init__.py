"""Saving and loading without pickle: safetensors checkpoints written atomically."""

from tinyllm.io.atomic import atomic_write
from tinyllm.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["CheckpointError", "atomic_write", "load_checkpoint", "save_checkpoint"]
