"""The end of a training stage, on the main process: save the model, write its metrics file, and add
both to the stage's MLflow run (the one the training loop opened)."""
from __future__ import annotations

from pathlib import Path

from pipeline import models
from pipeline.files import write_json
from pipeline.tracking import stage_run


def deliver(stage: str, params, model, out: str, metrics_path: str, metrics: dict, run_id: str = ""):
    """Save ``model`` into ``out``, write ``metrics`` to ``metrics_path`` (a DVC metrics file), and log
    the metrics and the model's config to the MLflow run ``run_id``."""
    models.save(model, out)
    write_json(metrics_path, metrics)
    with stage_run(stage, params, resume_run_id=run_id) as tracker:
        tracker.log_metrics(metrics)
        tracker.log_artifact(Path(out) / "config.json", "model")
