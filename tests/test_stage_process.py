"""What a training stage's process pays for besides its steps (bench/repro_timeline.py measures it): no
module it does not need (the shard reader is pyarrow alone: `datasets` is the writer and the hub loader;
latency is timed by evaluate, not by every training stage), one MLflow store per process, and no
asynchronous logging queue whose thread the end of the run waits on (up to 1 s)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tiny import make_tiny_project

REPO = Path(__file__).resolve().parents[1]
# modules a training stage never needs: each cost 0.2-1 s of every stage process when it was imported
AVOIDABLE = ("datasets", "pandas", "matplotlib", "onnx", "onnxruntime", "scipy.stats")

RUN_STAGE = """
import json, runpy, sys
opened, queues = [], []
if {tracking}:
    import mlflow.store.tracking.sqlalchemy_store as store
    import mlflow.utils.async_logging.async_logging_queue as async_queue
    init, activate = store.SqlAlchemyStore.__init__, async_queue.AsyncLoggingQueue.activate
    store.SqlAlchemyStore.__init__ = lambda self, *a, **k: (opened.append(a[0]), init(self, *a, **k))[1]
    async_queue.AsyncLoggingQueue.activate = lambda self: (queues.append(1), activate(self))[1]
    loaded_before = set()
else:
    loaded_before = set(sys.modules)
sys.argv = ["stages.pretrain_teacher"]
runpy.run_module("stages.pretrain_teacher", run_name="__main__")
print("RESULT " + json.dumps({{"modules": sorted(set(sys.modules) - loaded_before), "stores": opened,
                              "async_queues": len(queues)}}))
"""


def stage_process(root: Path, tracking: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_TRACKING": "1" if tracking else "0",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    out = subprocess.run([sys.executable, "-c", RUN_STAGE.format(tracking=tracking)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_a_training_stage_imports_only_what_it_uses(tmp_path):
    loaded = stage_process(make_tiny_project(tmp_path / "p"), tracking=False)["modules"]
    assert "torch" in loaded and "pyarrow" in loaded  # it did train, from the shards
    assert not [m for m in AVOIDABLE if m in loaded], [m for m in AVOIDABLE if m in loaded]


def test_a_tracked_stage_opens_one_store_and_no_async_logging_queue(tmp_path):
    out = stage_process(make_tiny_project(tmp_path / "p"), tracking=True)
    assert len(out["stores"]) == 1, out["stores"]
    assert out["async_queues"] == 0  # its thread polls with a 1 s timeout, and end_run joins it
