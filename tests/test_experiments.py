"""The research loop on the reduced DAG, in a clone as a user has it: experiments queued with `-S` on two
stages and run side by side (`dvc queue start -j 2`), or run with `--temp`, rerun only the stages their
change reaches and `evaluate` (the resume state is no DVC output, so the fresh workspace DVC makes for
them does not count it as deleted); their metrics are in `dvc exp show`, their Pareto fronts in
`dvc plots diff`, their MLflow runs FINISHED in the repository's store under their names; applying one
leaves `dvc status` clean (and params.yaml as `-S` rewrote it, still read by the stages)."""
import json

import pytest

from dag import sh, stages_run, wait_for_queue

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]  # DAG runs


def mlflow_runs(root, exp_name: str) -> dict:
    """{run name: status} of the runs tagged with a DVC experiment's name in the repository's store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sr-pipeline")
    runs = client.search_runs([experiment.experiment_id], f"tags.dvc_exp_name = '{exp_name}'")
    return {r.info.run_name: r.info.status for r in runs}


def exp_metrics(root, file: str = "metrics/summary.json") -> dict:
    """{experiment name: its metrics ``file``} from `dvc exp show --json`."""
    out = {}
    for baseline in json.loads(sh("dvc exp show --json", root)):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                summary = (data.get("metrics") or {}).get(file, {}).get("data")
                if exp.get("name") and summary:
                    out[exp["name"]] = summary
    return out


def test_queued_experiments_run_side_by_side_and_rerun_only_their_stages(project):
    root = project
    sh("dvc exp run --queue -n q-ghost -S ghost.ratio=0.25", root)
    sh("dvc exp run --queue -n q-pcl -S distill_pcl.alpha=0", root)
    sh("dvc queue start -j 2", root, tracking=True)  # as users type it: no PIPELINE_JOBS
    status = wait_for_queue(root)
    assert status.count("Success") == 2, status
    logs = [sh(f"dvc queue logs {name}", root) for name in ("q-ghost", "q-pcl")]
    # the stages found the queue's two jobs themselves and took their share of the cores
    assert any("(2 jobs share this machine)" in log for log in logs), logs[0][-2000:]
    pcl = {"distill_pcl@student", "distill_pcl@control"}  # the control reads the same section
    for name, stages in [("q-ghost", {"ghost"}), ("q-pcl", pcl)]:
        log = sh(f"dvc queue logs {name}", root)
        assert stages_run(log) == stages | {"evaluate"}, (name, stages_run(log), log[-3000:])
        assert "resuming" not in log  # a changed stage in a fresh workspace starts from step 0
        runs = mlflow_runs(root, name)
        assert runs == {f"{s} [{name}]": "FINISHED" for s in stages | {"evaluate"}}, runs

    shown, full = exp_metrics(root), exp_metrics(root, "metrics/evaluate.json")
    assert {"q-ghost", "q-pcl"} <= set(shown), sorted(shown)
    for name in ("q-ghost", "q-pcl"):  # the headline is the experiment's own evaluation, every variant
        summary, variants = shown[name], full[name]["variants"]
        assert summary["psnr"]["Set5"] == {v: m["Set5_psnr"] for v, m in variants.items()}
        assert summary["flops_vs_teacher"]["teacher"] == 1.0 and "CSD_Set5" in summary["claims"]
    # the ghost experiment changed the ghost row only (its ratio: fewer intrinsic filters, fewer FLOPs; a
    # PSNR difference is no test at this size: the tiny network's outputs can round to the same bytes)
    assert shown["q-ghost"]["flops_vs_teacher"]["ghost"] < shown["q-pcl"]["flops_vs_teacher"]["ghost"]
    assert shown["q-ghost"]["psnr"]["Set5"]["teacher"] == shown["q-pcl"]["psnr"]["Set5"]["teacher"]

    # the Pareto fronts of both experiments in one plot
    plots = json.loads(sh("dvc plots diff q-ghost q-pcl --json", root))["data"]["plots/pareto.csv"][0]["content"]
    assert {row["rev"] for row in plots["data"]["values"]} == {"q-ghost", "q-pcl"}

    sh("dvc exp apply q-pcl", root)
    assert "up to date" in sh("dvc status", root)
    assert json.loads((root / "metrics/summary.json").read_text()) == shown["q-pcl"]


def test_temp_experiment_reruns_only_its_stage(project):
    """`dvc exp run --temp -S` in a fresh workspace; -S rewrites params.yaml the YAML 1.2 way
    (mixed_precision: "no" loses its quotes), which the training stage must still read."""
    root = project
    out = sh("dvc exp run --temp -n t-rfdn -S train_rfdn.train.max_steps=4", root, tracking=True)
    assert stages_run(out) == {"train_rfdn", "evaluate"}, out[-3000:]
    assert mlflow_runs(root, "t-rfdn") == {"train_rfdn [t-rfdn]": "FINISHED", "evaluate [t-rfdn]": "FINISHED"}
    assert "t-rfdn" in exp_metrics(root)
    sh("dvc exp apply t-rfdn", root)
    assert "up to date" in sh("dvc status", root)
    assert "mixed_precision: no\n" in (root / "params.yaml").read_text()  # written the YAML 1.2 way
    assert json.loads((root / "metrics/train_rfdn.json").read_text())["psnr"] > 0
    with open(root / "plots/train/train_rfdn.csv") as f:
        assert f.read().splitlines()[-1].startswith("4,")
