"""Jobs side by side share the machine: torch threads, loader and pool workers and torchrun ranks follow
the job's share of the cores (PIPELINE_JOBS), and a bad setting is named before any work."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cores
from pipeline.params import ParamError
from tiny import make_tiny_project

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(cores, "machine_cores", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return monkeypatch


def test_a_job_gets_its_share_and_each_rank_its_part(eight_cores):
    assert cores.job_cores() == 8 and cores.worker_count(3) == 3
    eight_cores.setenv("PIPELINE_JOBS", "2")
    assert cores.job_cores() == 4 and cores.worker_count(6) == 4 and cores.worker_count(1) == 1
    eight_cores.setenv("LOCAL_WORLD_SIZE", "2")
    assert cores.process_cores() == 2 and cores.worker_count(3) == 2
    eight_cores.setenv("PIPELINE_JOBS", "16")
    assert cores.job_cores() == 1 and cores.process_cores() == 1


def test_torchrun_ranks_get_their_threads(eight_cores):
    from pipeline.launch import Launch, launch_command

    eight_cores.setenv("PIPELINE_JOBS", "2")
    cmd, env = launch_command("stages.pretrain_teacher", [], Launch(2))
    assert "torch.distributed.run" in cmd and env["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_a_bad_setting_is_named(eight_cores, bad):
    eight_cores.setenv("PIPELINE_JOBS", bad)
    with pytest.raises(ParamError, match=f"PIPELINE_JOBS.*got '{bad}'"):
        cores.job_cores()


@pytest.mark.slow
def test_a_stage_runs_on_its_share(tmp_path):
    """A stage entry point under PIPELINE_JOBS=<all cores> runs torch on one thread; a bad value exits 2."""
    code = ("from pipeline.stage import run\nimport torch\n"
            "run(lambda: print('threads', torch.get_num_threads()))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_TRACKING": "0",
           "PIPELINE_JOBS": str(cores.machine_cores())}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "threads 1" in out.stdout, out.stderr[-2000:]
    env["PIPELINE_JOBS"] = "zero"
    out = subprocess.run([sys.executable, "-m", "pipeline.launch", "pretrain_teacher", "stages.pretrain_teacher"],
                         cwd=make_tiny_project(tmp_path / "proj"), env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "PIPELINE_JOBS" in out.stderr, out.stderr[-2000:]


def test_a_queued_experiment_counts_the_queue_jobs_from_dvcs_files(tmp_path, monkeypatch):
    """`dvc queue start -j 2` without PIPELINE_JOBS: a stage in a queued experiment's workspace counts
    DVC's live queue workers (their process records), at most the experiment workspaces there now."""
    import json

    monkeypatch.delenv("PIPELINE_JOBS", raising=False)
    exps = tmp_path / ".dvc/tmp/exps"
    mine, other = exps / "tmpa1b2", exps / "tmpc3d4"
    mine.mkdir(parents=True)
    other.mkdir()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    for n, pid, rc in [(1, os.getpid(), None), (2, os.getppid(), None), (3, os.getpid(), 0), (4, finished.pid, None)]:
        (exps / "celery").mkdir(exist_ok=True)
        (exps / f"celery/dvc-exp-worker-{n}.json").write_text(json.dumps(
            {"pid": pid, "stdin": None, "stdout": None, "stderr": None, "returncode": rc}))
    assert cores.queue_jobs(mine) == 2  # workers 1 and 2 live; 3 returned, 4's process is gone
    monkeypatch.chdir(mine)
    monkeypatch.setattr(cores, "machine_cores", lambda: 8)
    assert cores.jobs_sharing() == 2 and cores.job_cores() == 4
    monkeypatch.setenv("PIPELINE_JOBS", "1")  # the variable still overrides
    assert cores.job_cores() == 8
    other.rmdir()  # one experiment left running: it gets the machine
    assert cores.queue_jobs(mine) == 1
    assert cores.queue_jobs(tmp_path) == 1 and cores.queue_jobs(exps / "celery") == 1  # not a queued workspace
