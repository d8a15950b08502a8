"""Inputs the network was not trained on, made from the test set without downloads.

- **Rotation** (dataset shift, as in Ovadia et al. 2019): the test digits
  rotated about the image centre. The digit is still there, so accuracy should
  fall gracefully and the predictive should become less confident as it falls.
- **Out-of-distribution sets**, inputs that are not digits at all:

  - ``noise``: every pixel uniform on [0, 1), the range of the scaled images;
  - ``scrambled``: each test digit with its pixels shuffled, which keeps its
    ink (the histogram of intensities) and destroys its shape.

  A useful uncertainty score ranks these above the test digits.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bnn.core.errors import ConfigError
from bnn.core.mnist import IMAGE_SHAPE


def rotate(images: np.ndarray, angle: float) -> np.ndarray:
    """``images`` (n, 28, 28) or (n, 784) turned ``angle`` degrees anticlockwise, same shape.

    Bilinear interpolation; pixels that come from outside the frame are 0
    (background), and the result is clipped to the input's range.
    """
    frames = np.asarray(images).reshape(-1, *IMAGE_SHAPE)
    if angle % 360 == 0:
        return np.array(images, copy=True)
    turned = ndimage.rotate(frames, angle, axes=(2, 1), reshape=False, order=1, cval=0.0)
    return np.clip(turned, frames.min(), frames.max()).astype(frames.dtype).reshape(images.shape)


def noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many uniform-noise images as ``images``, same shape and dtype."""
    return rng.random(np.shape(images)).astype(np.asarray(images).dtype)


def scrambled(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image with its pixels in a random order of its own."""
    flat = np.asarray(images).reshape(len(images), -1)
    order = rng.permuted(np.tile(np.arange(flat.shape[1]), (len(flat), 1)), axis=1)
    return np.take_along_axis(flat, order, axis=1).reshape(np.shape(images))


OOD_SETS = {"noise": noise, "scrambled": scrambled}


def ood_images(name: str, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The out-of-distribution set ``name`` made from ``images``."""
    if name not in OOD_SETS:
        raise ConfigError(
            f"ood.sets: unknown set {name!r}; choose from {', '.join(OOD_SETS)} (conf/config.yaml)"
        )
    return OOD_SETS[name](images, rng)
