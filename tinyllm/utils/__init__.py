"""Utilities with PyTorch's ``torch.utils`` names: ``checkpoint`` (activation recomputation).

``import tinyllm.utils`` (as ``torch.utils.checkpoint`` is imported explicitly); then
``tinyllm.utils.checkpoint(fn, *args)`` or ``from tinyllm.utils.checkpoint import checkpoint``.
"""

from tinyllm.utils.checkpoint import checkpoint, checkpoint_sequential

__all__ = ["checkpoint", "checkpoint_sequential"]
