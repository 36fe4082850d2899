"""One thin entry point per DVC stage: `python -m stages.<stage>` (see dvc.yaml)."""
