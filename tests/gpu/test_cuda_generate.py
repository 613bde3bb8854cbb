"""Generation on device="cuda" (the CuPy stand-in): prefill, the KV cache and host syncs."""

import numpy as np
import pytest

import tinyllm
from tinyllm import backend
from tinyllm.models import ModelConfig, build_model
from tinyllm.models.decoder import Decoder

TINY = dict(vocab_size=11, d_model=16, n_layer=2, n_head=4, block_size=8)
CASES = [("gpt", {}), ("llama", {"n_kv_head": 2, "bias": True})]


def tiny(arch, flags, device):
    tinyllm.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, **TINY, **flags)).double()
    rng = np.random.default_rng(11)
    for p in model.parameters():
        p.data[...] = rng.normal(0.0, 0.5, p.shape)
    return model.to(device)


@pytest.mark.parametrize("arch,flags", CASES)
def test_prefill_on_cuda_matches_cpu_and_the_steps(arch, flags, counters):
    idx = np.random.default_rng(3).integers(0, 11, (2, 7))
    got = {}
    for device in ("cpu", "cuda"):
        decoder = Decoder(tiny(arch, flags, device), batch_size=2, max_len=8)
        counters.reset()
        logits = decoder.prefill(backend.to_device(idx, device))
        if device == "cuda":
            assert backend.device_of(logits) == "cuda"
            assert counters.n_syncs == 0, counters.report()
        got[device] = (backend.to_numpy(logits), backend.to_numpy(decoder.K))
    stepper = Decoder(tiny(arch, flags, "cpu"), batch_size=2, max_len=8)
    for t in range(7):
        last = stepper.step(idx[:, t])
    np.testing.assert_allclose(got["cuda"][0], got["cpu"][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["cuda"][1], got["cpu"][1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["cuda"][0], last, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("arch,flags", CASES)
def test_generate_on_cuda_syncs_once_per_new_token(arch, flags, counters):
    """The prompt stays on the device and the cache is filled by one prefill: the only host
    syncs are the N reads of the logits that the N new tokens are sampled from (the context
    slides twice here)."""
    prompt = np.random.default_rng(4).integers(0, 11, (2, 5))
    outs = []
    for device in ("cpu", "cuda"):
        model = tiny(arch, flags, device)
        idx = tinyllm.tensor(prompt, device=device)
        counters.reset()
        out = model.generate(idx, 12, temperature=0)
        if device == "cuda":
            assert out.device == "cuda"
            assert counters.n_syncs <= 12, counters.report()
        outs.append(out.cpu().numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    uncached = tiny(arch, flags, "cuda").generate(
        tinyllm.tensor(prompt, device="cuda"), 12, temperature=0, use_cache=False
    )
    np.testing.assert_array_equal(uncached.cpu().numpy(), outs[0])
