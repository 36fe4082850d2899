"""The evaluation report's pieces."""

import numpy as np
import pytest

from pipeline.report import Variant, markdown_table, pareto_front


def test_pareto_front_keeps_only_non_dominated_variants():
    pts = [("a", 1.0, 30.0), ("b", 2.0, 29.0), ("c", 2.0, 31.0), ("d", 0.5, 28.0), ("e", 3.0, 31.0)]
    assert sorted(pareto_front(pts)) == ["a", "c", "d"]


def test_markdown_table_has_a_row_per_variant_and_a_column_per_set():
    vs = [Variant("bicubic", scores={"Set5": {"psnr": 28.431, "ssim": 0.8113}}),
          Variant("net", None, 1.0, 1234, 2e9, 0.05, {"Set5": {"psnr": 30.0, "ssim": 0.85}}, macs_256=64e9,
                  deploy={"ort_latency_s": 0.04})]
    table = markdown_table(vs, ["Set5"])
    lines = table.strip().splitlines()
    assert len(lines) == 4 and "Set5 PSNR / SSIM" in lines[0] and "GMACs @ 256²" in lines[0]
    assert "thr)" in lines[0] and "ORT ms" in lines[0]  # the thread count is stated
    assert "| net | 1,234 | 2.000 | 64.00 | 50.0 | 40.0 | 30.000 / 0.8500 |" in table
    assert "28.431 / 0.8113" in lines[2] and "| bicubic | 0 | 0.000 | 0.00 |  |  |" in lines[2]  # no latency for bicubic


def test_pareto_labels_do_not_overlap(tmp_path):
    """Ten variants crowded at nearly the same cost and PSNR: every label box is apart from the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.report import place_labels, text_box

    fig, ax = plt.subplots(figsize=(9, 6))
    pts = [(f"variant_number_{i}", 10 + 0.1 * i, 30 + 0.01 * i) for i in range(10)]
    for _, x, y in pts:
        ax.scatter(x, y)
    ax.set_xscale("log")
    fig.tight_layout()
    place_labels(ax, fig, pts)
    renderer = fig.canvas.get_renderer()
    boxes = [text_box(t, renderer) for t in ax.texts]
    frame = ax.get_window_extent(renderer)
    assert len(boxes) == 10
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)  # none pushed out
    plt.close(fig)


def test_both_protocols_and_patch_weighted_flops_per_set(tmp_path):
    """Per set: Y PSNR on the whole image (BasicSR), RGB PSNR on ClassSR's own grid region (its tables), and
    a ClassSR's FLOPs weighted by the class counts of all the set's patches, not by image."""
    import numpy as np
    import torch

    from pipeline import models
    from pipeline.data.images import bicubic_downscale, read_image, write_png
    from pipeline.metrics import psnr
    from pipeline.params import ClassSRInference
    from pipeline.report import as_metrics, classsr_table, score_all, variant
    from pipeline.upscale import branch_flops, upscale

    rng = np.random.default_rng(0)
    hrs = {"big": rng.integers(128, 256, (4 * 101, 4 * 150, 3), dtype=np.uint8),  # a 3 x 5 grid, the remainder dropped
           "small": rng.integers(0, 100, (4 * 40, 4 * 40, 3), dtype=np.uint8)}  # 1 patch
    for name, hr in hrs.items():
        (tmp_path / "toy/HR").mkdir(parents=True, exist_ok=True)
        (tmp_path / "toy/LR_bicubic/X4").mkdir(parents=True, exist_ok=True)
        write_png(tmp_path / "toy/HR" / f"{name}.png", hr)
        write_png(tmp_path / "toy/LR_bicubic/X4" / f"{name}.png", bicubic_downscale(hr, 4))
    torch.manual_seed(0)
    classsr = models.build("classsr", 4, branch_arch="msrresnet",
                           branches=[{"nf": 4, "nb": 1}, {"nf": 6, "nb": 1}, {"nf": 8, "nb": 1}]).eval()

    class ByBrightness(torch.nn.Module):  # bright patches -> hard, dark -> simple
        def forward(self, x):
            bright = (x.mean(dim=(1, 2, 3)) > 0.5).float()
            return torch.stack([1 - bright, torch.zeros_like(bright), bright], 1) * 10

    classsr.classifier = ByBrightness()
    inference = ClassSRInference(patch=32, stride=28, budgets=[1.0], infer_batch=8)
    vs = [variant("bicubic"), variant("classsr@1", classsr, 1.0, inference)]
    score_all(vs, tmp_path, 4, inference, flops_set="toy")
    m = as_metrics(vs[1])
    for key in ("toy_psnr", "toy_ssim", "toy_psnr_rgb", "toy_flops_per_patch", "toy_flops_percent"):
        assert key in m, key
    assert "toy_psnr_rgb" in as_metrics(vs[0])
    outs = {n: upscale(classsr, read_image(tmp_path / f"toy/LR_bicubic/X4/{n}.png"), cover_all=False) for n in hrs}
    assert outs["big"].image.shape[:2] == (4 * 88, 4 * 144)  # rows 0, 28, 56; columns 0 ... 112
    rgb = [psnr(o.image, hrs[n][:o.image.shape[0], :o.image.shape[1]], 4, y_channel=False) for n, o in outs.items()]
    assert m["toy_psnr_rgb"] == pytest.approx(np.mean(rgb), abs=1e-9)
    fl = branch_flops(classsr)
    assert outs["big"].classes.tolist() == [2] * 15 and outs["small"].classes.tolist() == [0]
    expected = (15 * fl[2] + fl[0]) / 16  # by patch; by image it would be (fl[2] + fl[0]) / 2
    assert m["toy_flops_per_patch"] == pytest.approx(expected)
    assert m["toy_flops_percent"] == pytest.approx(100 * expected / fl[-1])
    assert vs[1].flops_per_patch == pytest.approx(expected)
    assert "toy RGB PSNR" in classsr_table(vs, ["toy"])
    # the Pareto CSV: a row per variant and set, both cost conventions; a ClassSR's 256^2 MACs are its
    # 9 x 9 overlapping patches at the set's class mix (this classifier has no MACs)
    import csv

    from pipeline.report import pareto_rows, write_csv

    write_csv(pareto_rows(vs, ["toy"], 4, inference), tmp_path / "pareto.csv")
    with open(tmp_path / "pareto.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["set"]) for r in rows] == [("bicubic", "toy"), ("classsr@1", "toy")]
    assert float(rows[1]["psnr"]) == pytest.approx(m["toy_psnr"], abs=1e-4)
    assert float(rows[1]["gflops_per_patch"]) == pytest.approx(expected / 1e9, abs=1e-5)
    assert float(rows[1]["gmacs_256"]) == pytest.approx(81 * expected / 2 / 1e9, abs=1e-4)
    assert rows[1]["pareto"] == "True"


def test_claims_are_checked_per_set_with_their_own_protocol():
    from pipeline.report import check_claims, claims_table

    offsets = [-0.5, 0.2, 0.3]  # per image, the same for every variant: each paired difference is exact

    def v(name, psnr, rgb, flops, **extra):
        return Variant(name, None, 1.0, 1, flops, 0.01, {"Set5": {"psnr": psnr, "ssim": 0.9, "psnr_rgb": rgb, **extra}},
                       per_image={"Set5": {"psnr": [psnr + o for o in offsets], "psnr_rgb": [rgb + o for o in offsets]}})

    vs = [v("student_l1", 29.00, 30.0, 1e8), v("csd_student", 29.01, 30.0, 1e8), v("pcl_student", 28.99, 30.0, 1e8),
          v("csd_control", 29.02, 30.0, 1e8), v("pcl_control", 28.98, 30.0, 1e8),
          v("teacher", 30.0, 31.0, 1e9), v("ghost", 29.80, 30.9, 8e8),
          v("branch_O_hard", 30.0, 31.30, 1e9), v("classsr@1", 29.0, 31.27, 8e8, flops_per_patch=8e8)]
    rows = {r["key"]: r for r in check_claims(vs, ["Set5"])}
    # a method's claim is judged against its own control; the L1 student is context
    assert rows["CSD"]["reference"] == "csd_control" and rows["PCL"]["reference"] == "pcl_control"
    assert not rows["CSD"]["holds"] and rows["CSD_vs_L1"]["holds"]
    assert rows["PCL"]["holds"] and not rows["PCL_vs_L1"]["holds"] and not rows["GhostSR"]["holds"]
    # ClassSR is judged by its own protocol (RGB on its grid: -0.03 dB), not the Y whole-image -1 dB
    assert rows["ClassSR"]["gain_db"] == pytest.approx(-0.03) and rows["ClassSR"]["holds"]
    assert rows["ClassSR"]["flops_ratio"] == pytest.approx(0.8)
    assert "| PCL |" in claims_table(list(rows.values())) and "**fails**" in claims_table(list(rows.values()))
    assert check_claims(vs[:1], ["Set5"]) == []  # claims whose variants are absent are skipped


@pytest.mark.parametrize("true_gain, expected", [(0.3, "holds"), (0.0, "inconclusive (1 seed)"), (-0.3, "fails")])
def test_one_runs_verdict_comes_from_the_per_image_interval(true_gain, expected):
    """Synthetic per-image scores with a known true gain and per-image noise: clearly positive holds,
    zero is inconclusive (one draw of five images does not decide), clearly negative fails."""
    from pipeline.report import check_claims, paired_interval

    rng = np.random.default_rng(0)
    base = 30 + rng.normal(0, 1, 5)  # the images' own difficulty: cancels in the pairs
    noise = np.array([0.05, -0.04, 0.03, -0.05, 0.01])
    ref = Variant("csd_control", None, 1.0, 1, 1e8, 0.01, {"Set5": {"psnr": float(base.mean()), "ssim": 0.9,
                  "psnr_rgb": 0.0}}, per_image={"Set5": {"psnr": list(base), "psnr_rgb": [0.0] * 5}})
    ours = base + true_gain + noise
    v = Variant("csd_student", None, 1.0, 1, 1e8, 0.01, {"Set5": {"psnr": float(ours.mean()), "ssim": 0.9,
                "psnr_rgb": 0.0}}, per_image={"Set5": {"psnr": list(ours), "psnr_rgb": [0.0] * 5}})
    (row,) = [r for r in check_claims([ref, v], ["Set5"]) if r["key"] == "CSD"]
    assert row["verdict"] == expected and row["ci_low"] <= row["gain_db"] <= row["ci_high"]
    low, high = paired_interval(ours - base)
    assert (low, high) == (row["ci_low"], row["ci_high"]) and high - low == pytest.approx(
        2 * 2.776 * noise.std(ddof=1) / np.sqrt(5), rel=1e-3)  # t(0.975, 4) = 2.776


def test_classsr_grid_covers_an_image_smaller_than_a_patch_whole():
    from pipeline.evaluate import grid_side

    assert grid_side(100) == 88 and grid_side(24) == 24 and grid_side(32) == 32


def test_variant_table_is_an_mlflow_table_of_the_run(tmp_path, monkeypatch):
    """What Compare would need clicks through child runs for: every variant and set in one table."""
    import mlflow

    from pipeline.params import Evaluate
    from pipeline.tracking import KIND_TAG, MODEL_TRAINING, stage_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_TRACKING", "1")
    rows = [{"variant": "teacher", "set": "Set5", "psnr": 30.1, "gmacs_256": 6.5},
            {"variant": "ghost", "set": "Set5", "psnr": 29.9, "gmacs_256": 5.7}]
    with stage_run("evaluate", Evaluate()) as tracker:
        tracker.log_table(rows, "variants.json")
        run_id = tracker.run_id
    mlflow.set_tracking_uri(uri)
    table = mlflow.load_table("variants.json", run_ids=[run_id])
    assert table["variant"].tolist() == ["teacher", "ghost"] and table["gmacs_256"].tolist() == [6.5, 5.7]
    assert mlflow.MlflowClient(uri).get_experiment_by_name("sr-pipeline").tags[KIND_TAG] == MODEL_TRAINING


def test_the_evaluate_section_and_variant_names_log_to_mlflow(tmp_path, monkeypatch, repo):
    """The default's reference rows are named "E-RFDN official (AIM 2020)" and the like; MLflow refuses
    parentheses in param and metric names, which stopped `evaluate` under tracking. Keys are made safe."""
    import mlflow

    from pipeline.params import load_section
    from pipeline.tracking import stage_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_TRACKING", "1")
    cfg = load_section("evaluate", path=repo / "params.yaml")
    assert any("(" in name for name in cfg.references)
    with stage_run("evaluate", cfg) as tracker:
        tracker.log_metrics({"E-RFDN official (AIM 2020)": {"psnr": 32.155}})
        tracker.child_run("E-RFDN official (AIM 2020)", {"Set5 (x4)_psnr": 32.155})
        run_id = tracker.run_id
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert run.data.params["references.E-RFDN official _AIM 2020_.path"] == "assets/weights/e-rfdn-aim2020-x4.safetensors"
    assert run.data.metrics["E-RFDN official _AIM 2020_/psnr"] == 32.155
