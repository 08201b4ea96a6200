"""Run records of the command line: ``config.toml`` and ``run.json`` in an output folder,
the runtime settings they hold, and the summary line of a batch run."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from napari_kanezaki.cli.main import CLIError

__all__ = ["write_run_files"]


def write_run_files(outdir: Path, config, runtime: dict[str, Any], overwrite: bool) -> None:
    """Write ``config.toml`` (the full config) and ``run.json`` (seed, device, ...) once.

    A rerun into the same folder (resume) accepts existing files that describe the same run
    and refuses ones that do not, unless `overwrite`.

    Parameters
    ----------
    outdir : Path
        Output folder (created if missing).
    config : SPConfig or STConfig
        Configuration of the run.
    runtime : dict
        Run settings for ``run.json`` (command, seed, device, inputs, ...).
    overwrite : bool
        Replace existing files instead of checking them.

    Raises
    ------
    CLIError
        The folder holds files of a different configuration or seed.
    """
    from napari_kanezaki import __version__
    from napari_kanezaki.core.config import load_config

    outdir.mkdir(parents=True, exist_ok=True)
    config_path, run_path = outdir / "config.toml", outdir / "run.json"
    record = {"napari_kanezaki": __version__, **runtime}
    if not overwrite and config_path.exists():
        if load_config(config_path) != config:
            raise CLIError(
                f"{config_path} holds a different configuration from this run's; use another "
                "output folder, the same settings (--config it), or --overwrite."
            )
    if not overwrite and run_path.exists():
        old = json.loads(run_path.read_text(encoding="utf-8"))
        if old.get("seed") != record.get("seed"):
            raise CLIError(f"{run_path} was written with seed {old.get('seed')}, this run uses "
                           f"{record.get('seed')}; use the same seed, another folder or "
                           "--overwrite.")
        return
    config.to_file(config_path, overwrite=True)
    run_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _summary(results, started: float, outdir: Path) -> int:
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    failed = [r for r in results if r.status == "failed"]
    print(f"{done} segmented, {skipped} skipped (outputs exist), {len(failed)} failed in "
          f"{time.perf_counter() - started:.1f} s; results in {outdir}")
    for r in failed:
        print(f"  FAILED {r.name}: {r.message.splitlines()[0]}", file=sys.stderr)
    return 1 if failed else 0


def _runtime(args: argparse.Namespace, command: str, images: list[Path]) -> dict[str, Any]:
    """The run record of ``run.json``, once the run options are known to be valid.

    Checked here, before anything is written: the device exists, the precision is known,
    and the worker and thread counts are positive (a corrected rerun into the same folder
    must not meet a record of a run that never started).
    """
    from napari_kanezaki.core.devices import resolve_device, resolve_precision

    resolve_precision(args.precision, resolve_device(args.device))  # ValueError: exit 2
    for option in ("workers", "threads"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise CLIError(f"--{option} must be at least 1, got {value}.")
    record = {"command": command, "seed": getattr(args, "seed", None), "device": args.device,
              "precision": args.precision, "channel_axis": args.channel_axis,
              "inputs": [str(p) for p in images]}
    for key in ("stack_mode", "spacing", "memory_budget", "tile_shape", "zarr", "objects",
                "background", "min_object_size"):
        if hasattr(args, key):
            record[key] = getattr(args, key)
    return record
