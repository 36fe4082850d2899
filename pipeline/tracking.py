"""MLflow tracking: one run per stage execution, logged from the main process only.

Store: ``MLFLOW_TRACKING_URI`` if set (e.g. a team server), else ``sqlite:///<repo root>/mlflow.db``.
The repo root comes from ``DVC_ROOT`` (set by DVC, also under ``dvc exp run --temp``, whose temporary
copy would otherwise swallow a relative store), so the runs of queued and temporary experiments land in
the repository's store, tagged ``dvc_exp_name`` and named ``<stage> [<experiment>]``. Metrics are logged
every N steps by the caller; runs end FAILED when the stage raises and KILLED when it is
stopped (SIGTERM, Ctrl-C). ``PIPELINE_TRACKING=0`` turns tracking off.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

from pipeline.params import as_flat_dict

EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME", "sr-pipeline")
# The experiment-kind tag MLflow 3's UI reads: a model-training experiment opens on its runs table.
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def repo_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    here = Path.cwd().resolve()
    for d in [here, *here.parents]:
        if (d / "dvc.yaml").exists() or (d / ".git").exists():
            return d
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def check_server(uri: str, timeout: float = 5.0):
    """Fail early, with the URI in the message, when a remote tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout)
    except Exception as e:
        raise ConnectionError(f"MLflow tracking server {uri} is unreachable ({e}); start it, fix "
                              "MLFLOW_TRACKING_URI, or unset it to use the local mlflow.db") from e


@contextmanager
def first_open_lock(uri: str):
    """Hold an exclusive lock beside a SQLite store while a process opens it: MLflow creates a new
    store's schema by migrations, and processes doing that at once crash (3 of 4 in a test); two queued
    experiments also create the experiment at the same moment. Other URIs need no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_experiment(mlflow, uri: str):
    """Point ``mlflow`` at the store and the pipeline's experiment (created, tagged, once)."""
    with first_open_lock(uri):
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.set_experiment(EXPERIMENT)
        if KIND_TAG not in experiment.tags:  # MLflow 3's UI opens an untagged experiment on its GenAI overview
            mlflow.set_experiment_tag(KIND_TAG, MODEL_TRAINING)
    return experiment


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=repo_root()).stdout.strip()
    except Exception:
        return "unknown"


def params_hash(params) -> str:
    return hashlib.sha256(json.dumps(as_flat_dict(params), sort_keys=True, default=str).encode()).hexdigest()[:12]


def mlflow_key(key: str) -> str:
    """``key`` with the characters MLflow refuses in param and metric names (anything but alphanumerics,
    ``_ - . :`` / and spaces: e.g. the parentheses of "E-RFDN official (AIM 2020)") made ``_``."""
    return re.sub(r"[^\w\-. :/]", "_", key)


class Tracker:
    """What a stage logs through. The no-op instance (``active=False``) serves non-main processes."""

    def __init__(self, mlflow=None, run_id: str = ""):
        self.mlflow, self.run_id = mlflow, run_id

    @property
    def active(self) -> bool:
        return self.mlflow is not None

    def log_metrics(self, metrics: dict, step: int | None = None):
        """Numbers, and the numbers of nested dicts as ``outer/inner`` (e.g. ``budget_1/psnr``)."""
        if self.active:
            clean = {mlflow_key(k): float(v) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)}
            clean.update({mlflow_key(f"{k}/{m}"): float(v) for k, d in metrics.items() if isinstance(d, dict)
                          for m, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            # synchronous: MLflow's async queue costs up to 1 s at the end of every run (its thread polls
            # with a 1 s timeout and end_run joins it); a write every log_every steps is a few ms here
            self.mlflow.log_metrics(clean, step=step, synchronous=True)

    def log_artifact(self, path, folder: str | None = None):
        if self.active:
            self.mlflow.log_artifact(str(path), artifact_path=folder)

    def log_dict(self, data: dict, name: str):
        if self.active:
            self.mlflow.log_dict(data, name)

    def set_tags(self, tags: dict):
        if self.active:
            self.mlflow.set_tags(tags)

    def log_table(self, rows: list[dict], name: str):
        """Rows (dicts with the same keys) as an MLflow table artifact: the UI's artifact view and
        ``mlflow.load_table`` show every variant side by side, without opening a child run."""
        if self.active and rows:
            self.mlflow.log_table({k: [r.get(k) for r in rows] for k in rows[0]}, artifact_file=name)

    def child_run(self, name: str, metrics: dict):
        """A nested run (one per compared variant) with the same metric keys, for the Compare view."""
        if self.active:
            with self.mlflow.start_run(run_name=name, nested=True, tags={"variant": name, "stage": "evaluate"}):
                self.mlflow.log_metrics({mlflow_key(k): float(v) for k, v in metrics.items() if v == v})


@contextmanager
def stage_run(stage: str, params, is_main: bool = True, resume_run_id: str = "", run_name: str = "",
              leave_open: bool = False):
    """Open the MLflow run of one stage execution (or reopen ``resume_run_id``, or continue it where it
    is still the active run); yield a Tracker. Opened inside another stage_run, it is a nested run (e.g.
    one phase of a two-phase stage). ``leave_open``: it stays the active run when the block ends (the
    stage's work after training logs to it; :func:`pipeline.stage.run` ends it if the stage fails)."""
    if not is_main or os.environ.get("PIPELINE_TRACKING", "1") == "0":
        yield Tracker()
        return
    import mlflow

    uri = tracking_uri()
    check_server(uri)
    open_experiment(mlflow, uri)
    tags = {"stage": stage, "git_commit": git_commit(), "params_hash": params_hash(params)}
    for env, tag in [("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev"),
                     ("DVC_STAGE", "dvc_stage")]:
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    active = mlflow.active_run()
    nested = active is not None
    try:
        if resume_run_id and active is not None and active.info.run_id == resume_run_id:
            run = active  # left open by the training loop: the stage's run goes on
        else:
            run = mlflow.start_run(run_id=resume_run_id, nested=nested) if resume_run_id else None
    except Exception:
        run = None  # the old run is gone (e.g. another store): start a new one
    if run is None:
        run_name = run_name or stage
        if tags.get("dvc_exp_name") and not nested:
            run_name += f" [{tags['dvc_exp_name']}]"  # the experiment's runs side by side in the runs table
        run = mlflow.start_run(run_name=run_name, tags=tags, nested=nested)
        flat = {mlflow_key(k): (json.dumps(v) if isinstance(v, (list, dict)) else v)
                for k, v in as_flat_dict(params).items()}
        mlflow.log_params(flat)
    try:
        yield Tracker(mlflow, run.info.run_id)
    except BaseException as e:
        # KeyboardInterrupt covers Ctrl-C and pipeline.stage.Stopped (SIGTERM)
        mlflow.end_run(status="KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    if not leave_open:
        mlflow.end_run(status="FINISHED")


def end_open_runs(status: str):
    """End every run a stage left open (:func:`stage_run`'s ``leave_open``) with ``status``."""
    import sys

    mlflow = sys.modules.get("mlflow")  # never imported: nothing to end
    while mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status=status)
