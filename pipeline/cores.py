"""How many CPU cores a job may use, so experiments run side by side share the machine instead of each
running torch and its loader workers on every core (two such jobs on 2 cores: 2-6 s per step instead
of 0.3 s).

A job's cores are the ones its process may run on (``taskset``, a cgroup cpuset, a scheduler's
allocation) divided by the number of jobs sharing them. A stage of a queued DVC experiment finds that
number itself (:func:`queue_jobs`: ``dvc queue start -j 2`` as users type it); ``PIPELINE_JOBS=N``
overrides it (e.g. jobs started by other means on one machine). A stage of N
processes on one machine gives each process its N-th. Nothing here changes what a stage computes: the
training batches depend only on (seed, step, sample), not on the thread or worker count.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.params import ParamError

JOBS_ENV = "PIPELINE_JOBS"


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def queue_jobs(cwd: Path | None = None) -> int:
    """How many queued DVC experiments run side by side with this one, from DVC's own files; 1 outside a
    queue. A queued experiment runs in a temporary workspace ``<repo>/.dvc/tmp/exps/tmpXXXX`` (its
    stages' cwd); ``dvc queue start -j N`` starts N workers, each one experiment at a time, whose process
    records are ``<repo>/.dvc/tmp/exps/celery/dvc-exp-worker-<n>.json`` (DVC 3; ``returncode``
    null while it runs). The jobs: the live workers, at most the experiment workspaces that exist now."""
    here = (cwd or Path.cwd()).resolve()
    exps = here.parent
    if not (exps.name == "exps" and exps.parent.name == "tmp" and exps.parent.parent.name == ".dvc"
            and here.name.startswith("tmp")):
        return 1
    workers = 0
    for info in exps.glob("celery/dvc-exp-worker-*.json"):
        try:
            record = json.loads(info.read_text())
            workers += record.get("returncode") is None and _alive(int(record["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a record being written or from another DVC version: not counted
    running = sum(1 for d in exps.glob("tmp*") if d.is_dir())
    return max(1, min(workers, running))


def jobs_sharing() -> int:
    """``PIPELINE_JOBS`` if set, else :func:`queue_jobs`."""
    if JOBS_ENV not in os.environ:
        return queue_jobs()
    raw = os.environ[JOBS_ENV]
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
    core count, which is right on a machine of its own); returns the thread count. A stage that has not
    imported torch (a data stage) gets the cap as ``OMP_NUM_THREADS``, read by torch if it comes later."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        threads = min(int(os.environ.get("OMP_NUM_THREADS") or machine_cores()), process_cores())
        os.environ["OMP_NUM_THREADS"] = str(threads)
        return threads
    threads = min(torch.get_num_threads(), process_cores())
    torch.set_num_threads(threads)
    return threads


def worker_count(requested: int) -> int:
    """Loader or pool workers: as many as asked, but never more than this process's cores."""
    return min(requested, process_cores())
