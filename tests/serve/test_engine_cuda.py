"""The engine on device="cuda" (the CuPy stand-in, tests/cupy_standin): the same greedy and
the same seeded sampled tokens as on the CPU (the uniforms are drawn on the host), with the
reference decode attention and with the CUDA paged kernel (kernels/paged_attention.cu, run
by the stand-in's RawModule on the CPU emulator)."""

import sys
from pathlib import Path

import pytest

import tinyllm
import tinyllm.kernels as K
from tinyllm import backend
from tinyllm.models import ModelConfig, build_model
from tinyllm.serve.engine import LLMEngine, SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin

import cupy_standin  # noqa: E402

pytestmark = cupy_standin.needs_compiler()
standin = cupy_standin.fixture()


def run(device, params, kernel="reference"):
    tinyllm.manual_seed(0)
    m = (
        build_model(
            ModelConfig(
                arch="llama",
                vocab_size=30,
                d_model=16,
                n_layer=2,
                n_head=4,
                n_kv_head=2,
                block_size=40,
            )
        )
        .double()
        .eval()
        .to(device)
    )
    engine = LLMEngine(m, num_blocks=10, block_size=4, kernel=kernel)
    assert backend.device_of(engine.cache.K) == device  # the cache lives on the device
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8], [1, 2, 3, 4, 9]]
    return [r.output for r in engine.generate(prompts, params)]


@pytest.mark.parametrize("kernel", ["reference", "cuda"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cuda_engine_draws_the_cpu_tokens(temperature, kernel):
    params = SamplingParams(max_tokens=9, temperature=temperature, top_p=0.9, seed=11)
    want = run("cpu", params)
    K.reset_counts()
    assert run("cuda", params, kernel) == want
    tiers = {t for (op, t) in K.tier_counts() if op == "paged_attention_forward"}
    assert tiers == {kernel}
