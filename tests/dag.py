"""The reduced DAG in a clone with nothing beside it, as a user's machine has it: the helpers the DVC,
experiment and queue tests (and bench/parallel_queue.py) share."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from PIL import Image

from photos import photo
from tiny import TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ALL_STAGES = ["prepare_sr", "prepare_classsr", "prepare_test", "pretrain_teacher", "classify_patches",
              "train_branch@simple", "train_branch@medium", "train_branch@hard", "finetune_classsr",
              "compose_classsr", "ghost", "distill_csd@student", "distill_csd@control", "train_student_l1",
              "distill_pcl@student", "distill_pcl@control", "train_rfdn", "evaluate"]


def sh(cmd, cwd, check=True, tracking=False, timeout=900):
    """Run ``cmd`` in the shell as a user would, with this venv's dvc; MLflow tracking off unless
    ``tracking`` (then into the repository's own store, ``<DVC_ROOT>/mlflow.db``)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PIPELINE_TRACKING": "1" if tracking else "0"}
    # evaluate times every variant on a 128x128 input (5 forwards, and again in ONNX Runtime): 40 s of a
    # reduced evaluate that the DAG tests run 6 times; 32x32 is 26 s (the numbers are not tested)
    env.setdefault("PIPELINE_LATENCY_SIDE", "32")
    env.pop("PYTHONPATH", None)  # the clone's own code, not this checkout's
    env.pop("MLFLOW_TRACKING_URI", None)
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        env.setdefault(key, "sr-pipeline tests" if key.endswith("NAME") else "tests@localhost")  # dvc exp commits
    out = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout + out.stderr


def clone_of_this_checkout(dest: Path) -> Path:
    """``git clone`` of this repo, then this checkout's uncommitted edits on top (so a developer tests what
    they have; in CI, a fresh clone, there are none). Nothing is put beside it: no ../shared."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    changed = subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split("\n")
    for f in filter(None, changed):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
        elif (dest / f).exists():
            (dest / f).unlink()  # deleted here
    return dest


def reduce(root: Path):
    """Tiny widths and step counts; the real Set5 and E-RFDN weights the project carries stay."""
    raw = root / "raw"
    raw.mkdir()
    for name, box in [("rocket", (0, 0, 200, 260)), ("coffee", (0, 0, 160, 200))]:
        Image.fromarray(photo(name, box)).save(raw / f"{name}.png")
    text = (root / "params.yaml").read_text()
    assert "../shared" not in text
    params = yaml.safe_load(text)
    params["prepare_sr"].update(source="raw", crop_size=96, step=48, num_workers=1)
    params["prepare_classsr"].update(source="raw", rescales=[1.0, 0.8], num_workers=1)  # 11 patches: odd
    params["prepare_test"].update(num_workers=1)
    params["pretrain_teacher"]["model"]["kwargs"] = {"nf": 8, "nb": 1}
    params["pretrain_teacher"]["train"].update(TINY_TRAIN)
    params["train_branch"]["branches"] = {"simple": {"nf": 4, "nb": 1}, "medium": {"nf": 6, "nb": 1},
                                          "hard": {"nf": 8, "nb": 1}}
    params["train_branch"]["all_patches_steps"] = 2
    params["train_branch"]["hard_finetune"] = {"max_steps": 2}
    params["train_branch"]["train"].update(TINY_TRAIN)
    for phase in ("classifier", "joint"):
        params["finetune_classsr"][phase].update({**TINY_TRAIN, "max_steps": 2, "val_every": 2, "batch_size": 4})
    params["finetune_classsr"]["inference"]["budgets"] = [1.0, 0.5]
    params["ghost"]["train"].update(TINY_TRAIN)
    params["compose_classsr"]["train"].update(TINY_TRAIN)
    params["train_rfdn"]["model"]["kwargs"] = {"nf": 8, "num_blocks": 1, "attention": "esa"}
    params["train_rfdn"]["train"].update({**TINY_TRAIN, "lr_patch": 16})  # ESA needs >= 15 px
    for section in ("distill_csd", "train_student_l1", "distill_pcl"):
        params[section]["train"].update({**TINY_TRAIN, "batch_size": 2, "max_steps": 2, "val_every": 2})
    params["distill_csd"]["neg_num"] = 2
    params["distill_csd"]["layer_weights"] = [0.5, 1.0]  # the tiny teacher has one residual block
    # PyYAML writes "no" quoted; dvc exp run -S rewrites it unquoted (YAML 1.2), which the stages must read
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git add -A && git -c user.email=t@t -c user.name=t commit -qm reduced", root)


def stages_run(log: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` / `dvc queue logs` output says it ran."""
    return {s for s in ALL_STAGES if f"Running stage '{s}'" in log}


def wait_for_queue(root, timeout: float = 900) -> str:
    """Poll `dvc queue status` until nothing is queued or running; its last output."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = sh("dvc queue status", root)
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout:.0f} s:\n{status}")
