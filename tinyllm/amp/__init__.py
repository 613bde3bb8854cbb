"""Mixed precision (``tinyllm.amp``): dynamic loss scaling with ``torch.amp``'s API, an
autocast context choosing a precision per op (float16/bfloat16 emulated on float32 arrays),
and bfloat16 rounding on float32 arrays (NumPy or CuPy)."""

from tinyllm.amp.autocast import autocast, is_autocast_enabled
from tinyllm.amp.bfloat16 import round_to_bfloat16
from tinyllm.amp.grad_scaler import GradScaler
from tinyllm.amp.low_precision import round_to

__all__ = ["GradScaler", "autocast", "is_autocast_enabled", "round_to", "round_to_bfloat16"]
