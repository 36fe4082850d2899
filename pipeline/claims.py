"""Each paper's claim over seeds: its arms (the method and its control, paired by seed: the same data draw
and start) rerun N times, and one verdict from the spread of the paired gains.

    python -m pipeline.claims --seeds 3 [--jobs 2] [--arms CSD,PCL,GhostSR,ClassSR] [--rerun]

Seed 1 is the workspace's own run (``dvc repro`` first: its ``metrics/summary.json`` is read as it is).
Seeds 2..N are DVC experiments queued from the workspace with each arm's seed params moved by +1, +2, ...
(:data:`ARMS`), run by ``dvc queue start -j JOBS`` side by side; DVC reruns only the stages those params
reach, and ``evaluate``. An experiment of the same baseline, params and arms is reused, not rerun
(``--rerun`` reruns it). The teacher and everything upstream of the arms are held fixed: every verdict is
conditional on this workspace's teacher.

Per claim and test set: the paired gain of each seed, their mean, its 95 % t-interval over seeds, and
each run's own interval over the set's images. Verdict: **holds** when the interval over seeds clears
the paper's margin, **fails** when it lies wholly below (or a cost condition fails in a run),
**inconclusive** otherwise. Written to ``reports/claims.md``, ``metrics/claims.json`` (``dvc metrics
show``), ``plots/claims.csv`` and ``plots/claims.png`` (one Vega-Lite spec, ``plots/claims.vl.json``, its
source), and one MLflow run ("claims")."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.files import write_json
from pipeline.params import ParamError, read_params
from pipeline.report import CLAIMS, paired_interval, verdict

# The params that draw one arm pair: the data order and start of the method and of its control, which
# read the same section (distill_csd@student/@control, distill_pcl@student/@control); GhostSR's and
# ClassSR's references (the teacher, branch-O) are held fixed, their own training redrawn.
ARMS = {
    "CSD": ["distill_csd.train.seed"],
    "PCL": ["distill_pcl.train.seed"],
    "GhostSR": ["ghost.train.seed", "ghost.kmeans_seed"],
    "ClassSR": ["finetune_classsr.classifier.seed"],
}
SUMMARY, REPORT, METRICS = "metrics/summary.json", "reports/claims.md", "metrics/claims.json"
CSV, SPEC, PNG = "plots/claims.csv", "plots/claims.vl.json", "plots/claims.png"


def dvc(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and out.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return out


def lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamError(f"params.yaml: {dotted} is missing (pipeline.claims moves it per seed)")
        node = node[part]
    return node


def seed_overrides(params: dict, arms: list[str], k: int) -> dict[str, int]:
    """The ``-S`` overrides of seed index ``k`` (0 = the workspace): every arm's seed params + k."""
    return {key: int(lookup(params, key)) + k for arm in arms for key in ARMS[arm]}


def experiment_name(arms: list[str], k: int) -> str:
    """Names tie an experiment to its baseline commit, params.yaml and arms, so a rerun reuses it."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256((head + Path("params.yaml").read_text() + ",".join(arms)).encode()).hexdigest()[:8]
    return f"claims-{digest}-s{k + 1}"


def experiment_summaries() -> dict[str, dict]:
    """{experiment name: its metrics/summary.json} from ``dvc exp show``."""
    out = {}
    for baseline in json.loads(dvc("exp", "show", "--json").stdout):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                summary = ((rev.get("data") or {}).get("metrics") or {}).get(SUMMARY, {}).get("data")
                if exp.get("name") and summary:
                    out[exp["name"]] = summary
    return out


def run_queue(names: list[str], jobs: int, timeout_s: float = 4 * 3600):
    """``dvc queue start -j jobs`` (each experiment's stages take their share of the cores:
    :func:`pipeline.cores.queue_jobs`) and wait for ``names``."""
    dvc("queue", "start", "-j", str(jobs))
    deadline, last = time.time() + timeout_s, ""
    while time.time() < deadline:
        lines = [line for line in dvc("queue", "status").stdout.splitlines() if any(n in line for n in names)]
        progress = f"{sum('Success' in line for line in lines)}/{len(names)} done"
        if progress != last:
            print(f"claims: {progress}", flush=True)
            last = progress
        if not any(word in line for line in lines for word in ("Queued", "Running")):
            failed = [n for n in names if any(n in line and "Failed" in line for line in lines)]
            if failed:
                log = dvc("queue", "logs", failed[0], check=False).stdout
                raise RuntimeError(f"experiment {failed[0]} failed (dvc queue logs {failed[0]}):\n{log[-3000:]}")
            return
        time.sleep(5)
    raise RuntimeError(f"the queued seeds did not finish in {timeout_s:.0f} s (dvc queue status)")


def aggregate(runs: list[dict], confidence: float = 0.95) -> list[dict]:
    """One row per claim and set present in every run. ``runs``: [{"seeds": {param: value}, "claims":
    summary.json's claims}], one per seed. The interval is over seeds (each seed one paired gain)."""
    texts = {c.key or c.paper: c for c in CLAIMS}
    common = set.intersection(*(set(r["claims"]) for r in runs)) if runs else set()
    rows = []
    for name in sorted(common):
        key, test_set = next((k, name[len(k) + 1:]) for k in sorted(texts, key=len, reverse=True)
                             if name.startswith(k + "_"))
        c, per_run = texts[key], [r["claims"][name] for r in runs]
        gains = np.array([p["gain_db"] for p in per_run])
        low, high = paired_interval(gains, confidence)
        cost_ok = all(p.get("cost_ok", True) for p in per_run)
        call = verdict(low, high, c.min_gain_db, cost_ok)
        params = ARMS.get(c.paper, [])
        rows.append({"key": key, "paper": c.paper, "claim": c.text, "set": test_set, "variant": c.variant,
                     "reference": c.reference, "n_seeds": len(runs), "gains_db": gains.round(4).tolist(),
                     "mean_gain_db": float(gains.mean()), "ci_low": low, "ci_high": high, "margin_db": c.min_gain_db,
                     "cost_ok": cost_ok, "verdict": call if len(runs) > 1 or call != "inconclusive"
                     else "inconclusive (1 seed)",
                     "seeds": [r["seeds"].get(params[0]) for r in runs] if params else [],
                     "image_intervals": [(p.get("ci_low", float("-inf")), p.get("ci_high", float("inf")))
                                         for p in per_run]})
    return rows


def fmt_interval(low: float, high: float) -> str:
    return f"[{low:+.3f}, {high:+.3f}]" if np.isfinite(low) and np.isfinite(high) else "n/a"


def markdown(rows: list[dict], command: str, seconds: float, teacher: str, reused: list[str] = ()) -> str:
    took = (f"{seconds:.0f} s here" if not reused else
            f"seeds 2–{len(reused) + 1} reused from the queued experiments {', '.join(reused)}")
    lines = [f"# Claims over seeds\n",
             f"`{command}` ({took}). Each row: the method against its control, paired by seed "
             f"(the same data draw and start); the gain per seed, their mean and its 95 % t-interval over "
             f"seeds; each run's own 95 % interval over the set's images; the verdict from the interval over "
             f"seeds against the paper's margin. All conditional on one teacher ({teacher}), held fixed.\n",
             "| paper | claim | set | variant vs reference | seeds | gain per seed (dB) | mean (dB) | 95 % interval "
             "(seeds) | per-run image intervals | margin | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        call = r["verdict"] if r["verdict"] != "fails" else "**fails**" + ("" if r["cost_ok"] else " (FLOPs)")
        lines.append(f"| {r['paper']} | {r['claim']} | {r['set']} | {r['variant']} vs {r['reference']} | "
                     f"{', '.join(str(s) for s in r['seeds'] if s is not None) or '—'} | {', '.join(f'{g:+.3f}' for g in r['gains_db'])} | "
                     f"{r['mean_gain_db']:+.3f} | {fmt_interval(r['ci_low'], r['ci_high'])} | "
                     f"{'; '.join(fmt_interval(*i) for i in r['image_intervals'])} | {r['margin_db']:+.2f} | {call} |")
    return "\n".join(lines) + "\n"


def vega_spec(rows: list[dict]) -> dict:
    """Per claim and set: each seed's gain (points), the interval over seeds (a rule), the margin (a tick)."""
    values = [{"claim": f"{r['key']} · {r['set']}", "verdict": r["verdict"], "gain_db": g, "seed": str(s),
               "ci_low": r["ci_low"] if np.isfinite(r["ci_low"]) else None,
               "ci_high": r["ci_high"] if np.isfinite(r["ci_high"]) else None,
               "mean_gain_db": r["mean_gain_db"], "margin_db": r["margin_db"]}
              for r in rows for g, s in zip(r["gains_db"], r["seeds"] or [None] * len(r["gains_db"]))]
    y = {"field": "claim", "type": "nominal", "title": None}
    color = {"field": "verdict", "type": "nominal", "scale": {
        "domain": ["holds", "inconclusive", "inconclusive (1 seed)", "fails"],
        "range": ["#2ca02c", "#7f7f7f", "#bdbdbd", "#d62728"]}}
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "width": 420,
            "title": "Paired gain over its control, per seed; 95 % interval over seeds; | = paper's margin",
            "data": {"values": values}, "layer": [
                {"mark": {"type": "rule", "strokeWidth": 2}, "encoding": {
                    "y": y, "x": {"field": "ci_low", "type": "quantitative", "title": "ΔPSNR (dB)"},
                    "x2": {"field": "ci_high"}, "color": color}},
                {"mark": {"type": "point", "filled": True, "opacity": 0.7}, "encoding": {
                    "y": y, "x": {"field": "gain_db", "type": "quantitative"}, "color": color}},
                {"mark": {"type": "tick", "color": "black", "thickness": 2}, "encoding": {
                    "y": y, "x": {"field": "margin_db", "type": "quantitative"}}}]}


def write_outputs(rows: list[dict], command: str, seconds: float, teacher: str, reused: list[str] = ()):
    Path(REPORT).parent.mkdir(parents=True, exist_ok=True)
    Path(REPORT).write_text(markdown(rows, command, seconds, teacher, reused))
    write_json(METRICS, {f"{r['key']}_{r['set']}": {
        "mean_gain_db": r["mean_gain_db"], "n_seeds": r["n_seeds"], "verdict": r["verdict"],
        **{k: r[k] for k in ("ci_low", "ci_high") if np.isfinite(r[k])}} for r in rows})
    Path(CSV).parent.mkdir(parents=True, exist_ok=True)
    with open(CSV, "w") as f:
        f.write("claim,set,seed,gain_db\n")
        for r in rows:
            for g, s in zip(r["gains_db"], r["seeds"] or [""] * len(r["gains_db"])):
                f.write(f"{r['key']},{r['set']},{s},{g}\n")
    spec = vega_spec(rows)
    write_json(SPEC, spec)
    import vl_convert

    Path(PNG).write_bytes(vl_convert.vegalite_to_png(spec, scale=2))


def log_to_mlflow(rows: list[dict], n_seeds: int):
    if os.environ.get("PIPELINE_TRACKING", "1") == "0":
        return
    import mlflow

    from pipeline.tracking import check_server, mlflow_key, open_experiment, tracking_uri

    uri = tracking_uri()
    check_server(uri)
    open_experiment(mlflow, uri)
    with mlflow.start_run(run_name=f"claims ({n_seeds} seeds)", tags={"stage": "claims"}):
        mlflow.log_metrics({mlflow_key(f"{r['key']}_{r['set']}/{k}"): float(r[k]) for r in rows
                            for k in ("mean_gain_db", "ci_low", "ci_high") if np.isfinite(r[k])})
        for path in (REPORT, METRICS, CSV, PNG):
            mlflow.log_artifact(path)


def teacher_version() -> str:
    """The teacher as dvc.lock pins it (its output's md5), to state what the claims are conditional on."""
    import yaml

    try:
        lock = yaml.safe_load(Path("dvc.lock").read_text())
        out = next(o for o in lock["stages"]["pretrain_teacher"]["outs"] if o["path"] == "models/teacher")
        return f"models/teacher md5 {out['md5'][:12]}"
    except Exception:
        return "models/teacher of this workspace"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pipeline.claims", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds per arm, the workspace's own run included")
    ap.add_argument("--jobs", type=int, default=1, help="queued experiments run side by side")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--rerun", action="store_true", help="rerun seeds whose experiments already exist")
    args = ap.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        ap.error(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    if args.seeds < 1 or args.jobs < 1:
        ap.error("--seeds and --jobs must be >= 1")
    params = read_params()
    overrides = [seed_overrides(params, arms, k) for k in range(args.seeds)]  # names a missing key first
    if dvc("status", "--quiet", check=False).returncode != 0:
        raise SystemExit("pipeline.claims: the workspace is not up to date (`dvc status`): run `dvc repro` "
                         "first; its run is seed 1 of every arm")
    t0 = time.perf_counter()
    names = [experiment_name(arms, k) for k in range(1, args.seeds)]
    existing = experiment_summaries() if names else {}
    todo = [(n, o) for n, o in zip(names, overrides[1:]) if args.rerun or n not in existing]
    for name, o in todo:
        dvc("exp", "remove", name, check=False)  # a failed or --rerun one of the same name
        dvc("queue", "remove", name, check=False)
        dvc("exp", "run", "--queue", "-n", name, *(f"-S{k}={v}" for k, v in o.items()))
        print(f"claims: queued {name} ({', '.join(f'{k}={v}' for k, v in o.items())})", flush=True)
    if todo:
        run_queue([n for n, _ in todo], args.jobs)
        existing = experiment_summaries()
    summaries = [json.loads(Path(SUMMARY).read_text())] + [existing[n] for n in names]
    runs = [{"seeds": o, "claims": s.get("claims", {})} for o, s in zip(overrides, summaries)]
    rows = aggregate([{**r, "claims": {k: v for k, v in r["claims"].items()
                                       if k.split("_")[0] in arms}} for r in runs])
    seconds = time.perf_counter() - t0
    command = "python -m pipeline.claims " + " ".join(argv if argv is not None else sys.argv[1:])
    write_outputs(rows, command.strip(), seconds, teacher_version(), [] if todo else names)
    log_to_mlflow(rows, args.seeds)
    for r in rows:
        print(f"{r['key']:>10} {r['set']:>8}: {r['mean_gain_db']:+.3f} dB "
              f"{fmt_interval(r['ci_low'], r['ci_high'])} -> {r['verdict']}")
    print(f"claims: {REPORT}, {METRICS}, {PNG} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
