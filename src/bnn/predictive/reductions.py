"""The per-draw reductions a predictive summary accumulates: entropies and label counts."""

from __future__ import annotations

import numpy as np
from scipy import special

from bnn.core.mnist import N_CLASSES


def entropy(probabilities: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Shannon entropy in nats, with :math:`0 \log 0 = 0`.

    .. math:: H[p] = -\sum_k p_k \log p_k

    Parameters
    ----------
    probabilities : np.ndarray
        Probability vectors along ``axis``, any shape. Zeros are allowed and
        contribute nothing (no NaN, no warning).
    axis : int
        The axis that holds the classes. The default is the last one.

    Returns
    -------
    np.ndarray
        ``probabilities`` with ``axis`` summed out.
    """
    # special.entr is -p log p with entr(0) = 0 exactly, without a log(0) warning.
    return special.entr(np.asarray(probabilities, dtype=float)).sum(axis=axis)


def label_counts(sampled_labels: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """How often each class was sampled for each image: (images, classes) from (draws, images)."""
    n_images = sampled_labels.shape[1]
    offsets = np.arange(n_images)[None, :] * n_classes
    flat = np.bincount((offsets + sampled_labels).ravel(), minlength=n_images * n_classes)
    return flat.reshape(n_images, n_classes)
