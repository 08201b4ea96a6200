"""How freed memory blocks are kept or given back: two glibc malloc policies.

A training step allocates and frees the same dozen activation-sized blocks (tens of MiB)
every iteration. With glibc's defaults those blocks are mapped fresh from the system and
returned after use, so every iteration pays a page fault per 4 KiB touched: 25 000-90 000
faults and 10-20 % of a 321x481 step on a 2-core CPU. Tiled runs want the opposite: memory
of finished tiles back to the system at once, so that the peak stays within the memory
budget.

- `resident_heap` (a context for training loops): freed blocks of up to 64 MiB stay in the
  heap and are reused by the next iteration; when the last training loop ends the free
  memory goes back to the system (``malloc_trim``).
- `share_main_arena` (called by the faces before they start worker threads): threads
  allocate from the main heap, which keeps its blocks (glibc gives each thread its own
  arena otherwise, whose heaps give large blocks back as soon as they empty).
- `bound_heap` (tiled runs): blocks over 256 KiB are always mapped and returned when freed.

Elsewhere than glibc all three are no-ops. ctypes only: no torch, Qt or napari.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["bound_heap", "heap_is_resident", "resident_heap", "share_main_arena"]

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Largest value mallopt accepts (an int): in effect "never".
_NEVER = 2**31 - 1
#: Largest block kept in the heap by `resident_heap`; larger ones are still mapped and
#: given back. Measured peaks (ST, 100 channels, above the interpreter): with no limit a
#: 1000x1000 image peaked 38 % higher in bf16 and a 700x700 one 50 % higher in fp32 (freed
#: blocks of hundreds of MiB fragment the heap); with 64 MiB those are unchanged and a
#: 400x400 image peaks 17 % (94 MiB) higher. The blocks this leaves mapped on 321x481 at
#: 100 channels (oneDNN's 128-256 MiB weight-gradient scratch: 380 instead of 365 ms per
#: step) are gone since `core.convolution` computes that gradient itself.
RESIDENT_MAX_BLOCK = 64 * 2**20
#: glibc's default trim and mmap thresholds, restored after training.
_DEFAULT_TRIM = _DEFAULT_MMAP = 128 * 1024
#: The mmap threshold of `bound_heap`: larger blocks are given back when freed.
_BOUND_MMAP_THRESHOLD = 256 * 1024

_lock = threading.Lock()
_state: dict[str, Any] = {"bound": False, "users": 0}


@functools.cache
def _libc() -> Any:
    """glibc's handle with `mallopt` and `malloc_trim`, or None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def bound_heap() -> None:
    """Make freed blocks over 256 KiB go back to the system (glibc; elsewhere a no-op).

    glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB), after
    which tile-sized blocks come from the heap and, freed, stay resident as fragments: the
    process grew by ~3x the tile working set over a tiled run. A fixed threshold keeps the
    peak at what the tiles need. Done once per process; a `resident_heap` in progress keeps
    its policy until it ends, which then restores this one.
    """
    with _lock:
        if _state["bound"]:
            return
        _state["bound"] = True
        libc = _libc()
        if libc is not None and _state["users"] == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, _BOUND_MMAP_THRESHOLD)


def share_main_arena() -> None:
    """Make threads started from now on allocate from the main heap (glibc; else a no-op).

    glibc gives each new thread an arena of its own, whose heaps are given back to the
    system as soon as they empty: a training loop in such a thread (napari's workers, Dask's
    threads) maps its activation blocks afresh at every step whatever `resident_heap` says.
    The faces call this before they start their worker threads (measured on a 2-core CPU, ST
    on 321x481: 396 instead of 463-536 ms per step in a thread). Threads that already
    allocated keep their arena.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


@contextlib.contextmanager
def resident_heap() -> Iterator[None]:
    """Keep freed blocks for reuse while the block runs (a training loop).

    Re-entrant and thread-safe: the policy holds while any holder is inside, and the last
    one out restores the bounded policy (blocks over 128 KiB, or 256 KiB after
    `bound_heap`, mapped and given back) and returns the free memory to the system. The
    one-arena setting stays: threads started afterwards allocate from the main heap.
    """
    libc = _libc()
    if libc is None:
        yield
        return
    with _lock:
        _state["users"] += 1
        if _state["users"] == 1:
            share_main_arena()  # for the threads started later
            libc.mallopt(_M_MMAP_THRESHOLD, RESIDENT_MAX_BLOCK)
            libc.mallopt(_M_TRIM_THRESHOLD, _NEVER)
    try:
        yield
    finally:
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0:
                threshold = _BOUND_MMAP_THRESHOLD if _state["bound"] else _DEFAULT_MMAP
                libc.mallopt(_M_MMAP_THRESHOLD, threshold)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
                libc.malloc_trim(0)


def heap_is_resident() -> bool:
    """Whether a `resident_heap` block is running (in any thread)."""
    return _state["users"] > 0
