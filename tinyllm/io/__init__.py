"""Saving and loading without pickle: safetensors checkpoints written atomically."""

from tinyllm.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]
