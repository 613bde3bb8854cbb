"""``LanguageModel.generate`` and ``MambaLM.generate`` share one sampling step
(``models.lm.sampling_step``: logits processor, temperature, top-k, top-p, callback). Both
equal a naive reference loop, written here from the definition (the full forward over all
tokens at each step, the last position's logits, ``sample_next`` with the same generator),
token for token, with and without their caches; and Mamba takes a logits processor now."""

import numpy as np
import pytest

import tinyllm
from tinyllm.generation.sampling import sample_next
from tinyllm.models import MambaConfig, ModelConfig, build_model

SETTINGS = [dict(temperature=0.0), dict(temperature=0.8, top_k=5),
            dict(temperature=1.2, top_p=0.9), dict(temperature=1.0, top_k=10, top_p=0.5)]  # fmt: skip


def _model(arch):
    tinyllm.manual_seed(0)
    if arch == "mamba":
        return build_model(MambaConfig(vocab_size=40, d_model=16, n_layer=2))
    return build_model(ModelConfig(arch="llama", vocab_size=40, d_model=16, n_layer=2,
                                   n_head=2, block_size=32))  # fmt: skip


def _naive(model, ids, n, rng, processor=None, **kw):
    tokens = ids.copy()
    with tinyllm.no_grad():
        for _ in range(n):
            last = model(tinyllm.tensor(tokens)).numpy()[:, -1, :]
            if processor is not None:
                last = processor(tokens, last)
            tokens = np.concatenate([tokens, sample_next(last, rng, **kw)[:, None]], axis=1)
    return tokens


@pytest.mark.parametrize("arch", ["llama", "mamba"])
@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_generate_equals_the_naive_sampling_loop(arch, setting):
    model = _model(arch)
    model.eval()
    ids = np.random.default_rng(1).integers(0, 40, (3, 5))
    kw = SETTINGS[setting]
    want = _naive(model, ids, 12, np.random.default_rng(7), **kw)
    assert len({tuple(r) for r in want[:, 5:]}) > 1 or kw["temperature"] == 0  # rows differ
    for cache in (True, False):
        seen = []
        got = model.generate(tinyllm.tensor(ids), 12, generator=np.random.default_rng(7),
                             use_cache=cache, callback=seen.append, **kw).numpy()  # fmt: skip
        np.testing.assert_array_equal(got, want, err_msg=f"{arch} cache={cache}")
        assert seen == want[0, 5:].tolist()  # the callback gets the first sequence's tokens


def test_mamba_generate_takes_a_logits_processor():
    """A processor that bans the greedy choice changes the tokens exactly as in the naive
    loop (the processor sees the tokens so far and the last logits [B, V])."""
    model = _model("mamba")
    model.eval()
    ids = np.random.default_rng(2).integers(0, 40, (2, 4))

    def ban_argmax(tokens, logits):
        out = logits.copy()
        out[np.arange(len(out)), logits.argmax(-1)] = -np.inf
        return out

    plain = model.generate(tinyllm.tensor(ids), 6, temperature=0.0).numpy()
    banned = model.generate(tinyllm.tensor(ids), 6, temperature=0.0,
                            logits_processor=ban_argmax).numpy()  # fmt: skip
    want = _naive(model, ids, 6, np.random.default_rng(0), ban_argmax, temperature=0.0)
    np.testing.assert_array_equal(banned, want)
    assert not np.array_equal(banned, plain)  # the processor mattered
