"""nn.Conv2d / MaxPool2d / AvgPool2d / PatchEmbed: PyTorch's init bounds, equal to torch's
modules with the same weights (optional oracle), and the patch embedding's two forms (conv
with stride = patch, and patchify + linear) equal to each other and to a NumPy loop."""

import math

import numpy as np
import pytest

import tinyllm
import tinyllm.nn as nn
from tinyllm.nn.conv import patchify


def test_conv2d_init_is_pytorchs():
    m = nn.Conv2d(64, 32, 3, groups=2)
    fan_in = 32 * 9  # Cin / groups * kh * kw
    bound = 1 / math.sqrt(fan_in)
    w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    assert w.shape == (32, 32, 3, 3) and b.shape == (32,)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # U(-bound, bound) has variance bound^2 / 3; 9216 samples: the estimate's relative
    # standard error is ~1.5%, so 8% is > 5 sigma
    assert abs(w.var() / (bound**2 / 3) - 1) < 0.08


def test_modules_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 9))
    m = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2).double()
    t = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    t = t.double()
    with torch.no_grad():
        t.weight.copy_(torch.tensor(m.weight.detach().numpy()))
        t.bias.copy_(torch.tensor(m.bias.detach().numpy()))
    got = m(tinyllm.tensor(x)).detach().numpy()
    np.testing.assert_allclose(got, t(torch.tensor(x)).detach().numpy(), rtol=0, atol=1e-12)
    for mine, theirs in (
        (nn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1)),
        (nn.AvgPool2d(2, count_include_pad=False, padding=1),
         torch.nn.AvgPool2d(2, count_include_pad=False, padding=1)),
    ):  # fmt: skip
        np.testing.assert_allclose(mine(tinyllm.tensor(x)).numpy(),
                                   theirs(torch.tensor(x)).numpy(), rtol=0, atol=1e-12)  # fmt: skip


def test_patch_embed_conv_equals_unfold_linear_and_a_loop():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 8, 12))
    conv = nn.PatchEmbed((8, 12), (4, 3), in_chans=2, embed_dim=5).double()
    unfold = nn.PatchEmbed((8, 12), (4, 3), in_chans=2, embed_dim=5, mode="unfold").double()
    unfold.load_state_dict(conv.state_dict())
    a = conv(tinyllm.tensor(x)).detach().numpy()
    b = unfold(tinyllm.tensor(x)).detach().numpy()
    assert a.shape == (3, 2 * 4, 5)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)  # two GEMM orders: 1e-12
    W, bias = conv.proj.weight.detach().numpy(), conv.proj.bias.detach().numpy()
    for n in range(3):
        for gi in range(2):
            for gj in range(4):
                patch = x[n, :, 4 * gi : 4 * gi + 4, 3 * gj : 3 * gj + 3]
                want = np.einsum("dcij,cij->d", W, patch) + bias
                np.testing.assert_allclose(a[n, gi * 4 + gj], want, rtol=0, atol=1e-12)


def test_patchify_order_and_errors():
    x = tinyllm.arange(16.0).reshape(1, 1, 4, 4)
    p = patchify(x, 2).numpy()
    np.testing.assert_array_equal(p[0, 1], [2.0, 3.0, 6.0, 7.0])  # top-right patch
    with pytest.raises(ValueError, match="patchify: image 4 x 4"):
        patchify(x, 3)
    with pytest.raises(ValueError, match="PatchEmbed: expected images"):
        nn.PatchEmbed(8, 2)(tinyllm.randn(1, 1, 4, 4))
