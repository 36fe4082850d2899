"""The MLflow UI on the project's store, opened where a researcher needs it: the runs table.

    python -m pipeline.ui                     # serve the store on 127.0.0.1:5000 and print the address
    python -m pipeline.ui --exp tiny-ghost    # the address of one DVC experiment's runs
    python -m pipeline.ui --port 5001

The store is the pipeline's (:func:`pipeline.tracking.tracking_uri`: ``MLFLOW_TRACKING_URI`` or the
repository's ``mlflow.db``). A tracking server needs no second UI: its runs-table address is printed.
MLflow 3's UI opens an experiment on its GenAI overview unless this browser chose otherwise before
(the choice lives in the browser's local storage, mlflow/mlflow#24498), so the address printed is the
runs table's own, ``#/experiments/<id>/runs``; ``--exp`` adds the search filter on ``dvc_exp_name``.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.tracking import EXPERIMENT, open_experiment, tracking_uri


def runs_address(base: str, experiment_id: str, exp_name: str = "") -> str:
    """The runs table of the experiment, filtered to one DVC experiment's runs when ``exp_name`` is set."""
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    if exp_name:
        url += "?" + urllib.parse.urlencode({"searchFilter": f"tags.dvc_exp_name = '{exp_name}'"},
                                            quote_via=urllib.parse.quote)
    return url


def wait_for(base: str, proc: subprocess.Popen, timeout: float = 90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: mlflow ui exited with code {proc.returncode} before it answered on {base}")
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            return
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit(f"error: mlflow ui did not answer on {base} within {timeout:.0f} s")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pipeline.ui", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--exp", default="", help="a DVC experiment's name: show only its runs")
    args = ap.parse_args(argv)

    import mlflow

    uri = tracking_uri()
    experiment = open_experiment(mlflow, uri)  # creates the store and experiment if no stage ran yet
    if uri.startswith(("http://", "https://")):
        print(runs_address(uri, experiment.experiment_id, args.exp), flush=True)
        return
    base = f"http://{args.host}:{args.port}"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "ui", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(args.port), "--workers", "1"]
    # its own process group, so the server's workers end with it; without the job runner (7 processes
    # for GenAI judges and scorers, which a training project never queues)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True, env=env)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        wait_for(base, proc)
        print(f"MLflow UI on {uri}, experiment '{EXPERIMENT}'. Its runs table:", flush=True)
        print(runs_address(base, experiment.experiment_id, args.exp), flush=True)
        print("(Ctrl-C stops the UI)", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
