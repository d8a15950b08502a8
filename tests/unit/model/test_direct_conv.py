"""``bnn.model.direct_conv``: the C convolution against im2col and NumPy's product."""

import logging

import numpy as np
import pytest

from bnn.model import conv_pool_ops, direct_conv
from bnn.model.im2col import patch_matrix
from bnn.model.specs import ConvSpec
from bnn.predictive import forward


def im2col_conv(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    size, _, _, c_out = kernel.shape
    n, height, width, _ = images.shape
    products = patch_matrix(images.astype(np.float64), size) @ kernel.reshape(-1, c_out)
    return products.reshape(n, height - size + 1, width - size + 1, c_out)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BNN_NATIVE_CACHE", str(tmp_path_factory.getbasetemp() / "native"))
    monkeypatch.delenv("BNN_NATIVE", raising=False)


def test_it_compiles_here():
    # CI's machines have a C compiler (PyTensor's C backend needs one too); a
    # silent fall back to im2col there would leave the kernel untested.
    assert direct_conv.available()


@pytest.mark.parametrize(
    "n, height, width, c_in, c_out, size",
    [
        (3, 12, 12, 32, 32, 5),  # the conv net's second layer: eight positions a row
        (2, 28, 28, 1, 320, 5),  # its first, ten draws folded into the channels
        (2, 9, 15, 1, 32, 5),  # one channel, 5 x 5 (the unrolled loop): 11 positions, 8 and 3
        (4, 9, 20, 3, 5, 3),  # rows of 18 positions: two of eight and a tail of two
        (2, 7, 13, 2, 40, 2),  # 12 positions; channels padded from 40 to 64
        (1, 5, 5, 4, 64, 5),  # a single position, two panels
    ],
)
def test_maps_equal_im2col_to_float32_rounding(n, height, width, c_in, c_out, size):
    rng = np.random.default_rng(n + height + c_out)
    images = rng.standard_normal((n, height, width, c_in), dtype=np.float32)
    kernel = rng.standard_normal((size, size, c_in, c_out), dtype=np.float32)
    maps = direct_conv.conv_valid(images, kernel)
    exact = im2col_conv(images, kernel)
    assert maps.shape == exact.shape and maps.dtype == np.float32
    # A float32 sum of `terms` products of standard normals: its partial sums are
    # about sqrt(terms) in size and their roundings add like a random walk over
    # `terms` steps, so about terms * eps in all; allow 8 times that.
    terms = size * size * c_in
    np.testing.assert_allclose(maps, exact, rtol=0, atol=8 * terms * np.finfo(np.float32).eps)


def test_the_unrolled_single_channel_loop_makes_the_generic_loops_bits():
    # A second channel of zeros sends the same images through the generic loop:
    # its products are exact zeros, which leave each sum's bits as they were.
    rng = np.random.default_rng(4)
    images = rng.standard_normal((3, 13, 19, 1), dtype=np.float32)  # rows of 15: 8 and 7
    kernel = rng.standard_normal((5, 5, 1, 32), dtype=np.float32)
    bias = rng.standard_normal(32, dtype=np.float32)
    with_zeros = np.concatenate([images, np.zeros_like(images)], axis=3)
    wider_kernel = np.concatenate([kernel, rng.standard_normal(kernel.shape, np.float32)], axis=2)
    np.testing.assert_array_equal(
        direct_conv.conv_valid(images, kernel), direct_conv.conv_valid(with_zeros, wider_kernel)
    )
    np.testing.assert_array_equal(
        direct_conv.conv_pool(images[:, :12, :18], kernel, bias, 2),
        direct_conv.conv_pool(with_zeros[:, :12, :18], wider_kernel, bias, 2),
    )


def test_out_is_filled_in_place_and_nan_propagates():
    rng = np.random.default_rng(1)
    images = rng.standard_normal((2, 12, 12, 32), dtype=np.float32)
    kernel = rng.standard_normal((5, 5, 32, 32), dtype=np.float32)
    images[1, 3, 4, 0] = np.nan
    out = np.full((2, 8, 8, 32), 7, np.float32)
    assert direct_conv.conv_valid(images, kernel, out) is out
    # position (y, x) reads rows y..y+4 and columns x..x+4: the NaN pixel reaches these
    touched = np.zeros((8, 8), bool)
    touched[0:4, 0:5] = True
    assert np.isnan(out[1][touched]).all() and not np.isnan(out[1][~touched]).any()
    assert not np.isnan(out[0]).any()
    with pytest.raises(ValueError, match="C-contiguous float32 of shape"):
        direct_conv.conv_valid(images, kernel, np.empty((2, 8, 8, 32), np.float64))


def test_the_same_bits_on_every_call_and_for_any_split_of_the_images():
    rng = np.random.default_rng(2)
    images = rng.standard_normal((6, 12, 12, 32), dtype=np.float32)
    kernel = rng.standard_normal((5, 5, 32, 32), dtype=np.float32)
    whole = direct_conv.conv_valid(images, kernel)
    np.testing.assert_array_equal(direct_conv.conv_valid(images, kernel), whole)
    split = [direct_conv.conv_valid(images[i : i + 1], kernel) for i in range(6)]
    np.testing.assert_array_equal(np.concatenate(split), whole)


def test_no_compiler_means_im2col_with_one_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("BNN_NATIVE_CACHE", str(tmp_path / "cache"))
    direct_conv._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="bnn.model.direct_conv"):
            assert not direct_conv.available()
            assert not direct_conv.available()
        assert len(caplog.records) == 1 and "using im2col" in caplog.records[0].message
    finally:
        direct_conv._library.cache_clear()
    assert not (tmp_path / "cache").exists()


def test_the_conv_forward_pass_agrees_with_and_without_it(monkeypatch):
    spec = ConvSpec(n_filters=(3, 32), n_hidden=(8,))
    rng = np.random.default_rng(3)
    weights = {
        name: (rng.standard_normal((4, *shape)) * 0.3).astype(np.float32)
        for name, shape in spec.weight_shapes().items()
    }
    images = rng.random((5, 784), dtype=np.float32)
    direct = forward.conv_logits(images, spec, weights)
    monkeypatch.setenv("BNN_NATIVE", "0")
    assert not direct_conv.available()
    numpy_only = forward.conv_logits(images, spec, weights)
    # two float32 computations with other summation orders (the test above bounds
    # the maps); through tanh, the pool and two dense layers of 8 units
    np.testing.assert_allclose(direct, numpy_only, rtol=0, atol=1e-5 * np.abs(numpy_only).max())


@pytest.mark.parametrize(
    "n, height, c_in, c_out, size",
    [(3, 12, 32, 32, 5), (2, 28, 1, 32, 5), (4, 9, 3, 5, 3), (2, 7, 10, 40, 2)],
)
def test_kernel_gradient_equals_the_patch_products_to_float32_rounding(
    n, height, c_in, c_out, size
):
    rng = np.random.default_rng(n + c_out)
    images = rng.standard_normal((n, height, height + 1, c_in), dtype=np.float32)
    out_h, out_w = height - size + 1, height - size + 2
    gradient = rng.standard_normal((n, out_h, out_w, c_out), dtype=np.float32)
    got = direct_conv.kernel_gradient(images, gradient)
    patches = patch_matrix(images.astype(np.float64), size)
    exact = (patches.T @ gradient.reshape(-1, c_out)).reshape(size, size, c_in, c_out)
    assert got.shape == exact.shape and got.dtype == np.float32
    terms = n * out_h * out_w  # each value sums one product per image and position
    np.testing.assert_allclose(got, exact, rtol=0, atol=8 * terms * np.finfo(np.float32).eps)


@pytest.mark.parametrize(
    "n, height, width, c_in, c_out, size, pool",
    [
        (3, 28, 28, 1, 32, 5, 2),  # the conv net's first block
        (2, 12, 12, 32, 32, 5, 2),  # its second
        (2, 28, 28, 1, 320, 5, 2),  # its first, ten draws folded into the channels
        (3, 9, 13, 3, 40, 2, 2),  # channels padded from 40 to 64; a ragged row of 12
        (2, 8, 8, 2, 5, 3, 1),  # no pooling: the maps plus the bias
    ],
)
def test_conv_pool_is_the_numba_pool_of_conv_valid_value_for_value(
    n, height, width, c_in, c_out, size, pool
):
    rng = np.random.default_rng(n + c_out + pool)
    # small integers: every sum is exact, so windows hold ties, which set every tied bit
    images = rng.integers(-2, 3, (n, height, width, c_in)).astype(np.float32)
    kernel = rng.integers(-1, 2, (size, size, c_in, c_out)).astype(np.float32)
    bias = rng.standard_normal(c_out, dtype=np.float32)
    images[0, 2, 3, 0] = np.nan  # a NaN wins its windows and sets no bit
    maps = direct_conv.conv_valid(images, kernel)
    shape = (n, maps.shape[1] // pool, maps.shape[2] // pool, c_out)
    expected, expected_maxima = np.empty(shape, np.float32), np.empty(shape, np.uint8)
    conv_pool_ops._pool_with_bias(maps, bias, pool, expected, expected_maxima)
    assert np.isnan(expected).any()
    assert pool == 1 or (expected_maxima & (expected_maxima - 1)).any()  # windows with ties
    maxima = np.full(shape, 255, np.uint8)
    pooled = direct_conv.conv_pool(images, kernel, bias, pool, maxima=maxima)
    np.testing.assert_array_equal(pooled, expected)  # NaNs at the same places
    np.testing.assert_array_equal(maxima, expected_maxima)
    out = np.empty(shape, np.float32)
    assert direct_conv.conv_pool(images, kernel, bias, pool, out=out) is out
    np.testing.assert_array_equal(out, expected)


def test_conv_pool_checks_its_windows_and_its_outputs():
    rng = np.random.default_rng(5)
    images = rng.standard_normal((2, 11, 11, 1), dtype=np.float32)
    kernel = rng.standard_normal((2, 2, 1, 32), dtype=np.float32)
    bias = np.zeros(32, np.float32)
    # 10x10 maps: a 3x3 window pools without masks (the predictive), not with them
    with pytest.raises(ValueError, match="do not divide by pool_size=3"):
        direct_conv.conv_pool(images, kernel, bias, 3)
    pooled = direct_conv.conv_pool(images[:, :10, :10], kernel, bias, 3)
    maps = direct_conv.conv_valid(images[:, :10, :10], kernel)
    np.testing.assert_array_equal(pooled, maps.reshape(2, 3, 3, 3, 3, 32).max(axis=(2, 4)))
    with pytest.raises(ValueError, match="windows up to 2x2"):
        direct_conv.conv_pool(images[:, :10, :10], kernel, bias, 3, maxima=np.empty(1, np.uint8))
    with pytest.raises(ValueError, match="maxima must be C-contiguous uint8 of shape"):
        direct_conv.conv_pool(images, kernel, bias, 2, maxima=np.empty((2, 5, 5, 32), np.uint16))


@pytest.mark.parametrize(
    "n, height, width, c_in, c_out, size",
    [
        (3, 12, 12, 32, 32, 5),  # the conv net's second layer
        (2, 9, 20, 3, 5, 3),  # ragged rows of 18 positions; 3 channels padded to 32
        (2, 7, 13, 40, 2, 2),  # 40 channels: two panels
        (1, 5, 5, 4, 8, 5),  # one position: every tap reaches a different pixel
    ],
)
def test_image_gradient_equals_the_transposed_convolution_to_float32_rounding(
    n, height, width, c_in, c_out, size
):
    rng = np.random.default_rng(n + c_in)
    kernel = rng.standard_normal((size, size, c_in, c_out), dtype=np.float32)
    out_h, out_w = height - size + 1, width - size + 1
    gradient = rng.standard_normal((n, out_h, out_w, c_out), dtype=np.float32)
    got = direct_conv.image_gradient(gradient, kernel, (n, height, width, c_in))
    exact = np.zeros((n, height, width, c_in))
    for i in range(size):
        for j in range(size):  # tap (i, j) sends each position's gradient to pixel (y + i, x + j)
            exact[:, i : i + out_h, j : j + out_w] += gradient.astype(np.float64) @ kernel[i, j].T
    assert got.shape == exact.shape and got.dtype == np.float32
    terms = size * size * c_out  # at most this many products reach one pixel
    np.testing.assert_allclose(got, exact, rtol=0, atol=8 * terms * np.finfo(np.float32).eps)
    out = np.full((n, height, width, c_in), np.nan, np.float32)
    assert direct_conv.image_gradient(gradient, kernel, out.shape, out) is out
    np.testing.assert_array_equal(out, got)  # the same bits, whatever out held before
    split = [
        direct_conv.image_gradient(gradient[b : b + 1], kernel, (1, *out.shape[1:]))
        for b in range(n)
    ]
    np.testing.assert_array_equal(np.concatenate(split), got)
