import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/photos.py, tests/dag.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

from dag import clone_of_this_checkout, reduce, sh  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo():
    return REPO


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """A clone in an empty folder, reduced and reproduced once per test session: (folder, dvc repro output)."""
    root = clone_of_this_checkout(tmp_path_factory.mktemp("clean") / "proj")
    assert not (root.parent / "shared").exists() and sorted(p.name for p in root.parent.iterdir()) == ["proj"]
    reduce(root)
    return root, sh("dvc repro", root)


@pytest.fixture
def project(reproduced, tmp_path):
    """This test's own copy of the reproduced clone."""
    root = tmp_path / "proj"
    shutil.copytree(reproduced[0], root, symlinks=True)
    return root
