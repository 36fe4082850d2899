"""Launch a stage with the process count and precision from its typed params section.

    python -m pipeline.launch pretrain_teacher stages.pretrain_teacher
    python -m pipeline.launch train_branch stages.train_branch simple   # extra args go to the stage

A section says what it launches: one run with ``train.num_processes`` / ``train.mixed_precision``
(``num_processes`` for sections without a ``train`` block, e.g. ``classify_patches``), or its own
list (``launches(args)``): ``finetune_classsr`` launches each of its ``phases`` in turn, each with that
phase's settings. Each launch:

- 1 process: runs the stage module in this process.
- N processes with CUDA: ``accelerate launch`` with ``--num_processes N`` and the repo's
  ``configs/accelerate.yaml`` (or ``$ACCELERATE_CONFIG_FILE``, e.g. a multi-node config), so a user's
  own default accelerate config never silently changes what ``dvc repro`` does.
- N processes on CPU: ``torchrun --standalone`` with ``ACCELERATE_USE_CPU=1`` (gloo), because
  ``accelerate launch --cpu --num_processes N`` starts a single process; each rank gets its share of
  the job's cores as ``OMP_NUM_THREADS`` (:mod:`pipeline.cores`).

SIGTERM / SIGINT to the launcher are passed on to the launched processes, which end their MLflow runs
as KILLED (:func:`pipeline.stage.run`), and the launcher exits with their code.
"""
from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys

from pipeline.cores import job_cores
from pipeline.params import ParamError, load_section
from pipeline.stage import stop_with_parent


def launches(section: str, args: list[str]) -> list[tuple[list[str], int, str]]:
    """(stage args, process count, mixed precision) of each launch the stage's section asks for."""
    cfg = load_section(section)
    if hasattr(cfg, "launches"):
        plan = cfg.launches(list(args))
    else:
        plan = [(list(args), getattr(cfg, "train", cfg))]
    return [(a, int(getattr(c, "num_processes", 1)), str(getattr(c, "mixed_precision", "no"))) for a, c in plan]


def launch_command(module: str, args: list[str], n: int, precision: str) -> tuple[list[str], dict]:
    """The command and environment of one launch; an empty command means: run in this process."""
    import torch

    env = dict(os.environ)
    if n <= 1:
        return [], env
    if torch.cuda.is_available():
        config = env.get("ACCELERATE_CONFIG_FILE", "configs/accelerate.yaml")
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", str(n),
                "--mixed_precision", precision, "-m", module, *args], env
    env["ACCELERATE_USE_CPU"] = "1"
    env.setdefault("OMP_NUM_THREADS", str(max(1, job_cores() // n)))
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m", module,
            *args], env


def main(argv=None):
    section, module, *args = argv or sys.argv[1:]
    try:
        plan = launches(section, args)
        job_cores()  # a bad PIPELINE_JOBS stops here, before any work
    except ParamError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for stage_args, n, precision in plan:
        cmd, env = launch_command(module, stage_args, n, precision)
        if not cmd:
            sys.argv = [module, *stage_args]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            continue
        print("launch:", " ".join(cmd), flush=True)
        code = run_forwarding_signals(cmd, env)
        if code:
            sys.exit(code if code > 0 else 128 - code)


def run_forwarding_signals(cmd: list[str], env: dict) -> int:
    """Run ``cmd`` and pass SIGTERM / SIGINT on to it (torchrun passes them to its ranks); its exit code,
    or 128 + the signal's number when it was stopped by one (as a stage run in this process exits)."""
    stop_with_parent()
    proc = subprocess.Popen(cmd, env=env)
    received = []

    def forward(signum, frame):
        received.append(signum)
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
        return 128 + received[0] if received and code else code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    main()
