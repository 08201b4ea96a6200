"""Claims on images of an output folder, so that concurrent runs segment each image once.

Before a job segments an image it claims it: `acquire` creates the hidden file
``.<stem>.claim`` in the output folder with ``os.open(..., O_CREAT | O_EXCL)`` (atomic, also
on NFS), holding the claimant's pid, host, process start time and the time of the claim.
The claim is removed when the image finishes or fails, also on Ctrl-C
(`KeyboardInterrupt`). A second run that finds an image claimed skips it ("claimed by
another run") instead of segmenting it again or reporting it as failed.

A claim whose process is gone (a run killed with ``kill -9``, a crashed machine's restart)
is *stale*: on the same host, a claim whose pid no longer runs, or runs a process started
at another time (a reused pid), is taken over. Claims from another host are respected
(their process cannot be checked from here); if that host crashed, delete the file named
in the message. An unreadable claim younger than `UNREADABLE_GRACE_S` is being written and
is respected; an older one is stale.

Importing this module imports neither torch nor dask.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Claim", "ClaimedError", "acquire", "claim_path", "UNREADABLE_GRACE_S"]

#: Seconds an unreadable (empty, half-written) claim is respected before it counts as stale.
UNREADABLE_GRACE_S = 10.0


class ClaimedError(RuntimeError):
    """The image is claimed by another run (a live process, or one on another host)."""


def claim_path(outdir: str | Path, name: str) -> Path:
    """The claim file of the image `name` in `outdir`: ``<outdir>/.<name>.claim``."""
    return Path(outdir) / f".{name}.claim"


@dataclass
class Claim:
    """A claim this process holds; `release` (or leaving a ``with`` block) removes it.

    Attributes
    ----------
    path : Path
        The claim file.
    record : dict
        What the file holds (pid, host, start, time, token).
    """

    path: Path
    record: dict[str, Any]

    def release(self) -> None:
        """Remove the claim file if it is still this claim (never another run's)."""
        if _read(self.path) == self.record:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(path: str | Path) -> Claim:
    """Claim `path` atomically for this process; take over a stale claim.

    Parameters
    ----------
    path : str or Path
        The claim file (see `claim_path`); its folder must exist.

    Returns
    -------
    Claim
        Held by this process until released.

    Raises
    ------
    ClaimedError
        A live process (or one on another host) holds the claim; the message names it and
        the file to delete if that process is known to be gone.
    """
    path = Path(path)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _process_start(os.getpid()),
        "time": time.time(),
        "token": uuid.uuid4().hex,
    }
    data = json.dumps(record).encode()
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if not _is_stale(path, holder):
                raise ClaimedError(_describe(path, holder)) from None
            _remove_stale(path, holder)
            continue  # try again: another run may have taken it over meanwhile
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return Claim(path, record)


# -- internals -----------------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any] | None:
    """The claim's record; None if it is gone or unreadable (empty, half-written, foreign)."""
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _is_stale(path: Path, holder: dict[str, Any] | None) -> bool:
    """True when the claim's process is known to be gone."""
    if holder is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: claim again
        return age > UNREADABLE_GRACE_S
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return not isinstance(pid, int) or not _runs(pid, holder.get("start"))


def _remove_stale(path: Path, holder: dict[str, Any] | None) -> None:
    """Remove the stale claim `holder`, never a fresh claim that replaced it meanwhile.

    The claim is renamed to a name of this process's own (atomic: of several runs that
    found it stale, one gets it) and deleted if it is still the stale one; a fresh claim
    moved by mistake is linked back.
    """
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another run removed it first
    if holder is None or _read(aside) == holder:
        aside.unlink()
        return
    try:  # a fresh claim (taken over by another run since we read it): put it back
        os.link(aside, path)
    except FileExistsError:
        pass
    aside.unlink()


def _process_start(pid: int) -> float | None:
    """Start time of process `pid` (seconds since the epoch); None if it is not readable."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _runs(pid: int, start: float | None) -> bool:
    """True if process `pid` runs and, when `start` is known, was started at `start`."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return start is None or process.create_time() == start  # else: a reused pid
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it runs; whose it is cannot be told: respect the claim


def _describe(path: Path, holder: dict[str, Any] | None) -> str:
    if holder is None:
        return f"claimed by another run (its claim {path} is being written)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    return (f"claimed by another run (pid {holder.get('pid')} on {holder.get('host')} since "
            f"{since}); if that run is gone, delete {path}")
