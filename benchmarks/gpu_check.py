"""GPU checks of the training loop: same seed same labels, launch overhead, CUDA graphs.

Three measurements on one CUDA device, each independent of the others (a failure in one
is printed and the next one runs):

1. **Reproducibility**: two runs of each method with one seed, with the project's
   `reproducible_kernels` (cuDNN's deterministic algorithms during every update) and
   without it (cuDNN's defaults), compared bitwise: losses, weights and labels.
2. **Launch overhead**: per iteration, the wall-clock time of the run loop (one sync at
   the end, the stop rule's own reads every 10 iterations) against the GPU's busy time
   (the sum of its kernels' durations, from `torch.profiler`) and the kernel count, with
   the update replayed as a CUDA graph (`core.cuda_graph`, the default) and eager.
3. **CUDA graphs by hand**: the bare update of `make_step` captured once with
   `torch.cuda.graph` and replayed, timed against the eager update, and its weights after
   the same number of updates compared with an eager run's.

Run from the ``benchmarks`` folder, e.g.::

    python gpu_check.py --iters 60 --json gpu_check.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_kanezaki import Segmenter
from napari_kanezaki.core import cuda_graph, training
from napari_kanezaki.core.config import load_preset
from napari_kanezaki.core.devices import resolve_device
from napari_kanezaki.core.training import batch_superpixels
from napari_kanezaki.imaging.preprocessing import prepare_network_input

from common import benchmark_image, format_machine_info, machine_info, synchronize

METHODS = ("sp", "st")


def _segmenter(method: str, device: torch.device, seed: int, n_iter: int,
               preset: str = "paper") -> Segmenter:
    config = load_preset(preset, method).replace(max_iter=n_iter, min_labels=1, plateau_iter=0)
    return Segmenter(config, device=device, seed=seed)


def _weights(segmenter: Segmenter) -> dict[str, torch.Tensor]:
    assert segmenter.model is not None
    return {k: v.detach().clone() for k, v in segmenter.model.state_dict().items()}


def one_run(image: np.ndarray, method: str, device: torch.device, seed: int, n_iter: int
            ) -> tuple[list[float], dict[str, torch.Tensor], np.ndarray]:
    """Losses of every iteration, final weights and labels of one training run."""
    segmenter = _segmenter(method, device, seed, n_iter)
    losses = [state.loss for state in segmenter.run(image)]
    return losses, _weights(segmenter), segmenter.predict(image)


def compare_runs(a: tuple, b: tuple) -> dict[str, Any]:
    """Bitwise comparison of two `one_run` results."""
    (loss_a, w_a, lab_a), (loss_b, w_b, lab_b) = a, b
    first = next((i for i, (x, y) in enumerate(zip(loss_a, loss_b, strict=False))
                  if x != y), None)
    return {
        "losses_equal": loss_a == loss_b,
        "first_different_loss_iteration": None if first is None else first + 1,
        "weights_equal": all(torch.equal(w_a[k], w_b[k]) for k in w_a),
        "max_weight_difference": max(
            float((w_a[k].double() - w_b[k].double()).abs().max()) for k in w_a
        ),
        "labels_equal": bool(np.array_equal(lab_a, lab_b)),
        "labels_differing_fraction": float(np.mean(lab_a != lab_b)),
    }


def check_reproducibility(image: np.ndarray, device: torch.device, n_iter: int
                          ) -> dict[str, Any]:
    """Two same-seed runs per method, with and without `reproducible_kernels`."""
    result: dict[str, Any] = {}
    project_kernels = training.reproducible_kernels
    for method in METHODS:
        for mode in ("project", "cudnn_defaults"):
            if mode == "cudnn_defaults":
                training.reproducible_kernels = _no_change
            try:
                start = time.perf_counter()
                first = one_run(image, method, device, 0, n_iter)
                seconds = time.perf_counter() - start
                second = one_run(image, method, device, 0, n_iter)
            finally:
                training.reproducible_kernels = project_kernels
            row = compare_runs(first, second)
            row["seconds_per_run"] = seconds
            result[f"{method}_{mode}"] = row
            print(f"  {method.upper()} {mode:<15} {_summary(row)}  ({seconds:.1f} s per run)")
        other = one_run(image, method, device, 1, n_iter)
        differs = not compare_runs(first, other)["labels_equal"]
        result[f"{method}_seed1_differs"] = differs
        print(f"  {method.upper()} seed 1 gives other labels than seed 0: {differs}")
    return result


def _no_change(device: torch.device) -> contextlib.AbstractContextManager:
    """cuDNN's own settings: `reproducible_kernels` replaced by a context that does nothing."""
    return contextlib.nullcontext()


def _summary(row: dict[str, Any]) -> str:
    if row["losses_equal"] and row["weights_equal"] and row["labels_equal"]:
        return "identical losses, weights and labels"
    return (f"DIFFER: first loss difference at iteration {row['first_different_loss_iteration']}"
            f", max weight difference {row['max_weight_difference']:.3g}, "
            f"{100 * row['labels_differing_fraction']:.2f} % of labels")


def loop_seconds(image: np.ndarray, method: str, device: torch.device, n_iter: int,
                 preset: str) -> float:
    """Seconds per iteration of `Segmenter.run`, timed over iterations 6..n_iter."""
    states = _segmenter(method, device, 0, n_iter, preset).run(image)
    for _ in range(5):
        next(states)
    synchronize(device)
    start = time.perf_counter()
    count = sum(1 for _ in states)
    synchronize(device)
    return (time.perf_counter() - start) / count


def kernel_profile(image: np.ndarray, method: str, device: torch.device, n_iter: int = 10,
                   preset: str = "paper") -> dict[str, float]:
    """GPU busy time and kernel count per iteration (torch.profiler)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    states = _segmenter(method, device, 0, n_iter + 5, preset).run(image)
    for _ in range(5):
        next(states)
    synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in states:
            pass
        synchronize(device)
    busy_us, kernels = 0.0, 0
    for event in prof.key_averages():
        if event.device_type == DeviceType.CUDA:
            busy_us += getattr(event, "self_device_time_total",
                               getattr(event, "self_cuda_time_total", 0.0))
            kernels += event.count
    return {"gpu_busy_ms": busy_us / 1e3 / n_iter, "kernels": kernels / n_iter}


def check_launch_overhead(image: np.ndarray, device: torch.device, n_iter: int
                          ) -> dict[str, Any]:
    """Run loop wall time against GPU busy time, per method and preset, with the update
    replayed as a CUDA graph (the project's default on CUDA) and eager."""
    result = {}
    use_graph = cuda_graph.use_cuda_graph
    for graphed in (True, False):
        for method in METHODS:
            for preset in ("paper", "interactive"):
                if not graphed:
                    cuda_graph.use_cuda_graph = lambda config, device: False
                try:
                    wall = 1e3 * loop_seconds(image, method, device, n_iter, preset)
                    prof = kernel_profile(image, method, device, preset=preset)
                finally:
                    cuda_graph.use_cuda_graph = use_graph
                row = {"wall_ms": wall, **prof,
                       "gpu_busy_fraction": prof["gpu_busy_ms"] / wall}
                mode = "graph" if graphed else "eager"
                result[f"{method}_{preset}_{mode}"] = row
                print(f"  {method.upper()} {preset:<12} {mode}: loop {wall:.2f} ms/it, GPU busy "
                      f"{prof['gpu_busy_ms']:.2f} ms/it ({100 * row['gpu_busy_fraction']:.0f} %),"
                      f" {prof['kernels']:.0f} kernels/it")
    return result


def _prepared_step(image: np.ndarray, method: str, device: torch.device, n_iter: int
                   ) -> tuple[Segmenter, Callable, torch.Tensor]:
    segmenter = _segmenter(method, device, 0, n_iter)
    cfg = segmenter.config
    array, _ = prepare_network_input(image, cfg, None)
    x = segmenter._to_device(array[np.newaxis])
    segmenter._prepare_model(array.shape[0], False, spatial_dims=array.ndim - 1)
    superpixels = batch_superpixels([array], cfg, device) if method == "sp" else None
    return segmenter, segmenter._make_step((1, *array.shape[1:]), superpixels), x


def check_cuda_graph(image: np.ndarray, device: torch.device, n_iter: int) -> dict[str, Any]:
    """The update captured as a CUDA graph: time per replay and equality with eager."""
    result = {}
    warmup = 3
    for method in METHODS:
        eager_seg, eager_step, x = _prepared_step(image, method, device, n_iter)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(n_iter):
            eager_step(x)
        synchronize(device)
        eager_ms = 1e3 * (time.perf_counter() - start) / n_iter

        graph_seg, graph_step, x = _prepared_step(image, method, device, n_iter)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                graph_step(x)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        start = time.perf_counter()
        with torch.cuda.graph(graph):
            graph_step(x)
        capture_s = time.perf_counter() - start
        synchronize(device)
        start = time.perf_counter()
        for _ in range(n_iter - warmup):
            graph.replay()
        synchronize(device)
        graph_ms = 1e3 * (time.perf_counter() - start) / (n_iter - warmup)
        w_e, w_g = _weights(eager_seg), _weights(graph_seg)
        diff = max(float((w_e[k].double() - w_g[k].double()).abs().max()) for k in w_e)
        row = {"eager_ms": eager_ms, "graph_ms": graph_ms, "capture_s": capture_s,
               "weights_equal": all(torch.equal(w_e[k], w_g[k]) for k in w_e),
               "max_weight_difference": diff}
        result[method] = row
        print(f"  {method.upper()} eager update {eager_ms:.2f} ms, graph replay {graph_ms:.2f} ms"
              f" (capture {capture_s:.2f} s); after {n_iter} updates weights equal: "
              f"{row['weights_equal']} (max difference {diff:.3g})")
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=60,
                        help="iterations per run (default: 60)")
    parser.add_argument("--device", default="cuda", help="CUDA device (default: cuda)")
    parser.add_argument("--image", help="use this image file instead of the default")
    parser.add_argument("--json", metavar="OUT", type=Path, help="also write results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the three checks and print (and optionally write) their results."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    image, description = benchmark_image(args.image)
    info = machine_info(device)
    print(format_machine_info(info))
    print(f"image: {description}, {args.iters} iterations per run\n")
    payload: dict[str, Any] = {"machine": info, "image": description, "iters": args.iters}
    checks = [("reproducibility", check_reproducibility),
              ("launch_overhead", check_launch_overhead)]
    if device.type == "cuda":
        checks.append(("cuda_graph", check_cuda_graph))
    for name, check in checks:
        print(f"{name}:")
        try:
            payload[name] = check(image, device, args.iters)
        except Exception:  # noqa: BLE001 - report and go on to the next check
            payload[name] = {"error": traceback.format_exc()}
            print(payload[name]["error"])
    if args.json is not None:
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
