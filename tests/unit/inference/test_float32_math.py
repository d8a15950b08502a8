"""The vectorisable float32 functions of the fused loops, against float64 NumPy on their domains.

Each is a different computation from NumPy's, so the checks are at float32
tolerance: a few units in the last place (float32's epsilon is 1.2e-7).
"""

import numba
import numpy as np

from bnn.inference.float32_math import (
    cos_sin_turns,
    exp_nonpositive,
    log1p_unit,
    log_normal,
    softplus_sigmoid_log,
)

F32_ULP = float(np.finfo(np.float32).eps)


@numba.njit
def _map_exp(x, out):
    for i in range(x.size):
        out[i] = exp_nonpositive(x[i])


@numba.njit
def _map_log1p(x, out):
    for i in range(x.size):
        out[i] = log1p_unit(x[i])


@numba.njit
def _map_log(x, out):
    for i in range(x.size):
        out[i] = log_normal(x[i])


@numba.njit
def _map_cos_sin(u, cos_out, sin_out):
    for i in range(u.size):
        cos_out[i], sin_out[i] = cos_sin_turns(u[i])


@numba.njit
def _map_softplus(rho, sigma, slope, log_sigma):
    for i in range(rho.size):
        sigma[i], slope[i], log_sigma[i] = softplus_sigmoid_log(rho[i])


def apply(kernel, values, outputs=1):
    out = [np.empty_like(values) for _ in range(outputs)]
    kernel(values, *out)
    assert all(array.dtype == np.float32 for array in out)
    return [array.astype(np.float64) for array in out]


def assert_relative(actual, expected, ulps):
    error = np.abs(actual - expected) / np.abs(expected)
    assert error.max() <= ulps * F32_ULP, f"worst relative error {error.max():.3g}"


def test_exp_of_nonpositive_values_including_subnormal_results():
    x = -np.concatenate([np.linspace(0, 87.3, 400_001), np.logspace(-9, 0, 10_001)])
    x = x.astype(np.float32)
    (value,) = apply(_map_exp, x)
    assert_relative(value, np.exp(x.astype(np.float64)), ulps=3)
    assert value[0] == 1.0
    # Below float32's smallest normal (x < -87.34) the result is subnormal, then zero:
    # it must stay tiny and non-negative, not wrap round into a large number.
    deep = np.linspace(-87.4, -200, 1001).astype(np.float32)
    (tiny,) = apply(_map_exp, deep)
    assert (tiny >= 0).all() and (tiny <= 1.2e-38).all() and tiny[-1] == 0
    np.testing.assert_allclose(tiny, np.exp(deep.astype(np.float64)), rtol=0, atol=2e-45)


def test_log1p_on_the_unit_interval_keeps_tiny_arguments_exact():
    # Normal floats only: a subnormal x has fewer bits than float32's precision.
    x = np.concatenate([np.linspace(0, 1, 400_001)[1:], np.logspace(-37, 0, 10_001)])
    x = x.astype(np.float32)
    (value,) = apply(_map_log1p, x)
    assert_relative(value, np.log1p(x.astype(np.float64)), ulps=3)


def test_log_of_normal_floats_over_the_whole_exponent_range():
    x = np.logspace(-37.9, 38.5, 400_001).astype(np.float32)
    x = np.concatenate([x, np.linspace(0.5, 2.0, 100_001, dtype=np.float32)])
    (value,) = apply(_map_log, x)
    exact = np.log(x.astype(np.float64))
    # Relative where the log is away from 0; absolute near x = 1 (log x -> 0).
    np.testing.assert_allclose(value, exact, rtol=3 * F32_ULP, atol=3 * F32_ULP)


def test_cos_and_sin_of_whole_turns():
    u = np.linspace(0, 1, 1_000_001).astype(np.float32)
    cos_value, sin_value = apply(_map_cos_sin, u, outputs=2)
    angle = 2 * np.pi * u.astype(np.float64)
    np.testing.assert_allclose(cos_value, np.cos(angle), rtol=0, atol=3 * F32_ULP)
    np.testing.assert_allclose(sin_value, np.sin(angle), rtol=0, atol=3 * F32_ULP)
    np.testing.assert_allclose(cos_value**2 + sin_value**2, 1, atol=4 * F32_ULP)


def test_softplus_sigmoid_and_log_softplus_over_every_regime():
    rho = np.concatenate(
        [np.linspace(-120, 120, 400_001), -np.logspace(-8, 2, 10_001), np.logspace(-8, 2, 10_001)]
    ).astype(np.float32)
    sigma, slope, log_sigma = apply(_map_softplus, rho, outputs=3)
    exact = rho.astype(np.float64)
    exact_sigma = np.logaddexp(0, exact)
    exact_slope = 1 / (1 + np.exp(-exact))
    normal = exact_sigma > np.finfo(np.float32).tiny
    assert_relative(sigma[normal], exact_sigma[normal], ulps=4)
    shown = exact_slope > np.finfo(np.float32).tiny
    assert_relative(slope[shown], exact_slope[shown], ulps=4)
    # log softplus: rho itself where softplus is subnormal, so never -inf.
    exact_log = np.where(normal, np.log(np.where(normal, exact_sigma, 1)), exact)
    np.testing.assert_allclose(log_sigma, exact_log, rtol=4 * F32_ULP, atol=4 * F32_ULP)
    assert np.isfinite(log_sigma).all()
