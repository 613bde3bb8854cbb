"""Mixed precision (``tinyllm.amp``): dynamic loss scaling with ``torch.amp``'s API, and
bfloat16 rounding on float32 arrays (NumPy or CuPy)."""

from tinyllm.amp.bfloat16 import round_to_bfloat16
from tinyllm.amp.grad_scaler import GradScaler

__all__ = ["GradScaler", "round_to_bfloat16"]
