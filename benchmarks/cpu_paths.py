"""Which CPU paths of the training step pay on this CPU: blocked weight gradient, folded norm.

The project chooses two CPU paths by measurement (`core.convolution.blocked_gradient_pays`,
`core.folded_norm.MIN_CHANNELS_AMX`), and what is faster differs between CPUs with and
without AMX. This script times the training step (median ms of ``--iters`` iterations
after two, through `Segmenter.run` with the stop rules off) of SP and ST with the paper
(100 channels) and interactive (48 channels) networks, with each path forced on or off,
in rounds (every variant once per round), so a slow minute of a shared machine shows as a
round that disagrees with the others. Variants:

- ``default``: the project's choice on this CPU;
- ``blocked_on`` / ``blocked_off``: the blocked weight gradient forced on / off (it applies
  to layers of 64 or more channels only, so the 48-channel columns do not change);
- ``fold_off`` / ``fold_all``: the BatchNorm fold off / on at every width (on CPUs with
  AMX the default folds 64 or more channels only).

Run from the ``benchmarks`` folder, on the cores the figures are for, e.g.::

    OMP_NUM_THREADS=2 taskset -c 0,1 python cpu_paths.py --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from napari_kanezaki import Segmenter
from napari_kanezaki.core import convolution, devices, folded_norm
from napari_kanezaki.core.config import load_preset

from common import benchmark_image, format_machine_info, machine_info

COLUMNS = [("sp", "paper"), ("sp", "interactive"), ("st", "paper"), ("st", "interactive")]
VARIANTS = ("default", "blocked_on", "blocked_off", "fold_off", "fold_all")
#: The project's choices, restored by the ``default`` variant.
PROJECT = (convolution.blocked_gradient_pays, folded_norm.MIN_PIXELS,
           folded_norm.MIN_CHANNELS_AMX)


def step_ms(image: np.ndarray, method: str, preset: str, n_iter: int) -> float:
    """Median milliseconds per training iteration (the first two dropped)."""
    config = load_preset(preset, method).replace(max_iter=n_iter + 2, min_labels=1,
                                                 plateau_iter=0)
    seconds, start = [], time.perf_counter()
    for _ in Segmenter(config, device="cpu", seed=0).run(image):
        now = time.perf_counter()
        seconds.append(now - start)
        start = now
    return 1e3 * statistics.median(seconds[2:])


def set_variant(name: str) -> None:
    """Force the paths of variant `name` (module attributes the step reads at run time)."""
    blocked, min_pixels, min_channels_amx = PROJECT
    if name in ("blocked_on", "blocked_off"):
        forced = name == "blocked_on"
        blocked = lambda: forced  # noqa: E731
    convolution.blocked_gradient_pays = blocked
    folded_norm.MIN_PIXELS = 10**12 if name == "fold_off" else min_pixels
    folded_norm.MIN_CHANNELS_AMX = 0 if name == "fold_all" else min_channels_amx


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default: 2)")
    parser.add_argument("--iters", type=int, default=10,
                        help="timed iterations per run (default: 10)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="variants to time (default: all)")
    parser.add_argument("--image", help="time on this image file instead of the default")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Time every variant in every round and print one line per variant and round."""
    args = parse_args(argv)
    image, description = benchmark_image(args.image)
    print(format_machine_info(machine_info(torch.device("cpu"))))
    print(f"image: {description}; AMX: {devices.cpu_has_amx()}; "
          f"{torch.get_num_threads()} threads")
    print(f"{'round':<6}{'variant':<13}" + "".join(f"{m.upper()} {p:<12}" for m, p in COLUMNS))
    for round_ in range(args.rounds):
        for name in args.variants:
            set_variant(name)
            row = [step_ms(image, method, preset, args.iters) for method, preset in COLUMNS]
            print(f"{round_:<6}{name:<13}" + "".join(f"{v:<16.1f}" for v in row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
