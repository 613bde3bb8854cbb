"""``import tinyllm.kernels`` alone declares every kernel's tiers: paged attention, im2col and
WKV are no longer declared only when the module that uses them (the server, conv, RWKV)
happens to be imported first. Checked in a fresh interpreter, where nothing else ran."""

import json
import subprocess
import sys

PROBE = """
import json, sys
import tinyllm.kernels as K
import types
print(json.dumps({"declared": K.declared_kernels(),
                  "serve_loaded": "tinyllm.serve" in sys.modules,
                  "im2col_is_module": isinstance(K.im2col, types.ModuleType)}))
"""


def test_fresh_import_lists_paged_attention_im2col_and_wkv():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    declared = probe["declared"]
    for op in ("paged_attention_forward", "im2col", "col2im", "wkv4_forward", "wkv4_backward"):
        assert op in declared, op
        assert declared[op][:2] == ["reference", "numba"], (op, declared[op])
        assert "cuda" in declared[op], (op, declared[op])
    assert not probe["serve_loaded"]  # declared by the kernels package, not via the server
    # ``K.im2col`` stays the module (tinyllm.functional.conv calls K.im2col.im2col): its
    # function of the same name must not shadow it
    assert probe["im2col_is_module"]
    # the same tiers as the op modules declare when they are imported directly
    import tinyllm.kernels.paged_attention  # noqa: F401
    from tinyllm.kernels import kernel_tiers

    assert list(kernel_tiers("paged_attention_forward")) == declared["paged_attention_forward"]
