"""The benchmark: the roofline's arithmetic, and the whole bench in its tiny mode."""

import json
import math

import pytest
from benchmarks import bench, roofline

from bnn.model.specs import DenseSpec


def test_a_step_is_three_forward_passes():
    assert roofline.advi_step_flops(DenseSpec(), 500) == 3 * DenseSpec().forward_flops(500)


def test_gemm_peak_and_roofline_are_positive_rates():
    peak = roofline.gemm_peak("float32", size=256, repeats=2)
    assert math.isfinite(peak) and peak > 1e8
    assert roofline.roofline_it_per_s(DenseSpec(), 500, peak) == pytest.approx(
        peak / roofline.advi_step_flops(DenseSpec(), 500)
    )


def test_step_clock_rate_ignores_warmup():
    clock = bench.StepClock()
    clock.times = [0.0, 10.0, 11.0, 12.0, 13.0]  # a slow first step, then 1 s each
    assert clock.rate_after(2) == pytest.approx(3 / 3)


def test_tiny_bench_writes_every_key_for_both_networks(tmp_path):
    results = bench.main(["--tiny", "--out", str(tmp_path)])
    assert results == 0
    written = json.loads((tmp_path / "bench.json").read_text())
    assert set(written) == {"dense", "conv"}
    for network, values in written.items():
        assert set(bench.KEYS) <= set(values), network
        numbers = [values[key] for key in bench.KEYS if key != "dtype"]
        assert all(math.isfinite(x) and x > 0 for x in numbers), (network, values)
        assert values["dtype"] == "float32"
        assert values["baseline_dtype"] == "float64"
        assert math.isfinite(values["lrt_it_per_s"]) and values["lrt_it_per_s"] > 0
        assert values["speedup_vs_pymc_step"] == pytest.approx(
            values["it_per_s"] / values["pymc_step_it_per_s"]
        )
        assert values["numpyro_dtype"] == "float32"
        assert set(values["numpyro_versions"]) == {"numpyro", "jax"}
        assert values["speedup_vs_numpyro"] == pytest.approx(
            values["it_per_s"] / values["numpyro_it_per_s"]
        )
        assert values["jax_device"] == "cpu"  # the CI machine has no GPU
        assert values["speedup_vs_jax"] == pytest.approx(
            values["it_per_s"] / values["jax_it_per_s"]
        )
        assert values["speedup_vs_baseline"] == pytest.approx(
            values["it_per_s"] / values["baseline_it_per_s"]
        )
    fit_table, ppc_table, note = (tmp_path / "bench.md").read_text().split("\n\n")
    for table in (fit_table, ppc_table):
        assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == [
            "dense",
            "conv",
        ]
    assert note.startswith("No GPU row: JAX ran on cpu here")
