"""Rotated digits and out-of-distribution inputs made from the test set."""

import numpy as np
import pytest
from scipy import ndimage

from bnn.core.errors import ConfigError
from bnn.data import shifted_inputs


@pytest.fixture
def bar():
    # A vertical bar above the centre, in two images: one as (n, 28, 28), one flat.
    images = np.zeros((2, 28, 28), np.float32)
    images[:, 4:12, 13:15] = 1.0
    return images


def test_zero_rotation_is_a_copy(bar):
    turned = shifted_inputs.rotate(bar, 0)
    np.testing.assert_array_equal(turned, bar)
    assert turned is not bar


def test_quarter_turn_is_anticlockwise_and_keeps_shape_and_dtype(bar):
    turned = shifted_inputs.rotate(bar, 90)
    assert turned.shape == bar.shape and turned.dtype == np.float32
    # Anticlockwise: the bar above the centre ends up left of it, on the middle rows.
    np.testing.assert_allclose(turned, np.rot90(bar, k=1, axes=(1, 2)), atol=1e-6)
    assert 0.0 <= turned.min() and turned.max() <= 1.0


def test_rotation_of_flat_images_matches_scipy(bar):
    flat = bar.reshape(2, 784)
    turned = shifted_inputs.rotate(flat, 30)
    expected = ndimage.rotate(bar[0], 30, reshape=False, order=1)
    assert turned.shape == (2, 784)
    np.testing.assert_allclose(turned[0].reshape(28, 28), np.clip(expected, 0, 1), atol=1e-6)


def test_scrambled_keeps_each_images_pixels_and_loses_its_shape(bar):
    rng = np.random.default_rng(0)
    images = rng.random((3, 784)).astype(np.float32)
    scrambled = shifted_inputs.ood_images("scrambled", images, rng)
    for original, shuffled in zip(images, scrambled, strict=True):
        np.testing.assert_array_equal(np.sort(original), np.sort(shuffled))
        assert not np.array_equal(original, shuffled)
    # Each image has its own order.
    orders = [np.argsort(s) for s in shifted_inputs.scrambled(np.tile(bar[0], (2, 1, 1)), rng)]
    assert not np.array_equal(orders[0], orders[1])


def test_noise_is_uniform_in_the_pixel_range():
    images = np.zeros((200, 784), np.float32)
    noise = shifted_inputs.ood_images("noise", images, np.random.default_rng(1))
    assert noise.shape == images.shape and noise.dtype == np.float32
    assert 0.0 <= noise.min() and noise.max() < 1.0
    assert noise.mean() == pytest.approx(0.5, abs=0.01)


def test_unknown_set_names_the_valid_ones():
    with pytest.raises(ConfigError, match="choose from noise, scrambled"):
        shifted_inputs.ood_images("cats", np.zeros((1, 784)), np.random.default_rng(0))
