"""The Bayesian neural network as a PyMC model with a minibatch likelihood."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt

from bnn.model.networks import build_network
from bnn.model.priors import PriorFamily


def label_dtype() -> str:
    """The integer dtype PyMC accepts for observed labels under the current floatX.

    PyMC refuses to cast observed data it cannot represent exactly in floatX,
    so labels must be int16 in float32 mode and int32 in float64 mode.
    """
    return "int16" if pytensor.config.floatX == "float32" else "int32"


def categorical_logit_logp(value, logits):
    """``log softmax(logits)[value]``, computed without forming the probabilities.

    ``pm.Categorical(logit_p=...)`` takes ``log`` of ``softmax``: in float32 a
    probability below ~1e-38 underflows to 0, its log is -inf and every
    gradient turns NaN (seen with the 2016 initialisation, whose tanh units
    saturate and whose logits differ by hundreds).
    """
    log_p = pt.special.log_softmax(logits, axis=-1)
    return pt.take_along_axis(log_p, value[..., None].astype("int64"), axis=-1)[..., 0]


def categorical_logit_dist(logits, size):
    """Draws of the label: PyMC's own categorical sampler (the log-density is ours)."""
    return pm.Categorical.dist(logit_p=logits, size=size)


def bnn_model(
    images: np.ndarray,
    labels: np.ndarray,
    spec,
    prior: PriorFamily,
    batch_size: int,
) -> pm.Model:
    """A PyMC model of ``labels | images`` under the network ``spec`` and ``prior``.

    One ``pm.Minibatch`` slices images and labels together so that pairs stay
    aligned; ``total_size`` scales the minibatch log-likelihood up to the whole
    training set, so the objective is the full-data ELBO.

    Parameters
    ----------
    images : ndarray
        Training images, shape (n, 28, 28) or (n, 784), scaled to [0, 1).
    labels : ndarray
        Integer class labels, shape (n,).
    spec
        Architecture spec (see :mod:`bnn.model.networks`).
    prior : PriorFamily
        Where every layer gets its weights.
    batch_size : int
        Minibatch size.
    """
    images = np.asarray(images, dtype=pytensor.config.floatX).reshape(len(images), -1)
    labels = np.asarray(labels).astype(label_dtype())
    with pm.Model() as model:
        image_batch, label_batch = pm.Minibatch(images, labels, batch_size=batch_size)
        logits = build_network(image_batch, spec, prior)
        label_variable(logits, observed=label_batch, total_size=len(labels))
    return model


def predictive_model(images: np.ndarray, spec, prior: PriorFamily) -> pm.Model:
    """The same network on fixed ``images`` with unobserved labels.

    This is the model ``pm.sample_posterior_predictive`` needs: the reference
    our NumPy posterior predictive is tested and benchmarked against.
    """
    images = np.asarray(images, dtype=pytensor.config.floatX).reshape(len(images), -1)
    with pm.Model() as model:
        label_variable(build_network(pt.as_tensor_variable(images), spec, prior))
    return model


def label_variable(logits, **kwargs):
    """The label given the network's ``logits``; ``kwargs`` go to ``pm.CustomDist``."""
    return pm.CustomDist(
        "label",
        logits,
        dist=categorical_logit_dist,
        logp=categorical_logit_logp,
        signature="(k)->()",
        **kwargs,
    )
