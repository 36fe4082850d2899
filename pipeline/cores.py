"""How many CPU cores a job may use, so experiments run side by side share the machine instead of each
running torch and its loader workers on every core (two such jobs on 2 cores: 2-6 s per step instead
of 0.3 s).

A job's cores are the ones its process may run on (``taskset``, a cgroup cpuset, a scheduler's
allocation) divided by ``PIPELINE_JOBS``, the number of jobs sharing them: set it once where a queue
starts, ``PIPELINE_JOBS=2 dvc queue start -j 2`` (the queue's workers inherit it). A stage of N
processes on one machine gives each process its N-th. Nothing here changes what a stage computes: the
training batches depend only on (seed, step, sample), not on the thread or worker count.
"""
from __future__ import annotations

import os

from pipeline.params import ParamError

JOBS_ENV = "PIPELINE_JOBS"


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def jobs_sharing() -> int:
    raw = os.environ.get(JOBS_ENV, "1")
    try:
        jobs = int(raw)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise ParamError(f"environment variable {JOBS_ENV}: the number of jobs sharing this machine must be a "
                         f"whole number >= 1 (e.g. {JOBS_ENV}=2 dvc queue start -j 2), got '{raw}'")
    return jobs


def job_cores() -> int:
    """The cores of one job: its share of the machine, at least 1."""
    return max(1, machine_cores() // jobs_sharing())


def process_cores() -> int:
    """The cores of one process of this job (``LOCAL_WORLD_SIZE``: processes of the job on this machine)."""
    return max(1, job_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def use_process_cores() -> int:
    """Cap torch's threads at this process's cores (never raise them: torch's default is the physical
    core count, which is right on a machine of its own); returns the thread count."""
    import torch

    threads = min(torch.get_num_threads(), process_cores())
    torch.set_num_threads(threads)
    return threads


def worker_count(requested: int) -> int:
    """Loader or pool workers: as many as asked, but never more than this process's cores."""
    return min(requested, process_cores())
