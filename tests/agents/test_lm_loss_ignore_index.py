"""``tinyllm.train.loop.lm_loss(..., ignore_index)``: PyTorch's ``cross_entropy`` semantics
(ignored targets leave both the sum and the count of the mean), which the agents'
``masked_lm_loss`` now uses instead of its own copy."""

import numpy as np
import pytest

import tinyllm
from tinyllm.agents.finetune import IGNORE, masked_lm_loss
from tinyllm.train.loop import lm_loss


def _fixed_logits_model(logits: np.ndarray):
    """A "model" whose output is a leaf tensor of the given logits [B, T, V]."""
    leaf = tinyllm.tensor(logits, requires_grad=True)
    return (lambda idx: leaf), leaf


@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_lm_loss_ignore_index_matches_torch(ignore_index):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 7))
    y = rng.integers(0, 7, (2, 5))
    y[0, :2] = ignore_index  # some targets ignored (3 is also a real class id elsewhere)
    model, leaf = _fixed_logits_model(logits)
    loss = lm_loss(model, np.zeros((2, 5), np.int64), y, "cpu", ignore_index=ignore_index)
    loss.backward()
    t = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(t.reshape(10, 7), torch.tensor(y.reshape(-1)),
                                            ignore_index=ignore_index)  # fmt: skip
    ref.backward()
    # float64 on both sides: agreement to rounding
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(leaf.grad.numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_lm_loss_ignore_index_is_a_mean_over_the_kept_targets():
    """Closed form without torch: the mean of -log softmax over the targets that are kept;
    the default (-100) with no target equal to it is the plain mean over all targets."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 4, 6))
    y = rng.integers(0, 6, (3, 4))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    model, _ = _fixed_logits_model(logits)
    assert np.isclose(lm_loss(model, y, y, "cpu").item(), nll.mean(), rtol=1e-12)
    y_masked = y.copy()
    y_masked[1] = IGNORE
    keep = y_masked != IGNORE
    assert np.isclose(masked_lm_loss(model, y, y_masked).item(), nll[keep].mean(), rtol=1e-12)
    assert not np.isclose(nll[keep].mean(), nll.mean())  # the comparison can fail
