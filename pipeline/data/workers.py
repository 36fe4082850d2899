"""Spread per-image work over worker processes, with a progress bar."""
from __future__ import annotations

import os
import sys
from multiprocessing import get_context
from typing import Callable, Iterator

from pipeline.cores import worker_count


def _single_thread():
    """N workers x 1 thread each, instead of oversubscribing the cores: torch (and numpy's BLAS) read
    the variable when they load; a worker that has torch already gets the cap directly."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def parallel_map(fn: Callable, items: list, num_workers: int, desc: str) -> Iterator:
    """``fn`` over ``items`` in order. Workers are spawned, not forked: a fork after torch has started
    its OpenMP threads can deadlock the child. At most this process's cores (:mod:`pipeline.cores`)."""
    from tqdm import tqdm

    num_workers = worker_count(num_workers)
    if num_workers <= 1 or len(items) <= 1:
        yield from tqdm(map(fn, items), total=len(items), desc=desc, unit="img")
        return
    with get_context("spawn").Pool(min(num_workers, len(items)), initializer=_single_thread) as pool:
        yield from tqdm(pool.imap(fn, items), total=len(items), desc=desc, unit="img")
