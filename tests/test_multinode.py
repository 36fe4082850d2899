"""Distributed training as a cluster runs it, on one machine: the launcher's node settings, two
"machines" on 127.0.0.1, and the maths (N processes = one process on the whole batch; a killed run
resumes to the uninterrupted result)."""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
import torch
from safetensors.torch import load_file

from pipeline.launch import Launch, Node, launch_command, node, srun_command
from pipeline.params import ParamError
from tiny import make_tiny_project

REPO = Path(__file__).resolve().parents[1]
STAGE = ["pretrain_teacher", "stages.pretrain_teacher"]
# long enough that a kill after the first checkpoint lands mid-run
TRAIN = {"max_steps": 150, "batch_size": 4, "ckpt_every": 10, "log_every": 10, "val_every": 150}
MODEL = {"arch": "msrresnet", "kwargs": {"nf": 16, "nb": 2}, "scale": 4}
KILL_ENDS_WITHIN_S = 60  # a dead machine's peers see its connections close and stop at once


# ---- the node settings (fast) ----------------------------------------------------------------------

def test_node_from_the_generic_environment():
    assert node(2, {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29400"}) == Node(1, "10.0.0.5", 29400)
    assert node(2, {"NODE_RANK": "0", "MASTER_ADDR": "h"}).port == 29500


def test_node_from_slurm():
    env = {"SLURM_NNODES": "3", "SLURM_NODEID": "2", "SLURM_JOB_NODELIST": "gpu[03-05]"}
    assert node(3, env) == Node(2, "gpu03", 29500)
    with pytest.raises(ParamError, match="num_machines is 2 but SLURM runs this on 3 nodes"):
        node(2, env)
    assert node(2, {**env, "SLURM_STEP_NUM_NODES": "2", "SLURM_NODEID": "1"}).rank == 1  # a 2-node step of 3


@pytest.mark.parametrize("env, named", [({"MASTER_ADDR": "h"}, "NODE_RANK"), ({"NODE_RANK": "0"}, "MASTER_ADDR"),
                                        ({"NODE_RANK": "2", "MASTER_ADDR": "h"}, "must be 0 .. 1")])
def test_missing_or_wrong_node_settings_are_named(env, named):
    with pytest.raises(ParamError, match=named):
        node(2, env)


def test_cpu_and_cuda_commands_for_two_machines(monkeypatch):
    env = {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29400", "PATH": os.environ["PATH"]}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cmd, out_env = launch_command("stages.x", ["a"], Launch(2, 2), env)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "2", "--node_rank", "1",
                       "--master_addr", "10.0.0.5", "--master_port", "29400", "--rdzv-conf", "timeout=600",
                       "-m", "stages.x", "a"]
    assert "timeout=45" in launch_command("stages.x", [], Launch(2, 2, join_timeout=45), env)[0]
    assert out_env["ACCELERATE_USE_CPU"] == "1"
    assert launch_command("stages.x", [], Launch(1, 2), env)[0][3:5] == ["--nproc_per_node", "1"]  # 1 per machine
    assert launch_command("stages.x", [], Launch(1, 1), env)[0] == []  # one process: in this one
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cmd, _ = launch_command("stages.x", [], Launch(4, 2, "bf16"), env)
    joined = " ".join(cmd)
    assert "accelerate.commands.launch" in joined and "--num_processes 8 --mixed_precision bf16" in joined
    assert "--num_machines 2 --machine_rank 1 --main_process_ip 10.0.0.5 --main_process_port 29400" in joined
    assert "--rdzv_backend static --rdzv_conf timeout=600" in joined


def test_srun_starts_the_launcher_once_per_node_with_the_cores_its_ranks_need():
    inherited = {"PIPELINE_SRUN": "1", "SLURM_JOB_NODELIST": "n1,n2", "SLURM_JOB_ID": "123456",
                 "NODE_RANK": "0", "MASTER_ADDR": "old-host", "MASTER_PORT": "29500"}
    cmd, env = srun_command("ghost", "stages.ghost", [], Launch(8, 4, workers=4), inherited)
    assert cmd[:8] == ["srun", "--nodes", "4", "--ntasks-per-node", "1", "--cpus-per-task", "40", "--kill-on-bad-exit=1"]
    assert cmd[-4:] == ["-m", "pipeline.launch", "ghost", "stages.ghost"]
    # SLURM's node list and the job's port win over a shell's exported values; no rank is passed on
    assert "PIPELINE_SRUN" not in env and "NODE_RANK" not in env
    assert env["MASTER_ADDR"] == "n1" and env["MASTER_PORT"] == str(20000 + 123456 % 20000)


def test_under_srun_slurm_wins_over_inherited_node_settings():
    step = {"SLURM_STEP_NUM_NODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "77",
            "NODE_RANK": "0", "MASTER_ADDR": "laptop", "MASTER_PORT": "29500"}
    assert node(2, step) == Node(1, "gpu07", 20077)
    # outside srun (two machines by hand) the exported values are what the user set
    assert node(2, {"NODE_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29501"}) == Node(1, "h", 29501)


@pytest.mark.parametrize("machines, env, ok", [
    (1, {"SLURM_STEP_NUM_NODES": "2"}, False),  # stage.sbatch on 2 nodes, num_machines 1: two global rank 0s
    (1, {"SLURM_STEP_NUM_NODES": "1", "SLURM_NNODES": "2"}, True),
    (1, {"SLURM_NNODES": "2"}, True),  # dag.sbatch's batch step: a one-machine stage on the first node
    (2, {"SLURM_NNODES": "3"}, False),
    (2, {"SLURM_STEP_NUM_NODES": "2", "SLURM_NNODES": "3"}, True),
])
def test_the_node_count_is_checked_for_every_count(machines, env, ok):
    from pipeline.launch import check_node_count

    if ok:
        check_node_count(machines, env)
    else:
        with pytest.raises(ParamError, match=f"num_machines is {machines} but SLURM runs this on"):
            check_node_count(machines, env)
    if not ok:  # a one-process launch, which would run in this process, is refused too
        with pytest.raises(ParamError):
            launch_command("stages.x", [], Launch(1, machines), env)


def test_deepspeed_and_fsdp_configs_are_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for kind in ("DEEPSPEED", "FSDP"):
        config = tmp_path / f"{kind}.yaml"
        config.write_text(f"distributed_type: {kind}\nnum_machines: 1\n")
        with pytest.raises(ParamError, match=f"{kind} is not supported"):
            launch_command("stages.x", [], Launch(2), {"ACCELERATE_CONFIG_FILE": str(config)})
    assert launch_command("stages.x", [], Launch(2), {"ACCELERATE_CONFIG_FILE": str(REPO / "configs/accelerate.yaml")})[0]


def test_sbatch_args_ask_for_the_cores_of_the_largest_launch(tmp_path, monkeypatch):
    from pipeline.launch import sbatch_args

    root = make_tiny_project(tmp_path, train={"num_processes": 8, "num_workers": 3, "num_machines": 2})
    monkeypatch.chdir(root)
    assert sbatch_args(["pretrain_teacher"]) == ["--nodes", "2", "--ntasks-per-node", "1", "--cpus-per-task", "32"]


def test_without_pidfd_a_stage_still_stops_when_its_parent_dies(tmp_path):
    """Under DVC a stage follows the process that started it; where pidfd_open is missing (an older
    kernel, a seccomp filter) it warns and polls instead of crashing every stage."""
    child = tmp_path / "child.py"
    child.write_text(
        "import os, signal, sys, time, warnings\n"
        "def no_pidfd(pid):\n    raise OSError(38, 'Function not implemented')\n"
        "os.pidfd_open = no_pidfd\n"
        "from pipeline import stage\n"
        "stage.POLL_S = 0.2\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('stopped', flush=True), sys.exit(0)))\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    stage.stop_with_parent()\n"
        "print('warned' if any('pidfd_open is unavailable' in str(x.message) for x in w) else 'silent', flush=True)\n"
        "time.sleep(60)\nprint('ran on', flush=True)\n")
    log = tmp_path / "child.log"
    parent = ("import subprocess, sys, time\n"
              f"subprocess.Popen([sys.executable, {str(child)!r}], stdout=open({str(log)!r}, 'w'), stderr=subprocess.STDOUT)\n"
              "time.sleep(3)\n")
    subprocess.run([sys.executable, "-c", parent], env=_env(DVC_STAGE="x"), timeout=60, check=True)
    deadline = time.time() + 20
    while "stopped" not in log.read_text() and time.time() < deadline:
        time.sleep(0.1)
    assert log.read_text().split() == ["warned", "stopped"], log.read_text()


@pytest.mark.slow
def test_two_machines_without_a_node_rank_stop_before_any_work(tmp_path):
    root = make_tiny_project(tmp_path, train={"num_machines": 2})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NODE_RANK", "MASTER_"))}
    out = subprocess.run([sys.executable, "-m", "pipeline.launch", *STAGE], cwd=root, capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(REPO), "PIPELINE_TRACKING": "0"}, timeout=120)
    assert out.returncode == 2 and "set NODE_RANK (or SLURM_NODEID) and MASTER_ADDR" in out.stderr
    assert not (root / "checkpoints").exists()


# ---- runs on loopback (slow) -----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    """One thread a process in every run: a float sum's order depends on the thread count, and the
    rounding differences grow over Adam steps (two machines of one process would use 2 threads each)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NODE_RANK", "MASTER_"))}
    return {**env, "PYTHONPATH": str(REPO), "PIPELINE_TRACKING": "0", "OMP_NUM_THREADS": "1", **extra}


def _project(root: Path, **train) -> Path:
    return make_tiny_project(root, train={**TRAIN, **train}, model=MODEL)


def _run(root: Path, env: dict, timeout=300, cmd=STAGE):
    out = subprocess.run([sys.executable, "-m", "pipeline.launch", *cmd], cwd=root, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _weights(root: Path) -> dict:
    return load_file(str(root / "models/teacher/model.safetensors"))


def _assert_close(a: dict, b: dict, tol: float):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=tol, msg=k)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    """The reference: one machine, two processes of batch 4."""
    root = _project(tmp_path_factory.mktemp("two_processes"), num_processes=2)
    assert "2 processes (MULTI_CPU)" in _run(root, _env())
    return _weights(root)


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path):
    """The same samples (the loader's global batch) and the gradient averaged over the ranks: two steps
    agree to float rounding (over many Adam steps rounding grows, ~1e-5 after 30)."""
    two = _project(tmp_path / "two", num_processes=2, max_steps=2)
    one = _project(tmp_path / "one", batch_size=8, max_steps=2)
    with ThreadPoolExecutor(2) as pool:  # side by side: one thread a process, and no result depends on timing
        list(pool.map(lambda root: _run(root, _env()), [two, one]))
    _assert_close(_weights(one), _weights(two), 1e-6)


def _job_with_a_free_port() -> str:
    """A SLURM_JOB_ID whose port (20000 + id % 20000, as the sbatch files derive it) is free here."""
    import random

    for _ in range(200):
        port = random.randrange(20000, 40000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return str(port - 20000 + 20000 * random.randrange(1, 50))
    raise RuntimeError("no free port in 20000-39999")


def _slurm_env(**extra) -> dict:
    """A stand-in srun on PATH, an allocation of this machine (its job id giving a free port), and a
    shell's stale exports, as after the README's "two machines by hand": SLURM's own values must win."""
    return _env(SLURM_JOB_ID=_job_with_a_free_port(), SLURM_JOB_NODELIST="127.0.0.1", SLURM_NNODES="2",
                NODE_RANK="0", MASTER_ADDR="127.0.0.9", MASTER_PORT="29500",  # loopback: never reached
                PATH=f"{REPO / 'tests/fixtures'}:{os.environ['PATH']}", **extra)


@pytest.mark.slow
def test_two_machines_started_by_srun_equal_one_machine(two_processes, tmp_path):
    """scripts/slurm/dag.sbatch's path: the launcher on the first node starts itself on each node with
    srun (here a stand-in that starts the nodes on this machine), each reads SLURM_NODEID; a NODE_RANK,
    MASTER_ADDR and MASTER_PORT inherited from the submitting shell change nothing (each node claiming
    rank 0 would hang the rendezvous)."""
    root = _project(tmp_path, num_machines=2)
    log = _run(root, _slurm_env(PIPELINE_SRUN="1"), timeout=240)
    assert "launch: srun --nodes 2 --ntasks-per-node 1 --cpus-per-task 1" in log and "--nnodes 2 --node_rank 1" in log
    _assert_close(_weights(root), two_processes, 1e-6)


@pytest.mark.slow
def test_a_one_machine_stage_on_a_two_node_srun_step_stops_before_any_work(tmp_path):
    """scripts/slurm/stage.sbatch on 2 nodes with num_machines 1: each node would be a global rank 0 in
    one shared folder (two trainings racing on checkpoints/, models/, metrics/, two MLflow runs)."""
    root = _project(tmp_path)
    out = subprocess.run(["srun", "--nodes", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1", sys.executable,
                          "-m", "pipeline.launch", *STAGE], cwd=root, env=_slurm_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "num_machines is 1 but SLURM runs this on 2 nodes" in out.stderr
    assert not (root / "checkpoints").exists() and not (root / "models").exists()


@pytest.mark.slow
def test_a_machine_left_alone_stops_within_its_join_timeout(tmp_path):
    """Machine 1 started as the README says, with no machine 0: it stops within join_timeout_s with the
    address it waited for, instead of holding its node for torchrun's 10 minutes."""
    root = _project(tmp_path, num_machines=2, join_timeout_s=5)
    port = _free_port()
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pipeline.launch", *STAGE], cwd=root, capture_output=True, text=True,
                         env=_env(NODE_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)), timeout=120)
    assert out.returncode != 0 and time.monotonic() - start < 5 + 30  # the timeout, and a Python's start
    assert f"machine 1 waited 5 s (join_timeout_s) for machine 0 at 127.0.0.1:{port}" in out.stderr
    assert not (root / "checkpoints").exists()


def _start_node(root: Path, rank: int, port: int, mlflow_db: Path, log: Path | None = None) -> subprocess.Popen:
    """A machine's launcher; its output piped, or written to ``log`` (to be watched while it runs)."""
    env = _env(NODE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PIPELINE_TRACKING="1",
               MLFLOW_TRACKING_URI=f"sqlite:///{mlflow_db}")
    out = log.open("w") if log else subprocess.PIPE
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.launch", *STAGE], cwd=root, env=env, text=True,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    return proc


def _kill_machine(proc: subprocess.Popen):
    """SIGKILL a node's launcher and everything under it, as a machine's loss ends them all (torchrun
    starts its ranks in sessions of their own, so the launcher's process group is not enough)."""
    import psutil

    tree = psutil.Process(proc.pid)
    for p in [tree, *tree.children(recursive=True)]:
        p.send_signal(signal.SIGKILL)
    proc.wait()


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, proc.log.read_text() if getattr(proc, "log", None) else out


@pytest.mark.slow
def test_a_killed_machine_ends_the_other_and_a_rerun_resumes_to_the_same_model(two_processes, tmp_path):
    """Two machines on 127.0.0.1, one process each. Machine 1 has its own folder except the checkpoints
    (on a cluster the whole project is on a shared filesystem; here only what rank 1 must write is
    shared, so the test sees that it writes nothing else). Machine 1 is killed after the first
    checkpoint; machine 0 must stop, not hang; both rerun, machine 1 with a stale view of the
    checkpoints; the run resumes together and ends at the model of the uninterrupted one-machine run,
    written once, with one MLflow run and the whole training curve (the single-process crash and
    resume: test_train.py)."""
    main = _project(tmp_path / "machine0", num_machines=2)
    other = _project(tmp_path / "machine1", num_machines=2)
    (main / "checkpoints").mkdir()
    (other / "checkpoints").symlink_to(main / "checkpoints")
    port = _free_port()
    nodes = [_start_node(main, 0, port, main / "mlflow.db"), _start_node(other, 1, port, other / "mlflow.db")]
    fingerprint = main / "checkpoints/pretrain_teacher/latest/fingerprint.json"
    deadline = time.time() + 240
    while not fingerprint.exists():
        assert all(p.poll() is None for p in nodes) and time.time() < deadline, "a node ended before the checkpoint"
        time.sleep(0.01)
    _kill_machine(nodes[1])
    start = time.time()
    code, log = _finish(nodes[0], KILL_ENDS_WITHIN_S)
    assert code != 0 and time.time() - start < KILL_ENDS_WITHIN_S
    assert not (main / "models/teacher").exists(), "the kill came after the end: make the run longer"
    (main / "plots/train/pretrain_teacher.csv").unlink()  # DVC deletes a stage's outputs before it reruns it

    # machine 1's view of the shared folder is stale: latest/ appears there only after machine 0 has
    # resumed from it (NFS caches a directory's entries). Global rank 0 decides to resume, machine 1 waits until it
    # sees that checkpoint: deciding alone, it would start at step 0 and run a loop of another length.
    (other / "checkpoints").unlink()
    (other / "checkpoints/pretrain_teacher").mkdir(parents=True)
    latest = main / "checkpoints/pretrain_teacher/latest"
    resumed_at = json.loads((latest / "progress.json").read_text())["step"]

    def appear_late():  # once machine 0 has resumed: machine 1 is then deciding too, or waiting
        deadline = time.time() + 120
        while "resuming from" not in logs[0].read_text() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        hidden = other / "checkpoints/pretrain_teacher/.latest.copy"
        shutil.copytree(latest, hidden)
        hidden.rename(other / "checkpoints/pretrain_teacher/latest")

    port = _free_port()
    logs = [tmp_path / "machine0.log", tmp_path / "machine1.log"]
    nodes = [_start_node(main, 0, port, main / "mlflow.db", logs[0]), _start_node(other, 1, port, other / "mlflow.db", logs[1])]
    late = threading.Thread(target=appear_late)
    late.start()
    try:
        results = [_finish(p, 300) for p in nodes]
    finally:  # a hang must not outlive the test
        for p in nodes:
            if p.poll() is None:
                _kill_machine(p)
    late.join()
    assert all(code == 0 for code, _ in results), results[0][1][-3000:] + results[1][1][-3000:]
    assert f"resuming from {Path('checkpoints/pretrain_teacher/latest')} at step {resumed_at}" in results[0][1]
    assert "2 processes (MULTI_CPU)" in results[0][1] and 0 < resumed_at < TRAIN["max_steps"]
    _assert_close(_weights(main), two_processes, 1e-6)
    with open(main / "plots/train/pretrain_teacher.csv") as f:  # the curve whole: its first rows came from the checkpoint
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(10, TRAIN["max_steps"] + 1, 10))

    # global rank 0 wrote the model, metrics, curve and MLflow run; machine 1 only its checkpoint share
    assert not any((other / d).exists() for d in ("models", "metrics", "plots", "mlflow.db"))
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{main / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sr-pipeline").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"] and runs[0].info.run_name == "pretrain_teacher"


# ---- 2 machines x 2 processes = 1 machine x 4, the teacher and CSD (slow) ---------------------------

SHAPE_TRAIN = {"max_steps": 3, "batch_size": 2, "ckpt_every": 3, "log_every": 1, "val_every": 3}
CSD = {"teacher": "models/teacher", "width": 0.5, "embedding": "teacher", "layer_weights": [0.5, 1.0, 1.0],
       "neg_num": 6, "contra_lambda": 200.0, "t_lambda": 1.0, "embed_crop": 0}  # 6 negatives: > a process's 2


def _shaped_project(root: Path, stage: str, **train) -> Path:
    """The tiny project with ``stage``'s section at ``train`` (for distill_csd: a saved teacher)."""
    from pipeline import models

    root = make_tiny_project(root, train={**TRAIN, **SHAPE_TRAIN, **train}, model=MODEL)
    if stage == "distill_csd":
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["distill_csd"] = {**CSD, "train": {**params["pretrain_teacher"]["train"], "rgb_range": 255.0}}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        torch.manual_seed(0)
        models.save(models.build(MODEL["arch"], MODEL["scale"], **MODEL["kwargs"]), root / "models/teacher")
    return root


def _two_machines(root: Path, cmd: list[str]) -> list[str]:
    """The README's "two machines by hand", both on 127.0.0.1 in one (shared) project folder."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.launch", *cmd], cwd=root, text=True,
                              env=_env(NODE_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in (0, 1)]
    try:
        logs = [_finish(p, 300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_machine(p)
    assert all(code == 0 for code, _ in logs), logs[0][1][-3000:] + logs[1][1][-3000:]
    return [log for _, log in logs]


@pytest.mark.slow
@pytest.mark.parametrize("stage, cmd, out", [
    ("pretrain_teacher", STAGE, "models/teacher"),
    ("distill_csd", ["distill_csd", "stages.distill_csd", "student"], "models/csd_student"),
])
def test_two_machines_of_two_processes_equal_one_machine_of_four(tmp_path, stage, cmd, out):
    """4 ranks either way (gloo, 127.0.0.1): the same global batch, CSD's negatives from all of it (6 of
    8 samples, a process holds 2), the gradients averaged over the 4: the same model."""
    one = _shaped_project(tmp_path / "one", stage, num_processes=4)
    assert "4 processes (MULTI_CPU)" in _run(one, _env(), timeout=300, cmd=cmd)
    two = _shaped_project(tmp_path / "two", stage, num_processes=2, num_machines=2)
    log = _two_machines(two, cmd)[0]
    assert "4 processes (MULTI_CPU)" in log and "--nnodes 2 --node_rank 0" in log
    a, b = (load_file(str(root / out / "model.safetensors")) for root in (one, two))
    _assert_close(a, b, 1e-6)
