"""A team's DVC remote: the reproduced project is pushed to a remote (a local folder here; S3, SSH or a
shared drive alike), cloned elsewhere, pulled, and found up to date: `dvc repro` there trains nothing."""
import pytest

from dag import sh

pytestmark = pytest.mark.slow  # a DAG run (the session's reduced repro) and a second clone


def test_push_clone_pull_finds_the_dag_up_to_date(project, tmp_path):
    root, storage = project, tmp_path / "dvc-storage"
    sh(f"dvc remote add -d storage {storage} && git add -A && git commit -qm 'results and the remote'", root)
    assert "pushed" in sh("dvc push", root)
    other = tmp_path / "colleague"
    sh(f"git clone -q {root} {other}", tmp_path)
    assert not (other / "models/teacher").exists()  # models and data come from the remote, not git
    sh("dvc pull", other)
    assert (other / "models/teacher/model.safetensors").read_bytes() == \
        (root / "models/teacher/model.safetensors").read_bytes()
    assert "up to date" in sh("dvc status", other)
    assert "Running stage" not in sh("dvc repro", other)
