"""Folder runs on Dask: same labels as sequential, failures reported and skipped, resume."""

from __future__ import annotations

import dataclasses
import os

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_kanezaki import STConfig
from napari_kanezaki.cli.main import main
from napari_kanezaki.imaging.samples import noisy_regions
from napari_kanezaki.workflows.batch import plan_workers, run_jobs
from napari_kanezaki.workflows.jobs import Job

CONFIG = STConfig(n_channels=16, max_iter=5).to_dict()


def make_jobs(tmp_path, outdir, names=("a", "b", "c")):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    jobs = []
    for i, name in enumerate(names):
        path = images / f"{name}.png"
        if not path.exists():
            iio.imwrite(path, noisy_regions((32, 32), noise=0.05, seed=i)[0])
        jobs.append(Job(name=name, image=path, outdir=outdir, config=CONFIG, seed=3,
                        device="cpu", precision="fp32", save_model=False, torch_threads=1))
    return jobs


def labels_of(outdir, names):
    return {n: tifffile.imread(outdir / f"{n}_labels.tif") for n in names}


def test_distributed_client_gives_the_sequential_labels(tmp_path):
    from distributed import Client, LocalCluster

    seq = run_jobs(make_jobs(tmp_path, tmp_path / "seq"), scheduler="sync", threads=1,
                   progress=False)
    assert [r.status for r in seq] == ["done"] * 3
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        dist = run_jobs(make_jobs(tmp_path, tmp_path / "dist"), scheduler=client,
                        progress=False)
    assert [r.status for r in dist] == ["done"] * 3
    a, b = labels_of(tmp_path / "seq", "abc"), labels_of(tmp_path / "dist", "abc")
    for name in "abc":
        np.testing.assert_array_equal(a[name], b[name])


def test_threaded_in_process_run_matches_sequential(tmp_path):
    seq = run_jobs(make_jobs(tmp_path, tmp_path / "seq"), scheduler="sync", progress=False)
    par = run_jobs(make_jobs(tmp_path, tmp_path / "par"), workers=2, threads=1,
                   progress=False)
    assert [r.status for r in seq] == [r.status for r in par] == ["done"] * 3
    a, b = labels_of(tmp_path / "seq", "abc"), labels_of(tmp_path / "par", "abc")
    for name in "abc":
        np.testing.assert_array_equal(a[name], b[name])


def test_a_job_leaves_the_process_torch_threads_as_they_were(tmp_path):
    import torch

    from napari_kanezaki.workflows.jobs import run_job

    before = torch.get_num_threads()
    job = make_jobs(tmp_path, tmp_path / "out", names=("a",))[0]
    job = dataclasses.replace(job, torch_threads=before + 1)
    assert run_job(job).status == "done"
    assert torch.get_num_threads() == before


def test_corrupt_image_is_reported_and_the_others_finish(tmp_path, capsys):
    images = tmp_path / "images"
    make_jobs(tmp_path, tmp_path / "unused", names=("a", "c"))
    (images / "b.png").write_bytes(b"not a png at all")
    out = tmp_path / "out"
    args = ["segment", str(images), "-o", str(out), "--n-channels", "16", "--max-iter", "5",
            "--device", "cpu", "--precision", "fp32", "--workers", "2", "--threads", "1", "-q"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "2 segmented, 0 skipped (outputs exist), 1 failed" in captured.out
    assert "FAILED b: ValueError: cannot read" in captured.err
    assert (out / "a_labels.tif").exists() and (out / "c_labels.tif").exists()
    assert not (out / "b_labels.tif").exists()
    assert not list(out.glob(".*partial*"))  # no temporary leftovers
    # fix the image and rerun: the finished images are skipped (resume)
    iio.imwrite(images / "b.png", noisy_regions((32, 32), seed=5)[0])
    before = (out / "a_labels.tif").stat().st_mtime_ns
    assert main(args) == 0
    assert "1 segmented, 2 skipped" in capsys.readouterr().out
    assert (out / "a_labels.tif").stat().st_mtime_ns == before


def test_duplicate_names_are_refused(tmp_path):
    jobs = make_jobs(tmp_path, tmp_path / "out", names=("a",))
    with pytest.raises(ValueError, match="same name a"):
        run_jobs(jobs * 2, progress=False)


def test_plan_workers_never_oversubscribes():
    for cores in (1, 2, 3, 8, 16):
        for n_jobs in (1, 5, 100):
            workers, threads = plan_workers(n_jobs, device="cpu", cores=cores)
            assert workers * threads <= cores and workers <= n_jobs
    assert plan_workers(10, device="cuda", cores=16)[0] == 1
    assert plan_workers(10, workers=4, device="cpu", cores=16) == (4, 4)


def test_cli_scheduler_address_runs_on_a_cluster(tmp_path, capsys):
    from distributed import LocalCluster

    images = tmp_path / "images"
    make_jobs(tmp_path, tmp_path / "unused", names=("a", "b"))
    common = ["--n-channels", "16", "--max-iter", "5", "--seed", "3", "--device", "cpu",
              "--precision", "fp32", "-q"]
    # The cluster's worker runs one job at a time with cores // 1 torch threads; results
    # depend on the thread count (reduction order), so the sequential run uses the same.
    threads = str(os.cpu_count() or 1)
    assert main(["segment", str(images), "-o", str(tmp_path / "seq"), "--workers", "1",
                 "--threads", threads, *common]) == 0
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        assert main(["segment", str(images), "-o", str(tmp_path / "dist"),
                     "--scheduler", address, *common]) == 0
    a, b = labels_of(tmp_path / "seq", "ab"), labels_of(tmp_path / "dist", "ab")
    for name in "ab":
        np.testing.assert_array_equal(a[name], b[name])


# Runs the CLI or the job API in a process of its own. Every image waits in process_image
# (after its claim) until the second run has started, so that the two runs overlap.
_DRIVER = """
import sys, time
from pathlib import Path

from napari_kanezaki.workflows import jobs

marker, role, face, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
real = jobs.process_image


def slow(*a, **k):
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return real(*a, **k)


jobs.process_image = slow
if role == "second":
    marker.touch()
if face == "cli":
    from napari_kanezaki.cli.main import main

    sys.exit(main(args))
from napari_kanezaki import STConfig
from napari_kanezaki.workflows.batch import run_jobs

folder, out = Path(args[0]), Path(args[1])
config = STConfig(n_channels=4, max_iter=2).to_dict()
todo = [jobs.Job(name=p.stem, image=p, outdir=out, config=config, device="cpu",
                 precision="fp32", torch_threads=1) for p in sorted(folder.glob("*.png"))]
results = run_jobs(todo, workers=1, threads=1, progress=False)
done = sum(r.status == "done" for r in results)
failed = [r for r in results if r.status == "failed"]
claimed = sum(r.status == "skipped" and r.message.startswith("claimed") for r in results)
print(f"{done} segmented, {len(failed)} failed, {claimed} claimed by another run")
sys.exit(1 if failed else 0)
"""


@pytest.mark.parametrize("second", ["cli", "api"])
def test_two_concurrent_runs_into_one_folder_segment_each_image_once(second, tmp_path):
    import re
    import subprocess
    import sys
    import time

    folder, out, marker = tmp_path / "in", tmp_path / "out", tmp_path / "second-started"
    folder.mkdir()
    names = [f"i{k}" for k in range(6)]
    for k, name in enumerate(names):
        iio.imwrite(folder / f"{name}.png", noisy_regions((20, 20), seed=k)[0])
    cli = ["segment", str(folder), "-o", str(out), "--n-channels", "4", "--max-iter", "2",
           "--device", "cpu", "--precision", "fp32", "--workers", "1", "--threads", "1", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start(role, face):
        args = cli if face == "cli" else [str(folder), str(out)]
        return subprocess.Popen([sys.executable, "-c", _DRIVER, str(marker), role, face, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)

    first = start("first", "cli")
    deadline = time.monotonic() + 120
    while not list(out.glob(".*.claim")) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    other = start("second", second)
    outputs = [p.communicate(timeout=300) for p in (first, other)]
    assert [first.returncode, other.returncode] == [0, 0], outputs
    done = [int(re.search(r"(\d+) segmented", o).group(1)) for o, _ in outputs]
    assert sum(done) == len(names), outputs  # every image once, none twice
    assert all("Traceback" not in e and "FAILED" not in e for _, e in outputs)
    claimed = sum(o.count("claimed by another run") for o, _ in outputs)
    assert claimed >= 1, outputs  # the runs did overlap
    for name in names:
        assert (out / f"{name}_labels.tif").exists()
    assert not list(out.glob(".*"))  # no claims, no temporary files left


# -- the memory budget: peak memory above the interpreter's baseline -----------------------------
def test_the_fixed_part_of_a_budget_counts_input_labels_and_runtime(tmp_path):
    from napari_kanezaki.imaging.sources import ImageSource
    from napari_kanezaki.imaging.tiles import RUNTIME_BYTES, fixed_bytes, network_budget

    image = np.zeros((100, 200, 3), np.uint8)
    source = ImageSource(image)
    assert fixed_bytes(source, labels_in_memory=True) == RUNTIME_BYTES + image.nbytes + 4 * 20_000
    assert fixed_bytes(source, labels_in_memory=False) == RUNTIME_BYTES + image.nbytes
    np.save(tmp_path / "x.npy", image)
    mapped = ImageSource(np.load(tmp_path / "x.npy", mmap_mode="r")[10:])  # read on demand
    assert fixed_bytes(mapped, labels_in_memory=False) == RUNTIME_BYTES
    budget = 2**30
    assert network_budget(budget, source, True) == budget - fixed_bytes(source, True)
    assert network_budget(RUNTIME_BYTES, source, True) == RUNTIME_BYTES // 4  # cannot be met


_PEAK = """
import json, resource, sys
import numpy as np, psutil, torch
from napari_kanezaki import STConfig, segment
from napari_kanezaki.workflows import stacks

budget = 160 * 2**20
baseline = psutil.Process().memory_info().rss
image = np.random.default_rng(0).integers(0, 256, (768, 768, 3), dtype=np.uint8)
segment(image, config=STConfig(n_channels=32, max_iter=2), memory_budget=budget,
        device="cpu", precision="fp32")
# Linux: this process's own high-water mark (VmHWM). ru_maxrss would do on macOS, but on
# Linux it also holds the parent's resident set at fork (here: pytest's, after other tests).
try:
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps((peak - baseline) / budget))
"""


def test_a_tiled_run_peaks_within_the_budget_above_the_baseline():
    import json
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True,
                         check=True, env=env, timeout=600)
    ratio = json.loads(out.stdout.strip().splitlines()[-1])
    assert ratio <= 1.25


_FRAGMENTS = """
import numpy as np, psutil
from napari_kanezaki.imaging.heap import bound_heap

bound_heap()
np.ones(8 * 2**20 // 8).sum()  # an 8 MiB block freed: glibc's own threshold would rise
baseline = psutil.Process().memory_info().rss
blocks = [np.ones(2**19) for _ in range(40)]  # 40 tile-sized blocks of 4 MiB
del blocks[::2]  # half of them freed, between blocks still in use
print((psutil.Process().memory_info().rss - baseline) / 2**20)
"""


def test_freed_tile_blocks_go_back_to_the_system():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FRAGMENTS], capture_output=True, text=True,
                         check=True, timeout=120)
    grown_mib = float(out.stdout.strip().splitlines()[-1])
    assert grown_mib < 100  # the 20 blocks in use (80 MiB); without bound_heap: 160 MiB
