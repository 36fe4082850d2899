"""Claims over seeds (pipeline.claims): the aggregate's verdicts from runs whose true gains are known, its
files, and (slow) two seeds of one arm pair queued on the reduced DAG and aggregated."""
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.claims import aggregate, seed_overrides, write_outputs


def synthetic_runs(true_gains: dict, n_seeds: int, noise: float = 0.03, cost_ok: dict | None = None) -> list[dict]:
    """One summary.json ``claims`` per seed: each claim's gain its true gain plus seed noise."""
    rng = np.random.default_rng(0)
    runs = []
    for k in range(n_seeds):
        claims = {}
        for name, gain in true_gains.items():
            g = gain + noise * rng.standard_normal()
            claims[name] = {"gain_db": g, "ci_low": g - 0.1, "ci_high": g + 0.1,
                            "cost_ok": (cost_ok or {}).get(name, True)}
        runs.append({"seeds": {"distill_csd.train.seed": 13 + k, "distill_pcl.train.seed": 14 + k,
                               "ghost.train.seed": 12 + k}, "claims": claims})
    return runs


def test_known_gains_get_the_three_verdicts():
    # CSD clearly above its margin (0), PCL's true gain exactly its margin, GhostSR far below its -0.15
    rows = {r["key"]: r for r in aggregate(synthetic_runs(
        {"CSD_Set5": 0.30, "PCL_Set5": 0.0, "GhostSR_Set5": -0.60}, n_seeds=5))}
    assert rows["CSD"]["verdict"] == "holds" and rows["CSD"]["ci_low"] > 0
    assert rows["PCL"]["verdict"] == "inconclusive" and rows["PCL"]["ci_low"] < 0 < rows["PCL"]["ci_high"]
    assert rows["GhostSR"]["verdict"] == "fails" and rows["GhostSR"]["ci_high"] < -0.15
    assert rows["CSD"]["seeds"] == [13, 14, 15, 16, 17] and rows["CSD"]["n_seeds"] == 5
    assert rows["CSD"]["mean_gain_db"] == pytest.approx(np.mean(rows["CSD"]["gains_db"]), abs=1e-3)


def test_one_seed_never_decides_and_spread_widens_the_interval():
    (row,) = aggregate(synthetic_runs({"CSD_Set5": 0.30}, n_seeds=1))
    assert row["verdict"] == "inconclusive (1 seed)"
    # a positive mean, with a spread across seeds as large as CSD's measured one (+0.33 and +0.05 dB from
    # two draws of the same params): the seeds do not decide
    runs = synthetic_runs({"CSD_Set5": 0.0}, n_seeds=3)
    for run, gain in zip(runs, (0.33, 0.05, -0.04)):
        run["claims"]["CSD_Set5"]["gain_db"] = gain
    (row,) = aggregate(runs)
    assert row["verdict"] == "inconclusive" and row["mean_gain_db"] == pytest.approx(0.113, abs=1e-3)


def test_a_cost_condition_failing_in_any_run_fails_the_claim():
    runs = synthetic_runs({"ClassSR_Set5": 0.2}, n_seeds=3)
    runs[1]["claims"]["ClassSR_Set5"]["cost_ok"] = False
    (row,) = aggregate(runs)
    assert row["verdict"] == "fails"


def test_claims_absent_from_a_run_are_left_out_and_keys_with_underscores_parse():
    runs = synthetic_runs({"CSD_vs_L1_Set5": 0.2, "CSD_Set5": 0.2}, n_seeds=3)
    del runs[2]["claims"]["CSD_Set5"]
    (row,) = aggregate(runs)
    assert (row["key"], row["set"], row["reference"]) == ("CSD_vs_L1", "Set5", "student_l1")


def test_seed_overrides_move_every_arm_param_and_name_a_missing_one():
    params = {"distill_csd": {"train": {"seed": 13}}, "ghost": {"train": {"seed": 12}, "kmeans_seed": 0}}
    assert seed_overrides(params, ["CSD", "GhostSR"], 2) == {
        "distill_csd.train.seed": 15, "ghost.train.seed": 14, "ghost.kmeans_seed": 2}
    with pytest.raises(Exception, match="distill_pcl.train.seed"):
        seed_overrides(params, ["PCL"], 1)


def test_outputs_are_written_and_reload(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = aggregate(synthetic_runs({"CSD_Set5": 0.30, "PCL_Set5": 0.0, "GhostSR_Set5": -0.6}, n_seeds=3))
    write_outputs(rows, "python -m pipeline.claims --seeds 3", 12.0, "models/teacher md5 0123")
    metrics = json.loads((tmp_path / "metrics/claims.json").read_text())
    assert metrics["CSD_Set5"]["verdict"] == "holds" and metrics["CSD_Set5"]["n_seeds"] == 3
    report = (tmp_path / "reports/claims.md").read_text()
    assert "--seeds 3" in report and "models/teacher md5 0123" in report and "**fails**" in report
    assert len((tmp_path / "plots/claims.csv").read_text().splitlines()) == 1 + 3 * 3
    with Image.open(tmp_path / "plots/claims.png") as png:
        assert png.width > 400 and png.height > 100
    spec = json.loads((tmp_path / "plots/claims.vl.json").read_text())
    assert len(spec["data"]["values"]) == 9


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_two_queued_seeds_of_one_arm_pair_aggregate_on_the_reduced_dag(project):
    """Seeds 2 and 3 of PCL (its student and control, paired) queued side by side from the reproduced
    reduced DAG; only those stages and evaluate rerun; the aggregate reads all three runs. A second call
    reuses the experiments (nothing queued)."""
    from dag import sh, stages_run

    root = project
    out = sh("python -m pipeline.claims --seeds 3 --arms PCL --jobs 2", root, tracking=True, timeout=1200)
    assert out.count("claims: queued") == 2, out[-3000:]
    metrics = json.loads((root / "metrics/claims.json").read_text())
    assert {"PCL_Set5", "PCL_vs_L1_Set5"} <= set(metrics) and not any(k.startswith("CSD") for k in metrics)
    assert all(m["n_seeds"] == 3 for m in metrics.values())
    report = (root / "reports/claims.md").read_text()
    assert "| 1, 2, 3 |" in report  # the reduced DAG's seed (1), then +1, +2
    names = [line.split()[-1] for line in sh("dvc exp list --name-only", root).split() if "claims-" in line]
    assert len(names) == 2, names
    for name in names:
        assert stages_run(sh(f"dvc queue logs {name}", root)) == {"distill_pcl@student", "distill_pcl@control",
                                                                    "evaluate"}
    again = sh("python -m pipeline.claims --seeds 3 --arms PCL", root)
    assert "claims: queued" not in again
    assert json.loads((root / "metrics/claims.json").read_text()) == metrics
