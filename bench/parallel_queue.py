"""Two queued experiments run side by side (`dvc queue start -j 2`, as users type it: the stages find the
queue's jobs themselves, pipeline.cores.queue_jobs) against the same two run one after the other
(`dvc queue start -j 1`), measured in one run on the reduced DAG of the tests (a clone of this checkout
with nothing beside it). Target: parallel / serial <= 0.8.

Each experiment changes one training section's steps (`ghost`, `distill_pcl`), so each reruns its stages
and `evaluate`. DVC's run cache is emptied before each round: the second round would otherwise restore
the first round's outputs instead of training. `--unshared` adds a third round at -j 2 with
PIPELINE_JOBS=1 (every job on every core: what the sharing prevents).

    python bench/parallel_queue.py [--steps 60] [--unshared]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("PIPELINE_LATENCY_SIDE", "128")  # evaluate's own latency input, not the tests' 32x32
from dag import clone_of_this_checkout, reduce, sh, stages_run, wait_for_queue  # noqa: E402


def queue_round(root: Path, tag: str, steps: int, jobs: int, env: str) -> float:
    """Queue the two experiments, run the queue with ``jobs`` workers; its wall time in seconds."""
    shutil.rmtree(root / ".dvc/cache/runs", ignore_errors=True)
    names = {f"{tag}-ghost": ("ghost", {"ghost"}), f"{tag}-pcl": ("distill_pcl", {"distill_pcl@student", "distill_pcl@control"})}
    for name, (section, _) in names.items():
        sh(f"dvc exp run --queue -n {name} -S {section}.train.max_steps={steps}", root)
    t0 = time.perf_counter()
    sh(f"{env} dvc queue start -j {jobs}", root, tracking=True)
    status = wait_for_queue(root, timeout=3600)
    seconds = time.perf_counter() - t0
    assert "Failed" not in status, status
    for name, (_, stages) in names.items():
        ran = stages_run(sh(f"dvc queue logs {name}", root))
        assert ran == stages | {"evaluate"}, (name, ran)
    return seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60, help="training steps of each experiment's stage")
    ap.add_argument("--unshared", action="store_true", help="also time -j 2 with PIPELINE_JOBS=1 (no sharing)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = clone_of_this_checkout(Path(tmp) / "proj")
        reduce(root)
        t0 = time.perf_counter()
        sh("dvc repro", root)
        print(f"reduced dvc repro: {time.perf_counter() - t0:.0f} s", flush=True)
        serial = queue_round(root, "serial", args.steps, 1, "")
        print(f"serial   (dvc queue start -j 1):                  {serial:7.1f} s", flush=True)
        parallel = queue_round(root, "parallel", args.steps, 2, "")
        print(f"parallel (dvc queue start -j 2):                  {parallel:7.1f} s", flush=True)
        print(f"parallel / serial: {parallel / serial:.2f} (target <= 0.8)")
        if args.unshared:
            unshared = queue_round(root, "unshared", args.steps, 2, "PIPELINE_JOBS=1")
            print(f"unshared (PIPELINE_JOBS=1 dvc queue start -j 2, every job on every core): {unshared:7.1f} s; "
                  f"/ serial {unshared / serial:.2f}")


if __name__ == "__main__":
    main()
