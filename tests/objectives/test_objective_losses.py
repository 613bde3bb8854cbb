"""Each objective's loss, gradchecked end to end in float64, and what it averages over."""

import numpy as np
import pytest

import tinyllm
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.objectives import IGNORE_INDEX
from tinyllm.objectives.tasks import make_task


def _tiny(objective, base_vocab=16, seq_len=12):
    task = make_task(objective, base_vocab, seq_len)
    tinyllm.manual_seed(0)
    model = task.build_model(task.model_config(d_model=8, n_layer=1, n_head=2, ffn_hidden=16))
    return task, model.double()


@pytest.mark.parametrize("objective", ["mlm", "prefixlm", "span"])
def test_objective_loss_gradcheck_float64(objective):
    """Per-token losses (reduction "none": ignored positions give 0 with a zero gradient)
    under a random cotangent, w.r.t. every parameter of a tiny model."""
    task, model = _tiny(objective)
    rng = np.random.default_rng(0)
    batch = task.make_batch(rng.integers(0, 16, (2, task.raw_length)), rng)
    assert 0 < batch.num_targets < batch.labels.size or objective == "span"

    rows = gradcheck_parameters(
        model, lambda: task.loss(model, batch, reduction="none"), max_elements=64, n_directions=3
    )
    failed = [(r["parameter"], r["max_rel_error"]) for r in rows if not r["passed"]]
    assert not failed, failed


@pytest.mark.parametrize("objective", ["mlm", "prefixlm", "span"])
def test_the_mean_is_over_labelled_tokens_only(objective):
    """task.loss == sum of -log p(label) over labelled positions / their count, computed
    from the logits with NumPy."""
    task, model = _tiny(objective)
    rng = np.random.default_rng(1)
    batch = task.make_batch(rng.integers(0, 16, (3, task.raw_length)), rng)
    with tinyllm.no_grad():
        logits = task.logits(model, batch, "cpu").numpy()
        loss = task.loss(model, batch).item()
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    keep = batch.labels != IGNORE_INDEX
    picked = np.take_along_axis(logp, np.where(keep, batch.labels, 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, -picked[keep].mean(), rtol=1e-12)


def test_span_task_shapes_for_seq_len_128():
    task = make_task("span", 256, 128)
    assert (task.raw_length, task.targets_length) == (141, 29)
    batch = task.make_batch(np.random.default_rng(0).integers(0, 256, (4, 141)),
                            np.random.default_rng(1))  # fmt: skip
    assert batch.inputs["input_ids"].shape == (4, 128)
    assert batch.inputs["decoder_input_ids"].shape == batch.labels.shape == (4, 29)
    assert (batch.inputs["decoder_input_ids"][:, 0] == 256).all()  # <pad> starts the decoder
    np.testing.assert_array_equal(batch.inputs["decoder_input_ids"][:, 1:], batch.labels[:, :-1])
