"""Prior families: the callables a layer asks for its weights.

A prior family is called as ``prior(name, shape)`` inside a ``pm.Model`` and
returns the PyMC variable to use as that weight. This is the bridge of the 2016
experiment (Lasagne's ``W=init`` slot filled with a PyMC distribution): layers
never know which prior they get, so a new family is one class here plus one
file in ``conf/prior/``.

A family may add free variables of its own (a hyperprior scale, a non-centred
``raw`` variable). :func:`bnn.model.weights.network_weights` turns draws of those free variables
back into the network's weights, so the NumPy forward pass needs no knowledge
of the prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pymc as pm
from pytensor.tensor import TensorVariable

from bnn.model.weights import RAW_SUFFIX, SCALE_SUFFIX


class PriorFamily(Protocol):
    """``init(name, shape) -> PyMC variable``: what a layer calls for each weight."""

    def __call__(self, name: str, shape: tuple[int, ...]) -> TensorVariable: ...


@dataclass(frozen=True)
class FixedNormal:
    r"""Independent Normal priors of one fixed scale on every weight and bias.

    .. math:: w_i \sim \mathcal{N}(0, \sigma^2)

    Parameters
    ----------
    sigma : float
        Prior standard deviation. The 2016 experiment used 0.1.
    """

    sigma: float

    def __call__(self, name: str, shape: tuple[int, ...]) -> TensorVariable:
        return pm.Normal(name, mu=0.0, sigma=self.sigma, shape=shape)


@dataclass(frozen=True)
class HierarchicalNormal:
    r"""Normal priors whose scale is itself uncertain: one scale per weight array.

    Every call (every ``W`` and every ``b`` of every layer) gets its own scale
    ``{name}_scale`` with a half-normal hyperprior:

    .. math::

        \tau &\sim \mathrm{HalfNormal}(s), \\
        w_i \mid \tau &\sim \mathcal{N}(0, \tau^2).

    Non-centred, the same prior is written through standard-normal ``{name}_raw``
    variables, which decouples the weights from their scale in the posterior
    (the funnel that a mean-field Gaussian fits badly):

    .. math:: z_i \sim \mathcal{N}(0, 1), \qquad w_i = \tau z_i .

    The weight is then a ``pm.Deterministic`` named ``{name}``, so the network
    and its NumPy twin see the same names either way.

    Parameters
    ----------
    scale_sigma : float
        Scale :math:`s` of the half-normal hyperprior on each :math:`\tau`.
        The default is 1.0.
    noncentred : bool
        Use the non-centred parametrisation. The default is False.
    """

    scale_sigma: float = 1.0
    noncentred: bool = False

    def __call__(self, name: str, shape: tuple[int, ...]) -> TensorVariable:
        scale = pm.HalfNormal(f"{name}{SCALE_SUFFIX}", sigma=self.scale_sigma)
        if not self.noncentred:
            return pm.Normal(name, mu=0.0, sigma=scale, shape=shape)
        raw = pm.Normal(f"{name}{RAW_SUFFIX}", mu=0.0, sigma=1.0, shape=shape)
        return pm.Deterministic(name, raw * scale)


PRIOR_FAMILIES = {"fixed": FixedNormal, "hier": HierarchicalNormal}


def prior_from_dict(values: dict) -> FixedNormal | HierarchicalNormal:
    """Rebuild the prior family from its saved settings (``posterior.json``'s ``prior``)."""
    values = dict(values)
    family = PRIOR_FAMILIES[values.pop("family")]
    known = {name for name in family.__dataclass_fields__}
    return family(**{key: value for key, value in values.items() if key in known})
