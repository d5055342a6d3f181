"""The machine-speed probe and the steady-state step time (what the report uses to tell
throughputs measured at different moments of a drifting machine apart)."""

import pytest
import torch

from bench.measure import machine_speed, steady_step_seconds
from bench.record import probe_spread


def test_probe_reports_positive_rates():
    probe = machine_speed(torch.device("cpu"))
    assert set(probe) == {"gemm_gflops", "memory_gbps"}
    assert all(v > 0 for v in probe.values())


def test_probe_spread_is_the_largest_relative_gap():
    fast = {"gemm_gflops": 100.0, "memory_gbps": 10.0}
    slow_gemm = {"gemm_gflops": 80.0, "memory_gbps": 10.0}
    slow_mem = {"gemm_gflops": 100.0, "memory_gbps": 9.5}
    assert probe_spread([fast, fast]) == 0.0
    assert probe_spread([fast, slow_gemm]) == pytest.approx(0.2)
    assert probe_spread([fast, slow_mem, slow_gemm]) == pytest.approx(0.2)
    assert probe_spread([fast, None, {}]) == 0.0  # records without a probe do not count


def test_steady_step_leaves_out_the_first_steps():
    # a slow first step (compilation) must not move the median
    assert steady_step_seconds([5.0, 1.0, 1.0, 1.0, 2.0]) == 1.0
    assert steady_step_seconds([5.0] + [1.0] * 10 + [3.0] * 9) == 2.0
    assert steady_step_seconds([0.5]) == 0.5
    assert steady_step_seconds([]) is None
