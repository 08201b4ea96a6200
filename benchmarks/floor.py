"""The machine's floor for one training iteration: FLOPs over the matmul rate, bytes over
the memory bandwidth, both measured on the device the benchmark runs on.

A training iteration of the network (conv3x3 in->C, (M-1) x conv3x3 C->C, conv1x1 C->C,
each followed by ReLU/BatchNorm) costs, per pixel,

- convolution FLOPs: forward ``2 * Cin * Cout * k^2`` per layer, the same again for the
  weight gradient, and the same again for the input gradient of every layer but the first
  (the image needs no gradient);
- memory traffic outside the convolutions: the ReLU/BatchNorm passes (forward: two reads and
  a write; backward: two reductions reading input and gradient, then two reads and a write),
  the argmax, and the loss (softmax read/write, plus for ST one read of the response and a
  read-modify-write of the gradient per spatial axis), each over the ``C x H x W`` map.

The floor is ``FLOPs / matmul rate + bytes / bandwidth``: what an implementation that runs
its convolutions at the machine's matmul rate and touches every activation the minimum
number of times would need. It is an estimate (real convolutions reach a fraction of the
peak matmul rate, and caches can beat the streaming bandwidth on small maps).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from common import synchronize

__all__ = [
    "MachineRates", "estimate_floor", "iteration_cost", "measure_bandwidth", "measure_matmul_rate"
]

#: Full passes (reads + writes) over the C x H x W map outside the convolutions.
PASSES_PER_BLOCK = 3 + 7  # ReLU+BN forward, ReLU+BN backward
PASSES_ARGMAX = 1
PASSES_CE = 2  # softmax read + gradient write (one-hot update is per pixel, not per channel)
PASSES_CONTINUITY_PER_AXIS = 3  # read response, read-modify-write gradient


def iteration_cost(
    height: int, width: int, in_channels: int, n_channels: int, n_conv: int, method: str,
    bytes_per_element: int,
) -> tuple[float, float]:
    """FLOPs of the convolutions and bytes of the other passes of one training iteration.

    Returns
    -------
    flops, nbytes : float
    """
    pixels = height * width
    layers = [(in_channels, n_channels, 3)]
    layers += [(n_channels, n_channels, 3)] * (n_conv - 1)
    layers += [(n_channels, n_channels, 1)]
    flops = 0.0
    for i, (cin, cout, k) in enumerate(layers):
        forward = 2.0 * pixels * cin * cout * k * k
        flops += forward * (2 if i == 0 else 3)
    passes = PASSES_PER_BLOCK * len(layers) + PASSES_ARGMAX + PASSES_CE
    if method == "st":
        passes += 2 * PASSES_CONTINUITY_PER_AXIS
    nbytes = float(passes) * pixels * n_channels * bytes_per_element
    return flops, nbytes


#: Timed repetitions of each probe; the best is kept. On a shared machine five were too few:
#: a busy minute measured a floor 8 % too high (271 against 250 ms), flattering the ratio.
REPEATS = 20


def _best_seconds(fn, device: torch.device, repeats: int = REPEATS) -> float:
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure_matmul_rate(device: torch.device, dtype: torch.dtype, size: int = 2048) -> float:
    """Best FLOP/s of a square matrix product of `size` on `device` in `dtype`."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return 2.0 * size**3 / _best_seconds(lambda: a @ b, device)


def measure_bandwidth(device: torch.device, megabytes: int = 256) -> float:
    """Best bytes/s of copying a `megabytes` buffer (a read and a write per byte)."""
    src = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2.0 * src.numel() / _best_seconds(lambda: dst.copy_(src), device)


class MachineRates:
    """The machine's matmul rate and memory bandwidth, the best of every probe of a run.

    A shared machine has slow minutes: a probe that falls in one measures a rate too low
    and a floor too high, which flatters the ratio to it (a whole probe of 20 repeats once
    measured half the usual matmul rate). The rates are a property of the machine, so a
    benchmark probes at several moments of its run (`probe`) and every floor uses the best
    rates seen; the spread of the probes is kept so a noisy run can say so.

    Parameters
    ----------
    device : torch.device
    dtype : torch.dtype
        Of the matrix products probed (bfloat16 or float32).
    """

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self.dtype = dtype
        self.matmul: list[float] = []
        self.bandwidth: list[float] = []

    def probe(self) -> None:
        """Measure both rates now (each the best of `REPEATS` timings) and keep them."""
        self.matmul.append(measure_matmul_rate(self.device, self.dtype))
        self.bandwidth.append(measure_bandwidth(self.device))

    def spread(self) -> float:
        """Largest ratio best / worst over the probes of either rate (1.0: steady)."""
        if not self.matmul:
            return float("nan")
        return max(max(v) / min(v) for v in (self.matmul, self.bandwidth))

    def floor(
        self, shape: tuple[int, int, int], n_channels: int, n_conv: int, method: str
    ) -> dict[str, Any]:
        """Floor of one iteration at the best rates probed so far (probing once if never).

        Parameters
        ----------
        shape : (H, W, channels)
            Image shape.
        n_channels, n_conv : int
            Network size.
        method : {"sp", "st"}

        Returns
        -------
        dict
            ``gflop``, ``gbyte``, the best ``matmul_tflops`` and ``bandwidth_gbs`` with
            their ranges over the probes, ``probes``, and ``floor_ms`` with its
            ``compute_ms`` and ``memory_ms`` parts.
        """
        if not self.matmul:
            self.probe()
        height, width, in_channels = shape
        element = torch.finfo(self.dtype).bits // 8
        flops, nbytes = iteration_cost(
            height, width, in_channels, n_channels, n_conv, method, element
        )
        rate, bandwidth = max(self.matmul), max(self.bandwidth)
        compute_ms, memory_ms = 1e3 * flops / rate, 1e3 * nbytes / bandwidth
        return {
            "n_channels": n_channels,
            "dtype": str(self.dtype).removeprefix("torch."),
            "gflop": flops / 1e9,
            "gbyte": nbytes / 1e9,
            "matmul_tflops": rate / 1e12,
            "bandwidth_gbs": bandwidth / 1e9,
            "matmul_tflops_range": [min(self.matmul) / 1e12, rate / 1e12],
            "bandwidth_gbs_range": [min(self.bandwidth) / 1e9, bandwidth / 1e9],
            "probes": len(self.matmul),
            "compute_ms": compute_ms,
            "memory_ms": memory_ms,
            "floor_ms": compute_ms + memory_ms,
        }


def estimate_floor(
    shape: tuple[int, int, int], n_channels: int, n_conv: int, method: str,
    device: torch.device, dtype: torch.dtype,
) -> dict[str, Any]:
    """Floor of one iteration on `device` with activations in `dtype`, from one probe.

    The parameters and the result are those of `MachineRates` and `MachineRates.floor`.
    """
    return MachineRates(device, dtype).floor(shape, n_channels, n_conv, method)
