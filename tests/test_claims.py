"""Claims on images of an output folder: one run segments each image, stale claims go."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import imageio.v3 as iio
import pytest

from napari_kanezaki.imaging.samples import noisy_regions
from napari_kanezaki.workflows import jobs as jobs_module
from napari_kanezaki.workflows.claims import (
    UNREADABLE_GRACE_S,
    ClaimedError,
    _remove_stale,
    acquire,
    claim_path,
)
from napari_kanezaki.workflows.jobs import Job, run_job

CONFIG = {"method": "st", "n_channels": 4, "max_iter": 2}


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_claim(path, **fields) -> dict:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "start": None,
              "time": time.time(), "token": "x", **fields}
    path.write_text(json.dumps(record))
    return record


def _job(tmp_path, name="a", outdir=None) -> Job:
    image = tmp_path / f"{name}.png"
    if not image.exists():
        iio.imwrite(image, noisy_regions((20, 20), seed=0)[0])
    return Job(name=name, image=image, outdir=outdir or tmp_path / "out", config=CONFIG,
               device="cpu", precision="fp32", save_model=False, torch_threads=1)


# -- the primitive ------------------------------------------------------------------------------
def test_a_claim_is_held_once_and_released(tmp_path):
    path = claim_path(tmp_path, "a")
    assert path.name == ".a.claim"
    claim = acquire(path)
    record = json.loads(path.read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    with pytest.raises(ClaimedError, match=rf"claimed by another run \(pid {os.getpid()} on "):
        acquire(path)
    claim.release()
    assert not path.exists()
    with acquire(path):
        assert path.exists()
    assert not path.exists()


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    path = claim_path(tmp_path, "a")
    _write_claim(path, pid=_dead_pid())
    claim = acquire(path)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    claim.release()
    assert list(tmp_path.iterdir()) == []  # nothing set aside is left


def test_a_claim_of_a_reused_pid_is_taken_over(tmp_path):
    path = claim_path(tmp_path, "a")
    _write_claim(path, start=1.0)  # this pid, but a process started in 1970
    with acquire(path):
        assert json.loads(path.read_text())["token"] != "x"


def test_a_live_claim_and_one_of_another_host_are_respected(tmp_path):
    path = claim_path(tmp_path, "a")
    _write_claim(path, host="elsewhere.cluster", pid=_dead_pid())
    with pytest.raises(ClaimedError, match=f"on elsewhere.cluster .*delete {path}"):
        acquire(path)
    assert json.loads(path.read_text())["host"] == "elsewhere.cluster"


def test_an_unreadable_claim_is_respected_while_young_and_stale_when_old(tmp_path):
    path = claim_path(tmp_path, "a")
    path.write_bytes(b"")  # created, not yet written
    with pytest.raises(ClaimedError, match="being written"):
        acquire(path)
    old = time.time() - 2 * UNREADABLE_GRACE_S
    os.utime(path, (old, old))
    with acquire(path):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_release_never_removes_another_runs_claim(tmp_path):
    path = claim_path(tmp_path, "a")
    claim = acquire(path)
    other = _write_claim(path, token="other")
    claim.release()
    assert json.loads(path.read_text()) == other


def test_a_fresh_claim_that_replaced_a_stale_one_is_put_back(tmp_path):
    path = claim_path(tmp_path, "a")
    stale = {"pid": _dead_pid(), "token": "stale"}
    fresh = _write_claim(path, token="fresh")  # another run took the stale claim over first
    _remove_stale(path, stale)
    assert json.loads(path.read_text()) == fresh
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# -- jobs claim their image ---------------------------------------------------------------------
def test_a_claimed_image_is_skipped_not_failed_and_nothing_is_written(tmp_path):
    job = _job(tmp_path)
    job.outdir.mkdir()
    with acquire(claim_path(job.outdir, job.name)):
        result = run_job(job)
    assert result.status == "skipped" and result.message.startswith("claimed by another run")
    assert [p.name for p in job.outdir.iterdir()] == []


def test_an_image_finished_by_another_run_meanwhile_is_skipped(tmp_path):
    job = _job(tmp_path)
    job.outdir.mkdir()
    job.outputs.labels.write_bytes(b"finished by the other run")
    result = run_job(job)
    assert (result.status, result.message) == ("skipped", "outputs exist")
    assert job.outputs.labels.read_bytes() == b"finished by the other run"
    assert not claim_path(job.outdir, job.name).exists()


def test_the_claim_goes_when_the_job_fails_and_so_does_the_folder_it_made(tmp_path):
    job = _job(tmp_path)
    job.image.write_bytes(b"not a png")
    result = run_job(job)
    assert result.status == "failed" and "cannot read" in result.message
    assert not job.outdir.exists()  # made for the claim, empty again: removed


def test_the_claim_goes_on_ctrl_c(tmp_path, monkeypatch):
    job = _job(tmp_path)
    (tmp_path / "out").mkdir()

    def interrupted(*_args, **_kwargs):
        assert claim_path(job.outdir, job.name).exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs_module, "process_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(job)
    assert list(job.outdir.iterdir()) == []


def test_threads_of_one_process_segment_an_image_once(tmp_path, monkeypatch):
    job = _job(tmp_path)
    started, release = threading.Event(), threading.Event()
    real = jobs_module.process_image

    def slow(*args, **kwargs):
        started.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs_module, "process_image", slow)
    results = []
    first = threading.Thread(target=lambda: results.append(run_job(job)))
    first.start()
    assert started.wait(30)
    second = run_job(job)  # while the first holds the claim
    release.set()
    first.join(60)
    assert second.status == "skipped" and "claimed by another run" in second.message
    assert results[0].status == "done"
    assert not claim_path(job.outdir, job.name).exists()
