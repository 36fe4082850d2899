"""Launch a stage with the process count and precision from its typed params section.

    python -m pipeline.launch pretrain_teacher stages.pretrain_teacher
    python -m pipeline.launch train_branch stages.train_branch simple   # extra args go to the stage

A section says what it launches: one run with ``train.num_processes`` (per machine) /
``train.num_machines`` / ``train.mixed_precision`` (the same keys without ``train.`` for sections
without a ``train`` block, e.g. ``classify_patches``), or its own list (``launches(args)``):
``finetune_classsr`` launches each of its ``phases`` in turn, each with that phase's settings. Each
launch:

- 1 process on 1 machine: runs the stage module in this process.
- N processes with CUDA: ``accelerate launch`` with the repo's ``configs/accelerate.yaml`` (or
  ``$ACCELERATE_CONFIG_FILE``), so a user's own default accelerate config never silently changes what
  ``dvc repro`` does.
- N processes on CPU: ``torchrun`` with ``ACCELERATE_USE_CPU=1`` (gloo), because ``accelerate launch
  --cpu --num_processes N`` starts a single process; each rank gets its share of the job's cores as
  ``OMP_NUM_THREADS`` (:mod:`pipeline.cores`).

Several machines (``num_machines`` M > 1): the same command runs on every machine; each reads its node
rank, the main machine's address and a port from the environment a scheduler sets (:func:`node`):
``NODE_RANK`` or SLURM's ``SLURM_NODEID``, ``MASTER_ADDR`` (or the first host of SLURM's allocation),
``MASTER_PORT`` (default 29500). The ranks of node r are ``r * N .. r * N + N - 1``; global rank 0
writes every output and the MLflow run, the others only their share of each checkpoint, so the project
folder must be on a filesystem all machines share. Under ``PIPELINE_SRUN=1`` (``scripts/slurm/dag.sbatch``:
DVC runs on the allocation's first node) the launcher starts itself on all M nodes with ``srun``.

SIGTERM / SIGINT to the launcher are passed on to the launched processes, which end their MLflow runs
as KILLED (:func:`pipeline.stage.run`), and the launcher exits with their code.
"""
from __future__ import annotations

import os
import runpy
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

from pipeline.cores import job_cores
from pipeline.params import ParamError, load_section
from pipeline.stage import stop_with_parent


@dataclass
class Launch:
    processes: int  # per machine
    machines: int = 1
    precision: str = "no"


@dataclass
class Node:
    rank: int
    addr: str
    port: int


def launches(section: str, args: list[str]) -> list[tuple[list[str], Launch]]:
    """(stage args, launch settings) of each launch the stage's section asks for."""
    cfg = load_section(section)
    if hasattr(cfg, "launches"):
        plan = cfg.launches(list(args))
    else:
        plan = [(list(args), getattr(cfg, "train", cfg))]
    return [(a, Launch(int(getattr(c, "num_processes", 1)), int(getattr(c, "num_machines", 1)),
                       str(getattr(c, "mixed_precision", "no")))) for a, c in plan]


DEFAULT_PORT = 29500


def node(machines: int, env: dict) -> Node:
    """This machine's node rank and the main machine's address and port, from the scheduler's
    environment; a clear error (before any work) when one is missing or contradicts the params."""
    slurm_nodes = env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES")  # an srun step's, else the job's
    if slurm_nodes and slurm_nodes.isdigit() and int(slurm_nodes) != machines:
        raise ParamError(f"num_machines is {machines} but SLURM runs this on {slurm_nodes} nodes "
                         f"(SLURM_STEP_NUM_NODES / SLURM_NNODES): set num_machines to {slurm_nodes} "
                         f"(dvc exp run -S ...) or run it on {machines} nodes")
    rank = env.get("NODE_RANK", env.get("SLURM_NODEID", ""))
    addr = env.get("MASTER_ADDR") or _first_slurm_host(env)
    missing = [name for name, value in [("NODE_RANK (or SLURM_NODEID)", rank), ("MASTER_ADDR", addr)] if not value]
    if missing:
        raise ParamError(f"num_machines is {machines}: each machine needs its node rank and the main machine's "
                         f"address from the environment; set {' and '.join(missing)} (scripts/slurm/ does it "
                         f"under SLURM), or set num_machines to 1")
    port = env.get("MASTER_PORT", str(DEFAULT_PORT))
    if not rank.isdigit() or int(rank) >= machines or not port.isdigit():
        raise ParamError(f"node rank '{rank}' (NODE_RANK / SLURM_NODEID) must be 0 .. {machines - 1} for "
                         f"num_machines {machines}, and MASTER_PORT '{port}' a port number")
    return Node(int(rank), addr, int(port))


def _first_slurm_host(env: dict) -> str:
    """The first host of SLURM_JOB_NODELIST ('gpu[03-05,07]' -> 'gpu03'), by scontrol where it exists."""
    nodelist = env.get("SLURM_JOB_NODELIST", "")
    if not nodelist:
        return ""
    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, ranges = head.split("[", 1)
        return prefix + ranges.split("-")[0].split(",")[0].rstrip("]")
    return head


def launch_command(module: str, args: list[str], launch: Launch, env: dict | None = None) -> tuple[list[str], dict]:
    """The command and environment of one launch; an empty command means: run in this process."""
    import torch

    env = dict(os.environ if env is None else env)
    n, m = launch.processes, launch.machines
    if n * m <= 1:
        return [], env
    where = node(m, env) if m > 1 else None
    if torch.cuda.is_available():
        config = env.get("ACCELERATE_CONFIG_FILE", "configs/accelerate.yaml")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config,
               "--num_processes", str(n * m), "--mixed_precision", launch.precision]
        if where:
            cmd += ["--num_machines", str(m), "--machine_rank", str(where.rank), "--main_process_ip", where.addr,
                    "--main_process_port", str(where.port), "--rdzv_backend", "static"]
        return [*cmd, "-m", module, *args], env
    env["ACCELERATE_USE_CPU"] = "1"
    env.setdefault("OMP_NUM_THREADS", str(max(1, job_cores() // n)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n)]
    if where:
        cmd += ["--nnodes", str(m), "--node_rank", str(where.rank), "--master_addr", where.addr,
                "--master_port", str(where.port)]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", module, *args], env


def srun_command(section: str, module: str, args: list[str], machines: int, env: dict) -> tuple[list[str], dict]:
    """This launcher again on each of ``machines`` nodes of the SLURM allocation, one task a node, the
    whole step ended when one fails; the copies read their node rank from SLURM_NODEID."""
    env = {k: v for k, v in env.items() if k != SRUN_ENV}
    env.setdefault("MASTER_ADDR", _first_slurm_host(env))
    env.setdefault("MASTER_PORT", str(DEFAULT_PORT))
    return ["srun", "--nodes", str(machines), "--ntasks-per-node", "1", "--kill-on-bad-exit=1",
            sys.executable, "-m", "pipeline.launch", section, module, *args], env


SRUN_ENV = "PIPELINE_SRUN"


def main(argv=None):
    section, module, *args = argv or sys.argv[1:]
    try:
        plan = launches(section, args)
        job_cores()  # a bad PIPELINE_JOBS stops here, before any work
        via_srun = os.environ.get(SRUN_ENV) == "1"
        commands = [srun_command(section, module, a, launch.machines, dict(os.environ))
                    if via_srun and launch.machines > 1 else launch_command(module, a, launch)
                    for a, launch in plan]
    except ParamError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for stage_args, (cmd, env) in zip((a for a, _ in plan), commands):
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
