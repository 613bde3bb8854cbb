"""The im2col / col2im kernels (kernels/im2col.py): the Numba tier equals the reference
(float32 and float64, strides, dilations, asymmetric padding, -inf padding) and runs (path
taken); col2im is the adjoint of im2col (<im2col(x), c> = <x, col2im(c)>, a check that
needs neither body); a direct formula checks single entries."""

import numpy as np
import pytest

import tinyllm.kernels as K
from tinyllm.kernels import dispatch
from tinyllm.kernels import im2col as IC

numba = pytest.importorskip("numba")

CASES = [  # (N, C, H, W, kh, kw, stride, dilation, pads)
    (2, 3, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),
    (1, 2, 9, 8, 3, 2, (2, 3), (2, 1), (0, 2, 1, 0)),
    (3, 1, 5, 5, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0)),
    (2, 4, 8, 8, 4, 4, (4, 4), (1, 1), (0, 0, 0, 0)),
    (1, 1, 4, 4, 2, 2, (1, 1), (3, 3), (2, 2, 2, 2)),
]
# float64: the bodies copy and add the same numbers in a different order (col2im's sums
# of up to kh kw terms): 1e-12 absolute; float32 rounding of such sums: 1e-5.
TOL = {np.float64: 1e-12, np.float32: 1e-5}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pad_value", [0.0, -np.inf])
def test_numba_im2col_equals_reference(case, dtype, pad_value):
    N, C, H, W, kh, kw, stride, dilation, pads = case
    x = np.random.default_rng(0).standard_normal((N, C, H, W)).astype(dtype)
    with K.use("reference"):
        ref = IC.im2col(x, kh, kw, stride, dilation, pads, pad_value)
    assert dispatch.last_tier("im2col") == "reference"
    with K.use("numba"):
        got = IC.im2col(x, kh, kw, stride, dilation, pads, pad_value)
    assert dispatch.last_tier("im2col") == "numba"
    np.testing.assert_array_equal(got, ref)  # pure copies: bitwise


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_col2im_equals_reference(case, dtype):
    N, C, H, W, kh, kw, stride, dilation, pads = case
    Ho = IC.conv_output_size(H, kh, stride[0], dilation[0], pads[0], pads[1])
    Wo = IC.conv_output_size(W, kw, stride[1], dilation[1], pads[2], pads[3])
    cols = np.random.default_rng(1).standard_normal((N, C, kh, kw, Ho, Wo)).astype(dtype)
    with K.use("reference"):
        ref = IC.col2im(cols, H, W, stride, dilation, pads)
    with K.use("numba"):
        got = IC.col2im(cols, H, W, stride, dilation, pads)
    assert dispatch.last_tier("col2im") == "numba"
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("tier", ["reference", "numba"])
@pytest.mark.parametrize("case", CASES)
def test_col2im_is_the_adjoint_of_im2col(tier, case):
    N, C, H, W, kh, kw, stride, dilation, pads = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, C, H, W))
    with K.use(tier):
        cols = IC.im2col(x, kh, kw, stride, dilation, pads)
        c = rng.standard_normal(cols.shape)
        back = IC.col2im(c, H, W, stride, dilation, pads)
    # <A x, c> = <x, A^T c> for the linear map A = im2col (zero padding); float64 sums
    np.testing.assert_allclose((cols * c).sum(), (x * back).sum(), rtol=1e-12)


def test_im2col_entries_by_formula():
    x = np.arange(2 * 3 * 7 * 6, dtype=np.float64).reshape(2, 3, 7, 6)
    stride, dilation, pads = (2, 1), (1, 2), (1, 0, 2, 1)
    cols = IC.im2col(x, 3, 2, stride, dilation, pads)
    for n, c, i, j, p, q in np.ndindex(cols.shape):
        h, w = p * 2 + i - 1, q + 2 * j - 2
        want = x[n, c, h, w] if 0 <= h < 7 and 0 <= w < 6 else 0.0
        assert cols[n, c, i, j, p, q] == want


def test_bad_arguments_name_the_op():
    x = np.zeros((1, 1, 3, 3))
    with pytest.raises(ValueError, match="im2col: the kernel"):
        IC.im2col(x, 5, 5)
    with pytest.raises(ValueError, match="im2col: x must be"):
        IC.im2col(np.zeros((3, 3)), 1, 1)
    with pytest.raises(ValueError, match="col2im: cols"):
        IC.col2im(np.zeros((1, 1, 2, 2, 3, 3)), 3, 3)
