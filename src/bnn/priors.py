"""Prior families: the callables a layer asks for its weights.

A prior family is called as ``prior(name, shape)`` inside a ``pm.Model`` and
returns the PyMC variable to use as that weight. This is the bridge of the 2016
experiment (Lasagne's ``W=init`` slot filled with a PyMC distribution): layers
never know which prior they get, so a new family is one class here plus one
file in ``conf/prior/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pymc as pm
from pytensor.tensor import TensorVariable


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


PRIOR_FAMILIES = {"fixed": FixedNormal}
