"""Run records of the command line: ``config.toml`` and ``run.json`` in an output folder,
the runtime settings they hold, and the summary line of a batch run."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_kanezaki.cli.main import CLIError

__all__ = ["write_run_files"]


def write_run_files(outdir: Path, config, runtime: dict[str, Any], overwrite: bool) -> None:
    """Write ``config.toml`` (the full config) and ``run.json`` (seed, device, ...) once.

    A rerun into the same folder (resume) accepts existing files that describe the same run
    and refuses ones that do not, unless `overwrite`. Both files are checked before either
    is written, and each is written under a temporary name and renamed (atomic): a run
    killed meanwhile leaves no half-written file.

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
        The folder holds files of a different configuration or seed, or an unreadable
        ``run.json``.
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
        try:
            old = json.loads(run_path.read_text(encoding="utf-8"))
        except ValueError as exc:  # also UnicodeDecodeError
            raise CLIError(f"{run_path} is not a readable run record ({exc}); use another "
                           "output folder or --overwrite.") from exc
        if old.get("seed") != record.get("seed"):
            raise CLIError(f"{run_path} was written with seed {old.get('seed')}, this run uses "
                           f"{record.get('seed')}; use the same seed, another folder or "
                           "--overwrite.")
    if overwrite or not config_path.exists():
        _write_atomically(config_path, lambda path: config.to_file(path, overwrite=True),
                          overwrite)
    if overwrite or not run_path.exists():
        text = json.dumps(record, indent=2) + "\n"
        _write_atomically(run_path, lambda path: path.write_text(text, encoding="utf-8"),
                          overwrite)


def _write_atomically(path: Path, write: Callable[[Path], object], overwrite: bool) -> None:
    """Write `path` under a temporary name beside it (`write` gets that name), then rename.

    No half-written file ever has the name `path`; the temporary file is removed when
    `write` fails. An existing `path` is refused (`FileExistsError`) unless `overwrite`.
    """
    from napari_kanezaki.imaging.io import refuse_existing
    from napari_kanezaki.workflows.outputs import partial_path

    refuse_existing(path, overwrite)
    partial = partial_path(path)
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _summary(results, started: float, outdir: Path) -> int:
    """Print the summary line of a batch and the images not segmented; return the status.

    Images skipped because their outputs exist are only counted; those skipped because
    another run claimed them are listed with the claim (on stdout), failed ones with the
    first line of their error (on stderr).

    Parameters
    ----------
    results : list of JobResult
        One per image.
    started : float
        `time.perf_counter` at the start of the run.
    outdir : Path
        The output folder.

    Returns
    -------
    int
        1 when some image failed, else 0.
    """
    done = sum(r.status == "done" for r in results)
    claimed = [r for r in results if r.status == "skipped" and r.message.startswith("claimed")]
    exist = sum(r.status == "skipped" for r in results) - len(claimed)
    failed = [r for r in results if r.status == "failed"]
    claims = f"{len(claimed)} skipped (claimed by another run), " if claimed else ""
    print(f"{done} segmented, {exist} skipped (outputs exist), {claims}{len(failed)} failed "
          f"in {time.perf_counter() - started:.1f} s; results in {outdir}")
    for r in claimed:
        print(f"  SKIPPED {r.name}: {r.message}")
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
                "background", "min_object_size", "fill", "split_touching", "split_seeds", "runs",
                "membranes", "ridge_sigma"):
        if hasattr(args, key):
            record[key] = getattr(args, key)
    return record
