"""Time one training iteration: the published code against the project's default path.

For each method (SP, ST) the same image is trained on by

- the published baseline (`published_baseline.run_published`: float32, NCHW, NumPy
  superpixel loop), and
- ``napari_kanezaki.Segmenter(config, device=..., seed=0)`` iterating ``.run(image)`` with
  the paper presets (default precision, i.e. bfloat16 autocast where the hardware has it),
- optionally (``--fp32``) the project path in float32, to separate the gain of the code
  from that of the arithmetic.

Every iteration is timed with a wall clock (synchronising CUDA/MPS first); the first
``--warmup`` iterations (which include start-up work such as the project's superpixels)
are dropped and the median of the rest is reported. The stop rule is disabled so every run
does ``--iters`` iterations.

Run from the project root, e.g.::

    python benchmarks/bench_speed.py --iters 20 --json speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_kanezaki import Segmenter, SPConfig, STConfig
from napari_kanezaki.core.config import load_preset
from napari_kanezaki.core.cuda_graph import WARMUP_STEPS
from napari_kanezaki.core.devices import resolve_device, resolve_precision

from common import (
    add_run_arguments,
    benchmark_image,
    format_machine_info,
    machine_info,
    synchronize,
)
from floor import MachineRates
from published_baseline import run_published

METHODS = ("sp", "st")


def time_project(
    image: np.ndarray, method: str, n_iter: int, device: torch.device, precision: str, seed: int,
    preset: str = "paper",
) -> list[float]:
    """Wall-clock seconds of each training iteration of the project's `Segmenter`.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 RGB image.
    method : {"sp", "st"}
        Method; the configuration is `preset` with ``max_iter=n_iter`` and the stop rules
        disabled (``min_labels=1``, ``plateau_iter=0``).
    n_iter : int
        Number of iterations.
    device : torch.device
        Device of the model.
    precision : {"auto", "fp32", "bf16"}
        Precision of the `Segmenter`.
    seed : int
        Seed of the initial weights.
    preset : str
        Shipped preset whose network is timed (``"interactive"``: the CLI's and the
        widgets' default, 48 channels; ``"paper"``: 100).

    Returns
    -------
    list of float
        Seconds per iteration; the first includes the set-up done by ``run`` (input
        conversion, superpixels, model creation).
    """
    config = load_preset(preset, method).replace(max_iter=n_iter, min_labels=1, plateau_iter=0)
    segmenter = Segmenter(config, device=device, seed=seed, precision=precision)
    seconds = []
    synchronize(device)
    start = time.perf_counter()
    for _ in segmenter.run(image):
        synchronize(device)
        now = time.perf_counter()
        seconds.append(now - start)
        start = now
    return seconds


def count_host_syncs(image: np.ndarray, method: str, device: torch.device, n_iter: int) -> int:
    """Implicit host synchronisations in `n_iter` CUDA training iterations (stop rule off).

    Uses ``torch.cuda.set_sync_debug_mode("warn")``, which warns at every operation that
    makes the host wait for the GPU (``.item()``, ``nonzero``, ``bincount``...), over the
    iterations after the graph's capture. The stop rule reads the label count every 10
    iterations on a GPU, so expect one per 10 iterations and nothing else.
    """
    import warnings

    config_class = SPConfig if method == "sp" else STConfig
    segmenter = Segmenter(config_class(max_iter=n_iter, min_labels=1), device=device, seed=0)
    states = segmenter.run(image)
    # Set-up (superpixels, model), the eager first updates and the CUDA graph's capture
    # (`core.cuda_graph`) may synchronise: count from the first replay on.
    for _ in range(WARMUP_STEPS + 1):
        next(states)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in states:
                pass
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def time_to_result(
    image: np.ndarray, method: str, device: torch.device, seed: int, plateau_iter: int
) -> dict[str, Any]:
    """Wall-clock time of a complete default run (set-up, training, prediction).

    The paper presets with ``max_iter=1000``, ``min_labels=3`` and the optional plateau
    stop after `plateau_iter` stable iterations.

    Returns
    -------
    dict
        ``seconds``, ``iterations`` and ``stop_reason`` of the run, and ``labels``.
    """
    config_class = SPConfig if method == "sp" else STConfig
    segmenter = Segmenter(config_class(plateau_iter=plateau_iter), device=device, seed=seed)
    synchronize(device)
    start = time.perf_counter()
    for state in segmenter.run(image):
        iterations, stop_reason = state.iteration, state.stop_reason
    labels = segmenter.predict(image)
    synchronize(device)
    return {
        "seconds": time.perf_counter() - start,
        "iterations": iterations,
        "stop_reason": stop_reason,
        "labels": labels,
    }


def median_ms(seconds: Sequence[float], warmup: int) -> float:
    """Median of the per-iteration times after the warm-up, in milliseconds.

    Parameters
    ----------
    seconds : sequence of float
        Per-iteration seconds.
    warmup : int
        Number of leading iterations to discard.

    Returns
    -------
    float
        Median in ms, or NaN when no iteration is left after the warm-up.
    """
    kept = list(seconds)[warmup:]
    return 1e3 * statistics.median(kept) if kept else float("nan")


def benchmark(
    image: np.ndarray,
    methods: Sequence[str],
    n_iter: int,
    warmup: int,
    device: torch.device,
    seed: int,
    fp32: bool,
    rates: MachineRates | None = None,
) -> list[dict[str, Any]]:
    """Time every variant of every method.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 RGB image.
    methods : sequence of {"sp", "st"}
        Methods to time.
    n_iter, warmup : int
        Iterations per run, and how many leading ones to discard.
    device : torch.device
        Device of every run.
    seed : int
        Seed of the initial weights.
    fp32 : bool
        Also time the project path with ``precision="fp32"``.
    rates : MachineRates, optional
        Probed again after each method's runs, so the floor's rates come from several
        moments of the benchmark.

    Returns
    -------
    list of dict
        Per method: median ms/iter of ``baseline``, ``default`` (the paper network on the
        default path), ``fp32`` (if asked) and ``interactive`` (the interactive preset's
        48-channel network on the default path), the speed-ups ``baseline / variant``, and
        the raw per-iteration seconds.
    """
    results = []
    for method in methods:
        runs = {
            "baseline": run_published(
                image, method, n_iter, seed, device=device, min_labels=0
            ).iter_seconds,
            "default": time_project(image, method, n_iter, device, "auto", seed),
        }
        if fp32:
            runs["fp32"] = time_project(image, method, n_iter, device, "fp32", seed)
        runs["interactive"] = time_project(image, method, n_iter, device, "auto", seed,
                                           "interactive")
        medians = {name: median_ms(seconds, warmup) for name, seconds in runs.items()}
        row: dict[str, Any] = {"method": method}
        for name, value in medians.items():
            row[f"{name}_ms"] = value
            if name != "baseline":
                row[f"{name}_speedup"] = medians["baseline"] / value
        row["seconds"] = runs
        results.append(row)
        if rates is not None:
            rates.probe()
    return results


def add_floor_and_time_to_result(
    results: list[dict[str, Any]],
    image: np.ndarray,
    device: torch.device,
    seed: int,
    plateau_iter: int,
    rates: MachineRates | None = None,
) -> None:
    """Add the machine's floor and (when `plateau_iter` > 0) a timed complete run to rows.

    Every floor uses the best rates of all the probes of `rates` (one more is made here),
    so a probe that fell in a slow minute of a shared machine cannot lower the ratio.
    """
    if rates is None:
        rates = MachineRates(device, resolve_precision("auto", device) or torch.float32)
    rates.probe()
    shape = (image.shape[0], image.shape[1], image.shape[2] if image.ndim == 3 else 1)
    for row in results:
        floor = rates.floor(shape, 100, 2, row["method"])
        row["floor"] = floor
        row["floor_ms"] = floor["floor_ms"]
        channels = load_preset("interactive", row["method"]).n_channels
        row["interactive_floor"] = rates.floor(shape, channels, 2, row["method"])
        row["baseline_1000_s"] = row["baseline_ms"]  # 1000 iterations, in seconds
        row["default_1000_s"] = row["default_ms"]
        if plateau_iter:
            run = time_to_result(image, row["method"], device, seed, plateau_iter)
            row["plateau"] = {k: v for k, v in run.items() if k != "labels"}


#: Best / worst rate over a run's probes above which the machine is called noisy.
NOISY_SPREAD = 1.15


def format_floor(results: Sequence[dict[str, Any]]) -> str:
    """Render the floor estimates and time-to-result as text."""
    lines = []
    if results:
        f = results[0]["floor"]
        (m_lo, m_hi), (b_lo, b_hi) = f["matmul_tflops_range"], f["bandwidth_gbs_range"]
        spread = max(m_hi / m_lo, b_hi / b_lo)
        lines.append(
            f"machine rates, best of {f['probes']} probes over the run: matmul {m_hi:.2f} "
            f"TFLOP/s (worst probe {m_lo:.2f}), bandwidth {b_hi:.1f} GB/s (worst {b_lo:.1f})"
        )
        if spread > NOISY_SPREAD:
            lines.append(
                f"    note: the probes differ by {spread:.2f}x: the machine was busy during "
                "the run, so the iteration times (and ratios) below may be inflated; rerun."
            )
    for row in results:
        f = row["floor"]
        lines.append(
            f"{row['method'].upper()}: floor {f['floor_ms']:.0f} ms/it ({f['gflop']:.1f} GFLOP "
            f"at {f['matmul_tflops']:.2f} TFLOP/s {f['dtype']} matmul = {f['compute_ms']:.0f} ms"
            f" + {f['gbyte']:.2f} GB at {f['bandwidth_gbs']:.1f} GB/s = {f['memory_ms']:.0f} "
            f"ms); default is {row['default_ms'] / f['floor_ms']:.2f}x the floor"
        )
        fi = row["interactive_floor"]
        lines.append(
            f"    interactive preset's network ({fi['n_channels']} channels): "
            f"{row['interactive_ms']:.0f} ms/it, floor {fi['floor_ms']:.0f} ms/it, "
            f"{row['interactive_ms'] / fi['floor_ms']:.2f}x the floor"
        )
        line = (
            f"    time to result, 1000 iterations (the papers' budget): baseline "
            f"{row['baseline_1000_s']:.0f} s, default {row['default_1000_s']:.0f} s"
        )
        if "plateau" in row:
            p = row["plateau"]
            line += (
                f"; default with plateau stop: {p['seconds']:.0f} s "
                f"({p['iterations']} iterations, stop: {p['stop_reason']})"
            )
        lines.append(line)
    return "\n".join(lines)


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Render `benchmark` results as a text table (speed-up = baseline ms / variant ms)."""
    fp32 = any("fp32_ms" in row for row in results)
    header = f"{'method':<7}{'baseline ms/it':>15}{'default ms/it':>15}{'speed-up':>10}"
    if fp32:
        header += f"{'fp32 ms/it':>12}{'speed-up':>10}"
    lines = [header, "-" * len(header)]
    for row in results:
        line = (
            f"{row['method'].upper():<7}{row['baseline_ms']:>15.1f}{row['default_ms']:>15.1f}"
            f"{row['default_speedup']:>9.2f}x"
        )
        if fp32:
            line += f"{row['fp32_ms']:>12.1f}{row['fp32_speedup']:>9.2f}x"
        lines.append(line)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description=(
            "Median wall-clock time of one training iteration, published code (fp32, NCHW, "
            "NumPy superpixel loop) against the project's default path, on BSDS500 "
            "101027.jpg (or the bundled sample when ../shared/data is absent)."
        )
    )
    parser.add_argument(
        "--iters", type=int, default=20, help="training iterations per run (default: 20)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="leading iterations discarded before taking the median (default: 3)",
    )
    add_run_arguments(parser, METHODS, "time")
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="also time the project path in float32 (precision='fp32'), for reference",
    )
    parser.add_argument(
        "--plateau-iter",
        type=int,
        default=20,
        help="also time a complete default run with the plateau stop after this many stable "
        "iterations (budget 1000; 0 skips it; default: 20)",
    )
    parser.add_argument("--image", help="time on this image file instead of the default")
    parser.add_argument(
        "--json", metavar="OUT", type=Path, help="also write machine info and results here"
    )
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.warmup >= args.iters:
        parser.error("need --iters >= 1 and 0 <= --warmup < --iters.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and optionally write JSON; return the exit code."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    image, image_description = benchmark_image(args.image)
    info = machine_info(device)
    print(format_machine_info(info))
    print(f"image: {image_description}")
    print(f"{args.iters} iterations per run, median of the last {args.iters - args.warmup}\n")
    rates = MachineRates(device, resolve_precision("auto", device) or torch.float32)
    rates.probe()
    results = benchmark(image, args.methods, args.iters, args.warmup, device, args.seed, args.fp32,
                        rates)
    print(format_table(results))
    add_floor_and_time_to_result(results, image, device, args.seed, args.plateau_iter, rates)
    print()
    print(format_floor(results))
    if device.type == "cuda":
        for method in args.methods:
            syncs = count_host_syncs(image, method, device, 54)
            print(f"{method.upper()}: {syncs} implicit host synchronisations in iterations "
                  f"{WARMUP_STEPS + 2}..54 (the stop rule reads every 10th)")
    if args.json is not None:
        payload = {
            "machine": info,
            "image": image_description,
            "iters": args.iters,
            "warmup": args.warmup,
            "seed": args.seed,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
