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
``MASTER_PORT`` (default 29500); inside an srun step SLURM's own values win over inherited ones. The
ranks of node r are ``r * N .. r * N + N - 1``; global rank 0 writes every output and the MLflow run,
the others only their share of each checkpoint, so the project folder must be on a filesystem all
machines share. A machine waits at most ``join_timeout_s`` for the others. Under ``PIPELINE_SRUN=1``
(``scripts/slurm/dag.sbatch``: DVC runs on the allocation's first node) the launcher starts itself on
all M nodes with ``srun``, with the cores their ranks need; ``--sbatch [stage ...]`` prints the
``sbatch`` options that ask for them. Whatever the count, a launch whose ``num_machines`` differs from
the srun step's node count stops before any work.

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
from pathlib import Path

from pipeline.cores import job_cores
from pipeline.params import SECTIONS, ParamError, load_section
from pipeline.stage import stop_with_parent


@dataclass
class Launch:
    processes: int  # per machine
    machines: int = 1
    precision: str = "no"
    join_timeout: int = 600  # s a machine waits for the others to join (torchrun's rendezvous)
    workers: int = 0  # loader workers per process


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
                       str(getattr(c, "mixed_precision", "no")), int(getattr(c, "join_timeout_s", 600)),
                       int(getattr(c, "num_workers", 0)))) for a, c in plan]


def cpus_per_node(launch: Launch) -> int:
    """The cores a machine's ranks need: each rank's main thread and its loader workers."""
    return launch.processes * (1 + launch.workers)


DEFAULT_PORT = 29500
INHERITED = ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def slurm_port(env: dict) -> int | None:
    """The job's own port (as the sbatch files derive it): two jobs sharing a node do not collide."""
    job = env.get("SLURM_JOB_ID", "")
    return 20000 + int(job) % 20000 if job.isdigit() else None


def in_srun_step(env: dict) -> bool:
    """Inside an ``srun`` step (one task a node), not a batch script or a shell."""
    return bool(env.get("SLURM_STEP_NUM_NODES"))


def check_node_count(machines: int, env: dict):
    """A launch whose ``num_machines`` is not the number of nodes SLURM runs it on stops before any work,
    whatever the count: inside an srun step (SLURM_STEP_NUM_NODES), each of its nodes would otherwise run
    the stage as its own global rank 0 in one shared folder. In a batch script (SLURM_NNODES alone, e.g.
    scripts/slurm/dag.sbatch) a one-machine stage runs on the first node; a stage of several machines
    must be started on them by srun."""
    step = env.get("SLURM_STEP_NUM_NODES", "")
    count = step or (env.get("SLURM_NNODES", "") if machines > 1 else "")
    if count.isdigit() and int(count) != machines:
        where = "SLURM_STEP_NUM_NODES" if step else "SLURM_NNODES"
        raise ParamError(f"num_machines is {machines} but SLURM runs this on {count} nodes ({where}): set "
                         f"num_machines to {count} (dvc exp run -S ...) or run it on {machines} node"
                         f"{'s' if machines > 1 else ''} (sbatch --nodes {machines})")


def node(machines: int, env: dict) -> Node:
    """This machine's node rank and the main machine's address and port, from the scheduler's
    environment; a clear error (before any work) when one is missing or contradicts the params.

    Inside an srun step SLURM's own values win: SLURM_NODEID, the first host of the step's (or job's)
    node list, the job's port. A NODE_RANK / MASTER_ADDR / MASTER_PORT exported in the shell that ran
    sbatch reaches every task alike (each would claim the same rank and the rendezvous would hang)."""
    check_node_count(machines, env)
    if in_srun_step(env):
        rank = env.get("SLURM_NODEID", "")
        addr = _first_slurm_host(env, "SLURM_STEP_NODELIST") or _first_slurm_host(env) or env.get("MASTER_ADDR", "")
        port = str(slurm_port(env) or env.get("MASTER_PORT", DEFAULT_PORT))
        chosen = {"NODE_RANK": rank, "MASTER_ADDR": addr, "MASTER_PORT": port}
        for k in INHERITED:
            if env.get(k) and env[k] != chosen[k]:
                print(f"launch: {k}={env[k]} (inherited) ignored under srun: {chosen[k]} from SLURM",
                      file=sys.stderr, flush=True)
    else:
        rank = env.get("NODE_RANK", env.get("SLURM_NODEID", ""))
        addr = env.get("MASTER_ADDR") or _first_slurm_host(env)
        port = env.get("MASTER_PORT", str(DEFAULT_PORT))
    missing = [name for name, value in [("NODE_RANK (or SLURM_NODEID)", rank), ("MASTER_ADDR", addr)] if not value]
    if missing:
        raise ParamError(f"num_machines is {machines}: each machine needs its node rank and the main machine's "
                         f"address from the environment; set {' and '.join(missing)} (scripts/slurm/ does it "
                         f"under SLURM), or set num_machines to 1")
    if not rank.isdigit() or int(rank) >= machines or not port.isdigit():
        raise ParamError(f"node rank '{rank}' (NODE_RANK / SLURM_NODEID) must be 0 .. {machines - 1} for "
                         f"num_machines {machines}, and MASTER_PORT '{port}' a port number")
    return Node(int(rank), addr, int(port))


def _first_slurm_host(env: dict, key: str = "SLURM_JOB_NODELIST") -> str:
    """The first host of a SLURM node list ('gpu[03-05,07]' -> 'gpu03'), by scontrol where it exists."""
    nodelist = env.get(key, "")
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


UNSUPPORTED = ("DEEPSPEED", "FSDP", "MEGATRON_LM", "XLA")


def check_accelerate_config(path: str):
    """DeepSpeed, FSDP, Megatron-LM and XLA configs are refused before any work: the loop validates on
    every rank's full copy of the model, keeps an EMA copy of it and steps the optimizer by hand, which
    sharded or engine-owned parameters do not allow."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ParamError(f"ACCELERATE_CONFIG_FILE: '{path}' not found")
    cfg = yaml.safe_load(p.read_text()) or {}
    kind = str(cfg.get("distributed_type", "")).upper()
    if kind in UNSUPPORTED or any(k in cfg for k in ("deepspeed_config", "fsdp_config", "megatron_lm_config")):
        raise ParamError(f"{path}: distributed_type {kind or 'with a DeepSpeed/FSDP section'} is not supported: the "
                         f"training loop needs a full copy of the model on every rank (validation, EMA, its own "
                         f"optimizer step); use MULTI_GPU (DDP), as configs/accelerate.yaml does")


def launch_command(module: str, args: list[str], launch: Launch, env: dict | None = None) -> tuple[list[str], dict]:
    """The command and environment of one launch; an empty command means: run in this process."""
    import torch

    env = dict(os.environ if env is None else env)
    n, m = launch.processes, launch.machines
    check_node_count(m, env)
    if n * m <= 1:
        return [], env
    where = node(m, env) if m > 1 else None
    rdzv = f"timeout={launch.join_timeout}"  # static rendezvous: how long the TCP store waits for the machines
    if torch.cuda.is_available():
        config = env.get("ACCELERATE_CONFIG_FILE", "configs/accelerate.yaml")
        check_accelerate_config(config)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config,
               "--num_processes", str(n * m), "--mixed_precision", launch.precision]
        if where:
            cmd += ["--num_machines", str(m), "--machine_rank", str(where.rank), "--main_process_ip", where.addr,
                    "--main_process_port", str(where.port), "--rdzv_backend", "static", "--rdzv_conf", rdzv]
        return [*cmd, "-m", module, *args], env
    env["ACCELERATE_USE_CPU"] = "1"
    env.setdefault("OMP_NUM_THREADS", str(max(1, job_cores() // n)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n)]
    if where:
        cmd += ["--nnodes", str(m), "--node_rank", str(where.rank), "--master_addr", where.addr,
                "--master_port", str(where.port), "--rdzv-conf", rdzv]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", module, *args], env


def wait_for_main_machine(where: Node, timeout: float):
    """A machine other than 0 first waits for machine 0's rendezvous port, at most ``timeout`` s: a peer
    that never comes (not started, another port, a firewall) then stops it with the address it waited
    for, instead of torchrun's store error (machine 0's own wait for the others is the rendezvous's,
    bounded by the same join_timeout_s)."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((where.addr, where.port), timeout=min(5.0, timeout)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"machine {where.rank} waited {timeout:g} s (join_timeout_s) for machine 0 at "
                    f"{where.addr}:{where.port} (MASTER_ADDR:MASTER_PORT) and it never answered ({e}): start the "
                    f"stage there with NODE_RANK=0, or check the address, the port and the firewall") from None
            time.sleep(0.5)


def srun_command(section: str, module: str, args: list[str], launch: Launch, env: dict) -> tuple[list[str], dict]:
    """This launcher again on each of the launch's nodes of the SLURM allocation, one task a node with
    the cores its ranks need, the whole step ended when one fails; the copies read their node rank from
    SLURM_NODEID and the main machine from SLURM (:func:`node`)."""
    env = {k: v for k, v in env.items() if k not in (SRUN_ENV, "NODE_RANK")}
    env["MASTER_ADDR"] = _first_slurm_host(env) or env.get("MASTER_ADDR", "")
    env["MASTER_PORT"] = str(slurm_port(env) or env.get("MASTER_PORT", DEFAULT_PORT))
    return ["srun", "--nodes", str(launch.machines), "--ntasks-per-node", "1",
            "--cpus-per-task", str(cpus_per_node(launch)), "--kill-on-bad-exit=1",
            sys.executable, "-m", "pipeline.launch", section, module, *args], env


SRUN_ENV = "PIPELINE_SRUN"


def sbatch_args(sections: list[str]) -> list[str]:
    """``sbatch`` options for these stages (their largest launch): nodes, one task a node, and the cores
    a node's ranks need, e.g. ``sbatch $(python -m pipeline.launch --sbatch pretrain_teacher) ...``."""
    plan = [launch for s in sections for _, launch in launches(s, [])]
    return ["--nodes", str(max(p.machines for p in plan)), "--ntasks-per-node", "1",
            "--cpus-per-task", str(max(cpus_per_node(p) for p in plan))]


def main(argv=None):
    argv = list(argv or sys.argv[1:])
    if argv and argv[0] == "--sbatch":
        try:
            print(" ".join(sbatch_args(argv[1:] or list(SECTIONS))))
        except ParamError as e:
            sys.exit(f"error: {e}")
        return
    section, module, *args = argv
    try:
        plan = launches(section, args)
        job_cores()  # a bad PIPELINE_JOBS stops here, before any work
        via_srun = os.environ.get(SRUN_ENV) == "1" and not in_srun_step(os.environ)
        commands = [srun_command(section, module, a, launch, dict(os.environ))
                    if via_srun and launch.machines > 1 else launch_command(module, a, launch)
                    for a, launch in plan]
    except ParamError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for (stage_args, launch), (cmd, env) in zip(plan, commands):
        if not cmd:
            sys.argv = [module, *stage_args]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            continue
        if cmd[0] != "srun" and launch.machines > 1:
            where = node(launch.machines, env)
            if where.rank > 0:
                try:
                    wait_for_main_machine(where, launch.join_timeout)
                except ConnectionError as e:
                    print(f"error: {e}", file=sys.stderr)
                    sys.exit(2)
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
