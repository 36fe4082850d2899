"""The DAG on a reduced config, in a clone with nothing beside it (as a user's machine): repro works and
reports the protocol numbers on the carried Set5 and E-RFDN weights, a second repro runs nothing, a
param change reruns only its stage and what depends on it, a code edit reruns exactly the stages that
import it and never resumes a checkpoint of the old code, and the multi-process stages run with 2 CPU
processes.

One reduced `dvc repro` (the session fixture ``reproduced``, tests/conftest.py) serves every test; each
test works on its own copy (``project``)."""
import json
import shutil

import numpy as np
import pytest
import yaml

from dag import ALL_STAGES, sh

pytestmark = pytest.mark.slow  # DAG runs / subprocess launches: not in `pytest -m "not slow"`


def test_clone_reproduces_with_the_protocol_numbers(reproduced):
    root, out = reproduced
    for stage in ALL_STAGES:
        assert f"Running stage '{stage}'" in out
    variants = json.loads((root / "metrics/evaluate.json").read_text())["variants"]
    for name in ["bicubic", "teacher", "branch_simple", "ghost", "csd_student", "csd_control", "student_l1", "pcl_student", "pcl_control",
                 "rfdn", "classsr@1", "classsr@0.65", "classsr_ghost_hard@1"]:
        assert "sample_psnr" in variants[name] and "Set5_psnr" in variants[name], name
    # the real Set5 and the official E-RFDN weights come from the project itself (assets/)
    assert round(variants["bicubic"]["Set5_psnr"], 3) == 28.431
    erfdn = variants["E-RFDN official (AIM 2020)"]
    assert round(erfdn["Set5_psnr"], 3) == 32.155 and round(erfdn["Set5_ssim"], 4) == 0.8945
    # the published RLFN and BSRN rows reproduce their papers' Set5 numbers in evaluate (issue 22)
    assert abs(variants["RLFN official (NTIRE 2022)"]["Set5_psnr"] - 32.24) <= 0.01
    assert abs(variants["BSRN official (NTIRE 2022)"]["Set5_psnr"] - 32.35) <= 0.01
    assert variants["RLFN official (NTIRE 2022)"]["params"] == 543_740
    assert (root / "reports/results.md").read_text().count("|") > 50 and (root / "plots/pareto.png").is_file()
    assert sorted(p.stem for p in (root / "data/test/Set5/HR").iterdir()) == ["baby", "bird", "butterfly", "head",
                                                                              "woman"]
    assert (root / "plots/train/pretrain_teacher.csv").read_text().startswith("step,data_time,l1,lr")
    # every variant exported to ONNX and equal to PyTorch there
    for name, v in variants.items():
        assert name == "bicubic" or v["onnx_max_abs_err"] < 1e-4, name
    assert (root / "exports/classsr/classifier.onnx").is_file() and (root / "exports/teacher/model.onnx").is_file()
    # the Pareto CSV: one row per variant and set, with PSNR and both cost conventions; DVC renders it as a scatter
    import csv

    with open(root / "plots/pareto.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["variant"], r["set"]) for r in rows) == sorted((v, s) for v in variants for s in ("Set5", "sample"))
    assert all(r["psnr"] and r["gflops_per_patch"] and r["gmacs_256"] for r in rows)
    shown = json.loads(sh("dvc plots show --json plots/pareto.csv", root))["data"]["plots/pareto.csv"][0]["content"]
    assert shown["mark"]["type"] == "point" and shown["encoding"]["x"]["field"] == "gmacs_256"
    assert len(shown["data"]["values"]) == len(rows)


def test_noop_then_a_param_change_reruns_only_its_stage_and_dependants(project):
    root = project
    assert "Running stage" not in sh("dvc repro", root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prepare_classsr"]["step"] = 60
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = sh("dvc status", root)
    assert "prepare_classsr" in status
    for other in ["prepare_sr:", "prepare_test:", "pretrain_teacher:"]:
        assert other not in status
    rerun = sh("dvc repro prepare_classsr", root)
    assert "Running stage 'prepare_classsr'" in rerun and rerun.count("Running stage") == 1
    status = sh("dvc status", root)
    assert "classify_patches" in status and "pretrain_teacher:" not in status and "prepare_sr:" not in status


def test_a_code_edit_reruns_its_importers_and_never_resumes_old_code(project):
    root = project
    # a docstring in the report: only evaluate is out of date, and its rerun trains nothing
    report = root / "pipeline/report.py"
    report.write_text(report.read_text().replace('"""Evaluation of every variant', '"""Evaluation (edited) of every variant', 1))
    status = sh("dvc status", root)
    assert "evaluate:" in status and status.count("changed deps") == 1, status

    # CSD's loss: both distill_csd stages (and what reads their models) rerun, trains from step 0, and the model changes
    old = (root / "models/csd_student/model.safetensors").read_bytes()
    method = root / "pipeline/methods/csd.py"
    text = method.read_text()
    assert "(l1_s + self.t_lambda * l1_t)" in text
    method.write_text(text.replace("(l1_s + self.t_lambda * l1_t)", "(2 * l1_s + self.t_lambda * l1_t)", 1))
    status = sh("dvc status", root)
    assert "distill_csd@student:" in status and "evaluate:" in status and status.count("changed deps") == 3, status
    out = sh("dvc repro", root)
    ran = {s for s in ALL_STAGES if f"Running stage '{s}'" in out}
    assert ran == {"distill_csd@student", "distill_csd@control", "evaluate"}, ran
    assert "starting fresh at step 0" in out and "the code of pipeline/methods/csd.py" in out
    assert "resuming" not in out
    assert (root / "models/csd_student/model.safetensors").read_bytes() != old


def test_two_cpu_processes_classify_and_finetune(project):
    root = project
    one = np.load(root / "data/classes/classes.npy")
    psnr_one = np.load(root / "data/classes/psnr.npy")
    assert len(one) % 2 == 1  # a patch count two processes cannot split evenly
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["classify_patches"]["num_processes"] = 2
    params["finetune_classsr"]["phases"] = ["classifier", "joint"]
    for phase in ("classifier", "joint"):
        params["finetune_classsr"][phase]["num_processes"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc repro classify_patches finetune_classsr", root)
    assert out.count("torch.distributed.run") == 3 and out.count("2 processes (MULTI_CPU)") == 2, out[-3000:]
    np.testing.assert_array_equal(np.load(root / "data/classes/classes.npy"), one)
    np.testing.assert_allclose(np.load(root / "data/classes/psnr.npy"), psnr_one, atol=1e-4)
    assert (root / "models/classsr/model.safetensors").is_file()
    assert (root / "plots/train/finetune_classsr/joint.csv").is_file()
    assert "budget_1" in json.loads((root / "metrics/finetune_classsr.json").read_text())


def test_bad_param_stops_stage_before_work(project):
    root = project
    shutil.rmtree(root / "data/sr")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prepare_sr"]["scales"] = [5]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("python -m stages.prepare_sr", root, check=False)
    assert "'prepare_sr.scales[0]': scale 5 not allowed; allowed: 2, 3, 4" in out
    assert not (root / "data/sr").exists()
