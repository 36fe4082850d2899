"""Every GPU check in one run (``bash bench/gpu.sh``; at most 8 min: each check has a time limit), into one JSON:

1. ``smoke``: the paper profile's smoke DAG (``dvc repro`` at the papers' widths, bf16 where the profile
   trains with it) in a clone on the generated paper layout, with CUDA: every stage's training and
   evaluate's GPU columns (fp32 / fp16 runtime and peak memory of each variant, on a 32x32 LR input).
2. ``classsr``: ``bench/classsr.py --device cuda``: ClassSR batched per class vs one patch at a time,
   ClassSR / branch-O wall time (the smoke's paper-width ClassSR).
3. ``train_step``: ``bench/train_step.py`` on the smoke's data: the loop's throughput vs a plain
   PyTorch loop.

Each check runs as its own process with a time limit; one that fails or runs out of time is recorded
as such and the others still run. The JSON (default ``reports/gpu.json``) holds the device, the versions,
each check's seconds, status, printed result lines and parsed numbers: the README's "what ran where"
table is filled from it.

    bash bench/gpu.sh [--out reports/gpu.json]
    python bench/gpu.py --allow-cpu   # a developer's dry run of this script on a CPU (slow; not the GPU numbers)
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def run_check(cmd: list[str], cwd: Path, limit_s: int, env: dict | None = None) -> dict:
    """Run one check; its status (ok / failed / timeout), seconds and the last of its printed lines."""
    start = time.perf_counter()
    print(f"[gpu] {' '.join(cmd)}  (cwd {cwd}, limit {limit_s} s)", flush=True)
    try:
        out = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                             timeout=limit_s)
        status, text = ("ok" if out.returncode == 0 else f"failed (exit {out.returncode})"), out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        text = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        status = "timeout"
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip() and "it/s" not in ln and "%|" not in ln]
    result = {"status": status, "seconds": round(time.perf_counter() - start, 1), "lines": lines[-40:]}
    print(f"[gpu]   {status} in {result['seconds']} s", flush=True)
    return result


def numbers(lines: list[str], patterns: dict[str, str]) -> dict:
    """The first number each regex captures in the printed lines."""
    found = {}
    for key, pattern in patterns.items():
        for ln in lines:
            m = re.search(pattern, ln)
            if m:
                found[key] = float(m.group(1))
                break
    return found


def smoke(root: Path, limit_s: int) -> dict:
    from dag import clone_of_this_checkout
    from test_paper_smoke import paper_layout, smoke_params

    clone_of_this_checkout(root)
    paper_layout(root)
    smoke_params(root)
    bin_dir = str(Path(sys.executable).parent)
    # evaluate also times every variant on the CPU at 2 threads: an EDSR 32x256 forward at the usual 128^2
    # takes ~15 s there, seven times a variant; at 32^2 the smoke fits its limit (GPU columns at 32^2 too)
    result = run_check(["dvc", "repro"], root, limit_s, {"PATH": f"{bin_dir}:{os.environ['PATH']}",
                                                         "PIPELINE_TRACKING": "0", "PIPELINE_LATENCY_SIDE": "32"})
    result["latency_side"] = 32
    metrics = root / "metrics/evaluate.json"
    if metrics.is_file():
        variants = json.loads(metrics.read_text())["variants"]
        result["evaluate_gpu"] = {name: {k: v for k, v in m.items() if k.startswith("gpu_")} for name, m in variants.items()}
    result["stages_run"] = sum(ln.startswith("Running stage") for ln in result["lines"])
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="reports/gpu.json")
    ap.add_argument("--allow-cpu", action="store_true", help="run on a CPU too (to check this script)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit("bench/gpu.py: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); nothing run")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or 'cpu'})"
    report = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "checks": {}}
    checks = report["checks"]
    cuda = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        root = Path(tmp) / "proj"
        checks["smoke"] = smoke(root, 300)
        model = root / "models/classsr"
        classsr = [sys.executable, str(REPO / "bench/classsr.py"), "--device", cuda, "--batch", "256"]
        checks["classsr"] = run_check(classsr + (["--model", str(model)] if model.exists() else []), root, 60)
        checks["classsr"]["numbers"] = numbers(checks["classsr"]["lines"], {
            "classsr_over_branch_o_same_tiling": r"same tiling: ([\d.]+)",
            "classsr_over_branch_o_whole_image": r"whole image: ([\d.]+)",
            "batched_speedup_over_one_patch_at_a_time": r"one patch at a time .*: ([\d.]+)x"})
        checks["train_step"] = run_check([sys.executable, str(REPO / "bench/train_step.py")], root, 120)
        checks["train_step"]["numbers"] = numbers(checks["train_step"]["lines"], {
            "loop_over_plain_throughput": r"a plain PyTorch loop: ([\d.]+)"})
    report["seconds"] = round(sum(c["seconds"] for c in checks.values()), 1)
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    summary = ", ".join(f"{k}: {c['status']}" for k, c in checks.items())
    print(f"[gpu] {summary}; {report['seconds']} s; wrote {out}")
    sys.exit(0 if all(c["status"] == "ok" for c in checks.values()) else 1)


if __name__ == "__main__":
    main()
