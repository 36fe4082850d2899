"""Timing helper shared by the benchmarks."""
import time


def best_of(fn, repeats=3):
    """Fastest of ``repeats`` wall-clock runs of ``fn()`` (least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
