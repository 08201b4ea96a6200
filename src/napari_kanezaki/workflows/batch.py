"""Running many jobs (one per image file) in-process or on a Dask cluster.

`run_jobs` runs `jobs.run_job` on Dask's threaded scheduler in this process (`plan_workers`
shares the CPU cores between workers and torch threads), one after the other, or on a
dask.distributed cluster. A job whose label file exists is complete (its outputs are
renamed into place last), so `run_jobs` skips such jobs (resume) unless ``overwrite`` is set.
Every job claims its image first (`claims`), so runs into the same folder at the same time
segment each image once: one that another run holds is skipped ("claimed by another run").

Importing this module imports neither torch nor dask (they load when jobs run).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from napari_kanezaki.imaging.heap import share_main_arena
from napari_kanezaki.workflows.jobs import Job, JobResult, run_job

__all__ = ["plan_workers", "run_jobs"]


def plan_workers(
    n_jobs: int, workers: int | None = None, threads: int | None = None,
    device: str = "auto", cores: int | None = None,
) -> tuple[int, int]:
    """Choose in-process workers and torch threads so that workers x threads <= cores.

    Parameters
    ----------
    n_jobs : int
        Number of jobs to run.
    workers, threads : int, optional
        Requested values (None: chosen here). Defaults: on a CPU, about two torch threads per
        worker; on a GPU one worker (the GPU is the bottleneck).
    device : str
        The run's device.
    cores : int, optional
        CPU cores (default: those this process may use).

    Returns
    -------
    (workers, threads)
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - macOS, Windows
            cores = os.cpu_count() or 1
    n_jobs = max(1, n_jobs)
    if workers is None:
        if device not in ("auto", "cpu") or (device == "auto" and _has_accelerator()):
            workers = 1
        else:
            workers = max(1, cores // 2) if threads is None else max(1, cores // threads)
        workers = min(workers, n_jobs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    if threads is None:
        threads = max(1, cores // workers)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    return workers, threads


def run_jobs(
    jobs: Sequence[Job],
    *,
    scheduler: Any = None,
    workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> list[JobResult]:
    """Run jobs with Dask, skipping those whose outputs exist (resume).

    Parameters
    ----------
    jobs : sequence of Job
        Jobs with unique names.
    scheduler : str or distributed.Client, optional
        None: Dask's threaded scheduler in this process, `workers` threads each running
        torch with `threads` threads (see `plan_workers`). ``"sync"``: one job after the
        other in this thread. An address (``"tcp://host:8786"``) or a ``Client``: submit to
        that dask.distributed cluster (its workers must see the same files and have
        napari-kanezaki installed).
    workers, threads : int, optional
        In-process parallelism (see `plan_workers`).
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    list of JobResult
        In the order of `jobs`.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(
            f"several inputs have the same name {', '.join(dupes)}; their outputs would "
            "collide. Rename them or segment them into different output folders."
        )
    results: dict[str, JobResult] = {}
    todo = []
    for job in jobs:
        if not job.overwrite and job.outputs.labels.exists():
            results[job.name] = JobResult(job.name, "skipped", "outputs exist")
        else:
            todo.append(job)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="image",
               disable=not progress, desc="segmenting")
    try:
        if not todo:
            pass
        elif scheduler is None or scheduler in ("threads", "sync"):
            _run_local(todo, scheduler, workers, threads, bar, results)
        else:
            _run_distributed(todo, scheduler, bar, results)
    finally:
        bar.close()
    return [results[name] for name in names]


# -- internals -----------------------------------------------------------------------------
def _run_local(todo, scheduler, workers, threads, bar, results) -> None:
    import dask
    from dask.callbacks import Callback

    device = todo[0].device
    n_workers, n_threads = plan_workers(len(todo), workers, threads, device)
    if scheduler == "sync":
        n_workers = 1

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, JobResult):
                bar.update(1)
                _report(bar, result)

    import torch

    share_main_arena()  # Dask's threads then keep training blocks in the heap
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        tasks = [dask.delayed(run_job, pure=False)(job) for job in todo]
        with _Progress():
            if scheduler == "sync" or n_workers == 1:
                outcomes = dask.compute(*tasks, scheduler="sync")
            else:
                outcomes = dask.compute(*tasks, scheduler="threads", num_workers=n_workers)
    finally:
        torch.set_num_threads(previous)
    for result in outcomes:
        results[result.name] = result


def _run_distributed(todo, scheduler, bar, results) -> None:
    from napari_kanezaki.workflows.extras import require

    distributed = require("distributed", "distributed", "running on a dask.distributed scheduler")
    Client, as_completed = distributed.Client, distributed.as_completed

    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futures = client.map(run_job, todo, pure=False, key=[f"kanezaki-{j.name}-{id(j)}"
                                                             for j in todo])
        name_of = {f.key: j.name for f, j in zip(futures, todo, strict=True)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # the worker itself died
                result = JobResult(name_of[future.key], "failed", f"{type(exc).__name__}: {exc}")
            results[result.name] = result
            bar.update(1)
            _report(bar, result)
    finally:
        if own:
            client.close()


def _report(bar: Any, result: JobResult) -> None:
    """One line for a failed job and for one skipped because another run claimed it."""
    if result.status == "failed":
        bar.write(f"failed: {result.name}: {result.message.splitlines()[0]}")
    elif result.status == "skipped" and result.message.startswith("claimed"):
        bar.write(f"skipped: {result.name}: {result.message}")


def _has_accelerator() -> bool:
    from napari_kanezaki.core.devices import resolve_device

    return resolve_device("auto").type != "cpu"
