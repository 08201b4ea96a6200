"""benchmarks/floor.py: the floor takes the best rates of every probe of a run."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def floor(load_benchmark):
    return load_benchmark("floor")


def test_a_slow_probe_does_not_raise_the_floor(floor, monkeypatch):
    matmul = iter([4e11, 4.2e11, 2e11])  # the last probe fell in a slow minute
    bandwidth = iter([40e9, 45e9, 20e9])
    monkeypatch.setattr(floor, "measure_matmul_rate", lambda device, dtype: next(matmul))
    monkeypatch.setattr(floor, "measure_bandwidth", lambda device: next(bandwidth))
    rates = floor.MachineRates(torch.device("cpu"), torch.bfloat16)
    for _ in range(3):
        rates.probe()
    result = rates.floor((321, 481, 3), 100, 2, "st")
    flops, nbytes = floor.iteration_cost(321, 481, 3, 100, 2, "st", 2)
    assert result["floor_ms"] == pytest.approx(1e3 * (flops / 4.2e11 + nbytes / 45e9))
    assert result["matmul_tflops_range"] == pytest.approx([0.2, 0.42])
    assert result["bandwidth_gbs_range"] == pytest.approx([20.0, 45.0])
    assert result["probes"] == 3
    assert rates.spread() == pytest.approx(2.25)


def test_a_floor_without_probes_probes_once(floor, monkeypatch):
    calls = []
    monkeypatch.setattr(floor, "measure_matmul_rate",
                        lambda device, dtype: calls.append("mm") or 1e11)
    monkeypatch.setattr(floor, "measure_bandwidth", lambda device: 1e10)
    result = floor.estimate_floor((10, 10, 1), 8, 2, "sp", torch.device("cpu"), torch.float32)
    assert calls == ["mm"] and result["probes"] == 1
    assert result["floor_ms"] == pytest.approx(result["compute_ms"] + result["memory_ms"])
