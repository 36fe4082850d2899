"""The DAG on a reduced config: repro works, a second repro runs nothing, a param change reruns only
its stage and what depends on it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from PIL import Image

from photos import photo
from tiny import TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cmd, cwd, check=True):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PIPELINE_TRACKING": "0"}
    out = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out.stdout + out.stderr


def reduced_project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("tests/", "bench/")) or f == "dvc.lock" or f.startswith("metrics/"):
            continue
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, root / f)
    raw = root / "raw"
    raw.mkdir()
    for name, box in [("rocket", (0, 0, 200, 260)), ("coffee", (0, 0, 160, 200))]:
        Image.fromarray(photo(name, box)).save(raw / f"{name}.png")
    bench = root / "bench_sets" / "Set5"
    bench.mkdir(parents=True)
    Image.fromarray(photo("chelsea", (0, 0, 160, 200))).save(bench / "chelsea.png")  # LR >= a ClassSR patch
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prepare_sr"].update(source="raw", crop_size=96, step=48, num_workers=1)
    params["prepare_classsr"].update(source="raw", rescales=[1.0, 0.7], num_workers=1)
    params["prepare_test"].update(benchmark_root="bench_sets", num_workers=1)
    params["pretrain_teacher"]["model"]["kwargs"] = {"nf": 8, "nb": 1}
    params["pretrain_teacher"]["train"].update(TINY_TRAIN)
    params["train_branch"]["branches"] = {"simple": {"nf": 4, "nb": 1}, "medium": {"nf": 6, "nb": 1},
                                          "hard": {"nf": 8, "nb": 1}}
    params["train_branch"]["all_patches_steps"] = 2
    params["train_branch"]["hard_finetune"] = {"max_steps": 2}
    params["train_branch"]["train"].update(TINY_TRAIN)
    for phase in ("classifier", "joint"):
        params["finetune_classsr"][phase].update({**TINY_TRAIN, "max_steps": 2, "val_every": 2, "batch_size": 4})
    params["finetune_classsr"]["budgets"] = [1.0, 0.5]
    params["ghost"]["train"].update(TINY_TRAIN)
    params["compose_classsr"]["train"].update(TINY_TRAIN)
    params["train_rfdn"]["model"]["kwargs"] = {"nf": 8, "num_blocks": 1, "attention": "esa"}
    params["train_rfdn"]["train"].update({**TINY_TRAIN, "lr_patch": 16})  # ESA needs >= 15 px
    for section in ("distill_csd", "train_student_l1", "distill_pcl"):
        params[section]["train"].update({**TINY_TRAIN, "batch_size": 2, "max_steps": 2, "val_every": 2})
    params["distill_csd"]["neg_num"] = 2
    params["distill_csd"]["layer_weights"] = [0.5, 1.0]  # the tiny teacher has one residual block
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", root)
    return root


def test_repro_then_noop_then_only_changed_stage_reruns(tmp_path):
    root = reduced_project(tmp_path)
    out = sh("dvc repro", root)
    for stage in ["prepare_sr", "prepare_classsr", "prepare_test", "pretrain_teacher", "classify_patches",
                  "train_branch@simple", "train_branch@hard", "finetune_classsr", "compose_classsr", "ghost",
                  "distill_csd", "train_student_l1", "distill_pcl", "train_rfdn", "evaluate"]:
        assert f"Running stage '{stage}'" in out
    import json

    variants = json.loads((root / "metrics/evaluate.json").read_text())["variants"]
    for name in ["bicubic", "teacher", "branch_simple", "ghost", "csd_student", "student_l1", "pcl_student",
                 "rfdn", "classsr@1", "classsr@0.65", "classsr_ghost_hard@1"]:
        assert "sample_psnr" in variants[name] and "Set5_psnr" in variants[name], name
    assert (root / "reports/results.md").read_text().count("|") > 50 and (root / "plots/pareto.png").is_file()
    assert (root / "models/teacher/model.safetensors").is_file()
    assert (root / "data/test/Set5/LR_bicubic/X4/chelsea.png").is_file()
    assert (root / "plots/train/pretrain_teacher.csv").read_text().startswith("step,data_time,l1,lr")  # a curve

    again = sh("dvc repro", root)
    assert "Running stage" not in again

    text = (root / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["prepare_classsr"]["step"] = 60
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = sh("dvc status", root)
    assert "prepare_classsr" in status
    for other in ["prepare_sr:", "prepare_test:", "pretrain_teacher:"]:
        assert other not in status
    rerun = sh("dvc repro prepare_classsr", root)
    assert "Running stage 'prepare_classsr'" in rerun and rerun.count("Running stage") == 1
    # what depends on it is now out of date, and nothing else
    status = sh("dvc status", root)
    assert "classify_patches" in status and "pretrain_teacher:" not in status and "prepare_sr:" not in status

    # a Ghost param change makes only the Ghost stage out of date
    sh("dvc repro", root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ghost"]["ratio"] = 0.75
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = sh("dvc status", root)
    assert "ghost:" in status and status.count("changed deps") == 1


def test_bad_param_stops_stage_before_work(tmp_path):
    root = reduced_project(tmp_path)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prepare_sr"]["scales"] = [5]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("python -m stages.prepare_sr", root, check=False)
    assert "'prepare_sr.scales[0]': scale 5 not allowed; allowed: 2, 3, 4" in out
    assert not (root / "data/sr").exists()
