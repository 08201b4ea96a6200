"""Time to a result: a default run from the call to the labels, against the published code.

What a person waiting in napari or on the command line feels: the interactive preset (the
default of the CLI and the widgets: the papers' settings with the plateau stop, SP's
superpixel count following the image size) run (as `segment()` runs it) from the call to the
label image (normalisation, superpixels, training until it stops by itself, prediction),
on BSDS500 101027 (321 x 481, when ``../shared/data`` is there) and on the bundled
256 x 256 immunohistochemistry sample. Beside it, the published code's time for its budget
of 1000 iterations: its set-up plus the median of ``--published-iters`` timed iterations
times 1000 (an extrapolation: running it to the end takes half an hour per image here).

    python benchmarks/bench_time_to_result.py [--methods sp st] [--published-iters 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_kanezaki import Segmenter
from napari_kanezaki.core.config import load_preset
from napari_kanezaki.core.devices import resolve_device
from napari_kanezaki.imaging.samples import immunohistochemistry

from common import (
    BSDS_IDS,
    add_run_arguments,
    bsds_image_path,
    format_machine_info,
    load_bsds_image,
    machine_info,
    synchronize,
)
from published_baseline import run_published

METHODS = ("sp", "st")
PUBLISHED_BUDGET = 1000


def images() -> list[tuple[str, np.ndarray]]:
    """The benchmark images: BSDS500 101027 when the data is there, and the bundled sample."""
    found = []
    if bsds_image_path(BSDS_IDS[0]).is_file():
        found.append((f"BSDS500 {BSDS_IDS[0]} (321x481)", load_bsds_image(BSDS_IDS[0])))
    found.append(("bundled sample (256x256)", immunohistochemistry()))
    return found


def time_default_run(image: np.ndarray, method: str, device: torch.device,
                     seed: int) -> dict[str, Any]:
    """Seconds from the call to the labels for the interactive preset, and how it stopped.

    The same calls as `segment()` makes for an image that fits the memory budget: a
    `Segmenter` is made, trained until it stops, and predicts.
    """
    synchronize(device)
    start = time.perf_counter()
    segmenter = Segmenter(load_preset("interactive", method), device=device, seed=seed)
    for state in segmenter.run(image):  # noqa: B007 (the last state is reported)
        pass
    labels = segmenter.predict(image)
    synchronize(device)
    return {"seconds": time.perf_counter() - start, "iterations": state.iteration,
            "stop_reason": state.stop_reason, "segments": int(labels.max())}


def time_published(image: np.ndarray, method: str, device: torch.device, seed: int,
                   n_iter: int) -> dict[str, Any]:
    """The published code: set-up and `n_iter` timed iterations, extrapolated to 1000."""
    start = time.perf_counter()
    run = run_published(image, method, n_iter=n_iter, seed=seed, device=device, min_labels=0)
    total = time.perf_counter() - start
    iteration = statistics.median(run.iter_seconds[1:] or run.iter_seconds)
    overhead = total - sum(run.iter_seconds)  # set-up (superpixels) and prediction
    return {"ms_per_iteration": 1000 * iteration, "overhead_s": overhead,
            "budget_s": overhead + PUBLISHED_BUDGET * iteration}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally write JSON; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, METHODS, "time")
    parser.add_argument("--published-iters", type=int, default=10,
                        help="timed iterations of the published code (default: 10)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    info = machine_info(device)
    print(format_machine_info(info))
    rows = []
    header = (f"{'image':<28}{'method':<8}{'default run':>13}{'iterations':>12}"
              f"{'stop':>11}{'published, 1000 it.':>21}{'ratio':>8}")
    print(header + "\n" + "-" * len(header))
    for name, image in images():
        for method in args.methods:
            default = time_default_run(image, method, device, args.seed)
            published = time_published(image, method, device, args.seed,
                                       args.published_iters)
            ratio = published["budget_s"] / default["seconds"]
            rows.append({"image": name, "method": method, "default": default,
                         "published": published, "published_over_default": ratio})
            print(f"{name:<28}{method.upper():<8}{default['seconds']:>11.1f} s"
                  f"{default['iterations']:>12}{default['stop_reason']:>11}"
                  f"{published['budget_s'] / 60:>17.1f} min{ratio:>7.0f}x")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
