"""The malloc policies of `imaging.heap`: freed blocks kept during training, given back after.

Page faults are the observable: a block that stays in the heap is reused without faults; a
block given back to the system faults again on every page when it is allocated anew.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pytest

from napari_kanezaki import Segmenter, STConfig
from napari_kanezaki.imaging.heap import heap_is_resident, resident_heap

glibc = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)

_FAULTS = """
import json, resource
import numpy as np
from napari_kanezaki.imaging.heap import bound_heap, resident_heap

def faults_per_cycle():
    np.ones(2**22).sum()  # a 32 MiB block, allocated once before counting
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        np.ones(2**22).sum()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5

bound_heap()
result = {"bound": faults_per_cycle()}
with resident_heap():
    with resident_heap():
        result["nested"] = faults_per_cycle()
    result["outer"] = faults_per_cycle()
result["after"] = faults_per_cycle()
print(json.dumps(result))
"""


@glibc
def test_resident_heap_reuses_freed_blocks_until_the_last_holder_leaves():
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                         check=True, timeout=120)
    faults = json.loads(out.stdout.strip().splitlines()[-1])
    # Given back and faulted in again every time: 8192 faults of 4 KiB pages, or ~500
    # where numpy asks for transparent huge pages.
    assert faults["bound"] > 100
    assert faults["nested"] < 10  # kept and reused
    assert faults["outer"] < 10  # still held by the outer block
    assert faults["after"] > 100  # the bounded policy is back


_RETURNED = """
import json, psutil
import numpy as np
from napari_kanezaki.imaging.heap import resident_heap

process = psutil.Process()
baseline = process.memory_info().rss
with resident_heap():
    blocks = [np.ones(2**19) for _ in range(40)]  # 160 MiB in 4 MiB blocks
    del blocks
    held = process.memory_info().rss - baseline
after = process.memory_info().rss - baseline
print(json.dumps({"held": held / 2**20, "after": after / 2**20}))
"""


@glibc
def test_memory_freed_inside_goes_back_to_the_system_at_the_end():
    out = subprocess.run([sys.executable, "-c", _RETURNED], capture_output=True, text=True,
                         check=True, timeout=120)
    mib = json.loads(out.stdout.strip().splitlines()[-1])
    assert mib["held"] > 100  # freed, but kept for reuse while training
    assert mib["after"] < 40  # trimmed when the block ends


def test_training_holds_the_resident_heap_only_while_it_runs():
    image = np.random.default_rng(0).random((24, 24), dtype=np.float32)
    segmenter = Segmenter(STConfig(n_channels=8, max_iter=3, min_labels=1), device="cpu")
    assert not heap_is_resident()
    run = segmenter.run(image)
    next(run)
    assert heap_is_resident()
    run.close()  # cancelled mid-way
    assert not heap_is_resident()
    for _ in segmenter.fit_in_turn([image, image]):
        assert heap_is_resident()
    assert not heap_is_resident()


def test_resident_heap_is_released_when_the_block_raises():
    with pytest.raises(RuntimeError), resident_heap():
        assert heap_is_resident()
        raise RuntimeError("boom")
    assert not heap_is_resident()


_ARENAS = """
import ctypes, sys, threading
import numpy as np
from napari_kanezaki.imaging.heap import share_main_arena

if sys.argv[1] == "shared":
    share_main_arena()
blocks = []
thread = threading.Thread(target=lambda: blocks.append(np.ones(2**16)))  # a 512 KiB block
thread.start()
thread.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" section per arena, on stderr
"""


@glibc
def test_threads_started_after_share_main_arena_allocate_from_the_main_heap():
    def arenas(mode):
        out = subprocess.run([sys.executable, "-c", _ARENAS, mode], capture_output=True,
                             text=True, check=True, timeout=120)
        return out.stderr.count("Arena ")

    assert arenas("own") >= 2  # glibc's default: the thread got an arena of its own
    assert arenas("shared") == 1
