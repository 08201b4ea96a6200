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

__all__ = ["iteration_cost", "measure_matmul_rate", "measure_bandwidth", "estimate_floor"]

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


def estimate_floor(
    shape: tuple[int, int, int], n_channels: int, n_conv: int, method: str,
    device: torch.device, dtype: torch.dtype,
) -> dict[str, Any]:
    """Floor of one iteration on `device` with activations in `dtype`.

    Parameters
    ----------
    shape : (H, W, channels)
        Image shape.
    n_channels, n_conv : int
        Network size.
    method : {"sp", "st"}
    device : torch.device
    dtype : torch.dtype
        Arithmetic of the convolutions and the activations (bfloat16 or float32).

    Returns
    -------
    dict
        ``gflop``, ``gbyte``, measured ``matmul_tflops`` and ``bandwidth_gbs``, and
        ``floor_ms`` with its ``compute_ms`` and ``memory_ms`` parts.
    """
    height, width, in_channels = shape
    element = torch.finfo(dtype).bits // 8
    flops, nbytes = iteration_cost(
        height, width, in_channels, n_channels, n_conv, method, element
    )
    rate = measure_matmul_rate(device, dtype)
    bandwidth = measure_bandwidth(device)
    compute_ms, memory_ms = 1e3 * flops / rate, 1e3 * nbytes / bandwidth
    return {
        "n_channels": n_channels,
        "dtype": str(dtype).removeprefix("torch."),
        "gflop": flops / 1e9,
        "gbyte": nbytes / 1e9,
        "matmul_tflops": rate / 1e12,
        "bandwidth_gbs": bandwidth / 1e9,
        "compute_ms": compute_ms,
        "memory_ms": memory_ms,
        "floor_ms": compute_ms + memory_ms,
    }
