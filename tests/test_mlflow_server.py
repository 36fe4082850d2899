"""Stages logging to a real MLflow server on 127.0.0.1: one run per executed stage, with metrics,
read back through the REST API."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tiny import TINY_TRAIN, make_tiny_project

pytestmark = pytest.mark.slow  # DAG runs / subprocess launches: not in `pytest -m "not slow"`
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(base, path, body=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


@pytest.fixture
def server(tmp_path):
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
                             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not come up in 60 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_rest_api_returns_one_run_per_stage_with_metrics(tmp_path, server):
    root = make_tiny_project(tmp_path / "proj")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ghost"] = {"source": "models/teacher", "train": {**TINY_TRAIN, "max_steps": 2, "val_every": 2}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": server, "PIPELINE_TRACKING": "1"}
    for stage in ["pretrain_teacher", "ghost"]:
        out = subprocess.run([sys.executable, "-m", "pipeline.launch", stage, f"stages.{stage}"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
    exp = rest(server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=sr-pipeline")["experiment"]
    # marked a model-training experiment, so MLflow 3's UI opens on the runs table, not the GenAI overview
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in exp["tags"]
    runs = rest(server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 50})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    assert sorted(by_name) == ["ghost", "pretrain_teacher"]
    for name, run in by_name.items():
        assert run["info"]["status"] == "FINISHED"
        keys = {m["key"] for m in run["data"]["metrics"]}
        assert {"psnr", "val/psnr", "train/l1"} <= keys, (name, keys)
    history = rest(server, f"/api/2.0/mlflow/metrics/get-history?run_id={by_name['pretrain_teacher']['info']['run_id']}"
                           "&metric_key=train/l1")["metrics"]
    assert [m["step"] for m in history] == [2, 4, 6]
