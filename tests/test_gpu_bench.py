"""bench/gpu.sh: every GPU check in one command; without a GPU it stops at once and runs nothing."""
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine runs the real checks")
def test_gpu_bench_stops_at_once_without_a_gpu():
    start = time.time()
    out = subprocess.run(["bash", "bench/gpu.sh"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no NVIDIA GPU here" in out.stderr and "Nothing was run" in out.stderr
    assert time.time() - start < 5 and not (REPO / "reports/gpu.json").exists()
