"""`python -m pipeline.ui` opens where a researcher needs it: in a real browser (headless Chromium;
skipped where none is installed), the address it prints shows the runs table with the stages' runs,
and the address for one DVC experiment shows that experiment's runs only."""
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)

pytestmark = pytest.mark.slow  # DAG runs / subprocess launches: not in `pytest -m "not slow"`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendered(url: str) -> str:
    """The page's DOM after its scripts ran, as a headless browser renders it."""
    out = subprocess.run([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--virtual-time-budget=20000", "--window-size=1400,900", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.mark.skipif(BROWSER is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_ui_opens_on_the_runs_table_of_each_experiment(tmp_path):
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_TRACKING": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    code = ("import os, sys\nfrom pipeline.tracking import stage_run\n"
            "os.environ['DVC_EXP_NAME'] = sys.argv[2]\n"
            "with stage_run(sys.argv[1], {'seed': 1}) as t:\n    t.log_metrics({'psnr': 30.0}, step=1)\n")
    for stage, exp in [("pretrain_teacher", "exp-a"), ("evaluate", "exp-a"), ("distill_pcl", "exp-b")]:
        subprocess.run([sys.executable, "-c", code, stage, exp], env=env, check=True, capture_output=True, timeout=120)

    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "pipeline.ui", "--port", str(port)], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [ui.stdout.readline() for _ in range(2)]
        address = lines[1].strip()
        assert address.startswith(f"http://127.0.0.1:{port}/#/experiments/") and address.endswith("/runs"), lines
        page = rendered(address)
        for name in ("pretrain_teacher [exp-a]", "evaluate [exp-a]", "distill_pcl [exp-b]"):
            assert name in page, name

        from pipeline.ui import runs_address

        one = rendered(runs_address(f"http://127.0.0.1:{port}", address.split("/")[-2], "exp-b"))
        assert "distill_pcl [exp-b]" in one and "pretrain_teacher [exp-a]" not in one
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)
