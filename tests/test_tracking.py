"""MLflow runs that tell the truth: a stage stopped by SIGTERM ends its run KILLED (one process, and two
processes behind the launcher), stages starting at once on a new SQLite store all get their runs, and a
DVC experiment's runs carry its name."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny import make_tiny_project

pytestmark = pytest.mark.slow  # DAG runs / subprocess launches: not in `pytest -m "not slow"`
REPO = Path(__file__).resolve().parents[1]


def runs_of(db: Path) -> dict:
    """{run name: (status, tags)} in the store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("sr-pipeline")
    return {r.info.run_name: (r.info.status, r.data.tags) for r in client.search_runs([experiment.experiment_id])}


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_ends_the_stage_run_killed(tmp_path, processes):
    train = {"max_steps": 400, "ckpt_every": 2, "log_every": 2, "val_every": 400, "num_processes": processes}
    root = make_tiny_project(tmp_path / "proj", train=train)
    db = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_TRACKING": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.launch", "pretrain_teacher", "stages.pretrain_teacher"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint = root / "checkpoints/pretrain_teacher/latest/fingerprint.json"
    deadline = time.time() + 180
    while not checkpoint.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the stage's own process, as a scheduler or `kill` does
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "stopped by SIGTERM" in out
    assert not (root / "models/teacher").exists()
    status, tags = runs_of(db)["pretrain_teacher"]
    assert status == "KILLED" and tags["stage"] == "pretrain_teacher"


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
def test_sigterm_to_dvc_stops_its_stage_killed(tmp_path, shell):
    """DVC does not pass SIGTERM on to the stage it runs: the stage stops itself when DVC dies. DVC runs
    the command with ``$SHELL -c``; dash (Debian's /bin/sh, DVC's default without $SHELL) stays between
    DVC and the stage, bash execs the stage: a CI without $SHELL failed where this machine passed."""
    train = {"max_steps": 2000, "ckpt_every": 2, "log_every": 2, "val_every": 2000}
    root = make_tiny_project(tmp_path / "proj", train=train)
    (root / "dvc.yaml").write_text("stages:\n  pretrain_teacher:\n"
                                   "    cmd: python -m pipeline.launch pretrain_teacher stages.pretrain_teacher\n"
                                   "    outs: [models/teacher]\n")
    db = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_TRACKING": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "SHELL": shell}
    subprocess.run("git init -q && dvc init -q", shell=True, cwd=root, env=env, check=True)
    log = tmp_path / "dvc.log"
    dvc = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    checkpoint = root / "checkpoints/pretrain_teacher/latest/fingerprint.json"
    deadline = time.time() + 180
    while not checkpoint.exists():
        assert dvc.poll() is None and time.time() < deadline, "dvc ended before the stage's first checkpoint"
        time.sleep(0.05)
    dvc.send_signal(signal.SIGTERM)
    dvc.wait(timeout=60)
    deadline = time.time() + 60
    while runs_of(db)["pretrain_teacher"][0] == "RUNNING":
        assert time.time() < deadline, "the stage ran on after DVC was stopped: " + log.read_text()[-2000:]
        time.sleep(0.5)
    assert runs_of(db)["pretrain_teacher"][0] == "KILLED"
    assert not (root / "models/teacher").exists()


def test_stages_starting_together_on_a_new_store_all_log(tmp_path):
    """MLflow builds a new SQLite store by migrations; four processes doing it at once crashed 3 of 4."""
    db = tmp_path / "fresh.db"
    code = ("import sys\nfrom pipeline.tracking import stage_run\n"
            "with stage_run(sys.argv[1], {'seed': 1}) as t:\n    t.log_metrics({'psnr': 30.0}, step=1)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_TRACKING": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
           "DVC_EXP_NAME": "exp-a"}
    procs = [subprocess.Popen([sys.executable, "-c", code, f"stage{i}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(4)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    runs = runs_of(db)
    assert sorted(runs) == [f"stage{i} [exp-a]" for i in range(4)]
    assert all(status == "FINISHED" and tags["dvc_exp_name"] == "exp-a" for status, tags in runs.values())


def test_a_stage_failing_after_training_ends_its_run_failed(tmp_path):
    """The run covers the whole stage: training, its scoring and the delivery. Here the metrics file
    cannot be written (``metrics`` is a file): the run, left open by the training loop, ends FAILED, not
    FINISHED as a run closed when training ended would say."""
    root = make_tiny_project(tmp_path / "proj", train={"max_steps": 2, "ckpt_every": 2, "log_every": 1, "val_every": 2})
    (root / "metrics").write_text("not a folder")
    db = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_TRACKING": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    out = subprocess.run([sys.executable, "-m", "pipeline.launch", "pretrain_teacher", "stages.pretrain_teacher"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode != 0 and "File exists: 'metrics'" in out.stderr
    status, _ = runs_of(db)["pretrain_teacher"]
    assert status == "FAILED"
    (root / "metrics").unlink()
    out = subprocess.run([sys.executable, "-m", "pipeline.launch", "pretrain_teacher", "stages.pretrain_teacher"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    run = client.get_run(client.search_runs([client.get_experiment_by_name("sr-pipeline").experiment_id],
                                            order_by=["start_time DESC"])[0].info.run_id)
    # one run holds the training curve and what the stage computed after it, ended after the delivery
    assert run.info.status == "FINISHED" and {"train/l1", "val/psnr", "bicubic_psnr", "params"} <= set(run.data.metrics)
    assert run.info.end_time / 1000 >= (root / "metrics/pretrain_teacher.json").stat().st_mtime - 1
