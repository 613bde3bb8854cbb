"""One line: is the GPU stack usable (CuPy, driver, NVRTC, cuBLAS, cuRAND)? Exit 0 if so.

python tools/device_check.py      (the same as: python -m tinyllm.backend)
"""

from __future__ import annotations

import sys

from tinyllm.backend import check_cuda


def main() -> int:
    """Print ``check_cuda``'s one line; 0 when the GPU works, 1 otherwise."""
    result = check_cuda()
    print(result.message)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
