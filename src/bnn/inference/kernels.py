r"""The elementwise half of a mean-field ADVI step, as vectorised CPU loops.

One step of ADVI on the dense net touches each of its 1.28 M variational
parameter pairs :math:`(\mu, \rho)` a handful of times: draw the noise, form the
weights, turn the gradient in the weights into gradients in the parameters, and
update them with Adam. PyTensor compiles each of these as its own scalar loop and
costs about as much time as the matrix products (``../shared/FACTS.md``). Here:

- the noise is Box–Muller on the generator's uniforms, in float32 one vectorised loop
  (:func:`standard_normal`);
- the weights :math:`w = \mu + \mathrm{softplus}(\rho)\,\varepsilon`, the sigmoid the
  gradient needs and :math:`\sum \log \sigma` for the loss are one loop on
  vectorisable float32 polynomials (:func:`draw_weights`, :mod:`~bnn.inference.float32_math`);
- the gradient of the negative ELBO and the Adam update are one loop
  (:func:`adam_step`), the same arithmetic as ``pm.adam``.

The loops are Numba, single-threaded on purpose: OpenBLAS's worker threads keep
spinning for a while after each matrix product, and a parallel loop that starts
then waits for them (measured: 0.36 ms alone, 6 ms right after a GEMM).
``error_model="numpy"`` lets LLVM vectorise the divisions and square roots
(measured: 6.0 ms scalar, 1.5 ms vectorised, for the Adam loop on 1.28 M pairs).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

from bnn.inference.float32_math import cos_sin_turns, log_normal, softplus_sigmoid_log

# Vectorisable loops: no Python division checks, reassociation allowed. Cached on disk.
_VECTOR_OPTIONS = {"fastmath": True, "error_model": "numpy"}
_vector_loop = numba.njit(cache=True, **_VECTOR_OPTIONS)
# Values per block of the weights pass's sums: few enough that a block's float32 sum
# keeps float32 accuracy, enough to hide the call (the fastest size in step_phases).
SUM_BLOCK = 1024


def standard_normal(rng: np.random.Generator, out: np.ndarray, scratch: np.ndarray) -> None:
    r"""Fill ``out`` with independent N(0, 1) draws in its dtype, by Box–Muller.

    :math:`u_1, u_2 \sim U(0, 1]` give :math:`r \cos 2\pi u_2` and :math:`r \sin 2\pi u_2`
    with :math:`r = \sqrt{-2 \log u_1}`: two exact normals per pair of uniforms.
    In float32 the smallest :math:`u_1` is :math:`2^{-24}`, so :math:`|z|` stops at
    5.77 (a draw beyond that has probability 8e-9 under N(0, 1)).

    The uniforms are the generator's, in ``out``'s dtype. In float32 the transform is one
    vectorised loop (:mod:`bnn.inference.float32_math`); in float64, NumPy's ufuncs.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness: the same state gives the same draws.
    out : ndarray
        1-D, float32 or float64; overwritten.
    scratch : ndarray
        1-D, same dtype, at least ``out.size + 1`` long; overwritten.

    """
    pairs = (out.size + 1) // 2
    uniforms = scratch[: 2 * pairs]
    rng.random(out=uniforms, dtype=uniforms.dtype)
    if out.dtype == np.float32:
        _box_muller_float32(uniforms[:pairs], uniforms[pairs:], out)
        return
    radius, angle = uniforms[:pairs], uniforms[pairs:]
    np.subtract(1, radius, out=radius)  # [0, 1) -> (0, 1]: log stays finite
    np.log(radius, out=radius)
    radius *= -2
    np.sqrt(radius, out=radius)
    angle *= 2 * np.pi
    half = out.size // 2
    np.cos(angle[:half], out=out[:half])
    out[:half] *= radius[:half]
    np.sin(angle, out=angle)
    angle *= radius
    out[half:] = angle[: out.size - half]


@_vector_loop
def _box_muller_float32(radius_uniforms, angle_uniforms, out):
    half = out.size // 2
    for i in range(half):
        radius, cos_angle, sin_angle = _polar_pair(radius_uniforms[i], angle_uniforms[i])
        out[i] = radius * cos_angle
        out[half + i] = radius * sin_angle
    if out.size % 2:  # the last pair gives its sine only, as the float64 layout does
        radius, _, sin_angle = _polar_pair(radius_uniforms[half], angle_uniforms[half])
        out[out.size - 1] = radius * sin_angle


@numba.njit(inline="always", **_VECTOR_OPTIONS)
def _polar_pair(radius_uniform, angle_uniform):
    # 1 - u: [0, 1) -> (0, 1], so the log stays finite.
    log_u = log_normal(np.float32(1) - radius_uniform)
    cos_angle, sin_angle = cos_sin_turns(angle_uniform)
    return np.sqrt(np.float32(-2) * log_u), cos_angle, sin_angle


def _softplus_sigmoid_log(rho):
    """``softplus(rho)``, ``sigmoid(rho)``, ``log softplus(rho)``: Numba's overloads below."""
    raise NotImplementedError("called from Numba loops only")


@overload(_softplus_sigmoid_log, inline="always", jit_options=_VECTOR_OPTIONS)
def _softplus_sigmoid_log_of(rho):
    if rho == types.float32:
        return lambda rho: softplus_sigmoid_log(rho)  # vectorised polynomials
    if rho == types.float64:
        return _softplus_sigmoid_log_float64
    return None


def _softplus_sigmoid_log_float64(rho):
    # The C library's exp, log1p and log: scalar, but float64 fits ask for precision.
    e = math.exp(-abs(rho))
    sigma = max(rho, 0.0) + math.log1p(e)
    return sigma, (1.0 if rho >= 0 else e) / (1.0 + e), math.log(sigma)


def draw_weights(
    mu: np.ndarray,
    rho: np.ndarray,
    noise: np.ndarray,
    weights: np.ndarray,
    sigma: np.ndarray,
    slope: np.ndarray,
) -> tuple[float, float]:
    r"""``weights = mu + softplus(rho) * noise``, in one pass; returns the sums log q needs.

    Keeps ``sigma = softplus(rho)`` and ``slope`` :math:`= \sigma'(\rho) =
    \mathrm{sigmoid}(\rho)`, which the gradient step needs, and returns
    :math:`(\sum \log \sigma, \sum \varepsilon^2)` as Python floats. All arrays are 1-D,
    one dtype; ``weights``, ``sigma`` and ``slope`` are overwritten. In float32 the
    transcendental functions are :mod:`bnn.inference.float32_math`'s, so the whole pass is
    one vectorised loop.
    """
    return _draw_weights(mu, rho, noise, weights, sigma, slope)


@_vector_loop
def _draw_weights(mu, rho, noise, weights, sigma, slope):
    # Sums in blocks: a block's vectorised sum in the arrays' dtype, the total in float64
    # (a float64 accumulator in the loop itself would keep a float32 loop scalar).
    log_sigma_sum, noise_sum = 0.0, 0.0
    for start in range(0, mu.size, SUM_BLOCK):
        block = slice(start, min(start + SUM_BLOCK, mu.size))
        block_log_sigma, block_noise = _draw_block(
            mu[block], rho[block], noise[block], weights[block], sigma[block], slope[block]
        )
        log_sigma_sum += block_log_sigma
        noise_sum += block_noise
    return log_sigma_sum, noise_sum


@_vector_loop
def _draw_block(mu, rho, noise, weights, sigma, slope):
    # Indices from 0 over views: a loop over range(start, stop) is not vectorised.
    log_sigma_sum, noise_sum = mu.dtype.type(0), mu.dtype.type(0)
    for i in range(mu.size):
        s, sigma_slope, log_sigma = _softplus_sigmoid_log(rho[i])
        z = noise[i]
        sigma[i], slope[i] = s, sigma_slope
        weights[i] = mu[i] + s * z
        log_sigma_sum += log_sigma
        noise_sum += z * z
    return log_sigma_sum, noise_sum


@_vector_loop
def adam_step(
    mu,
    rho,
    adam_mu,
    adam_rho,
    noise,
    sigma,
    slope,
    logp_gradient,
    scale,
    step_size,
    beta1,
    beta2,
    epsilon,
    update_rho,
):
    r"""One Adam step on the negative ELBO of a mean-field Gaussian, in place.

    With :math:`w = \mu + \sigma \varepsilon`, :math:`\sigma = \mathrm{softplus}(\rho)`
    and PyMC's loss :math:`(\log q(w) - \log p(w)) / t` (``scale`` is :math:`1/t`),
    where :math:`\log q(w) = \sum -\tfrac12 \varepsilon^2 - \log \sigma + c`:

    .. math::

        \partial_\mu = -\frac{g}{t}, \qquad
        \partial_\rho = -\frac{1}{t}\left(g\,\varepsilon + \frac{1}{\sigma}\right)
                        \mathrm{sigmoid}(\rho),
        \qquad g = \nabla_w \log p(w).

    Adam as ``pm.adam`` (Kingma & Ba): :math:`m \leftarrow \beta_1 m + (1-\beta_1)\partial`,
    :math:`v \leftarrow \beta_2 v + (1-\beta_2)\partial^2`, and the parameter moves by
    ``step_size`` :math:`\cdot\, m / (\sqrt{v} + \epsilon)`, where ``step_size`` already
    holds the bias correction :math:`\eta \sqrt{1-\beta_2^k} / (1-\beta_1^k)`.

    ``adam_mu`` and ``adam_rho`` are (2, n): first and second moments. With
    ``update_rho`` false, ``rho`` and its moments stay put (a point estimate).
    """
    one = mu.dtype.type(1)
    keep1, keep2 = one - beta1, one - beta2
    m_mu, v_mu = adam_mu[0], adam_mu[1]
    m_rho, v_rho = adam_rho[0], adam_rho[1]
    for i in range(mu.size):
        g = logp_gradient[i] * scale
        d = -g
        m = beta1 * m_mu[i] + keep1 * d
        v = beta2 * v_mu[i] + keep2 * d * d
        m_mu[i], v_mu[i] = m, v
        mu[i] -= step_size * m / (np.sqrt(v) + epsilon)
        if update_rho:
            d = -(g * noise[i] + scale / sigma[i]) * slope[i]
            m = beta1 * m_rho[i] + keep1 * d
            v = beta2 * v_rho[i] + keep2 * d * d
            m_rho[i], v_rho[i] = m, v
            rho[i] -= step_size * m / (np.sqrt(v) + epsilon)
