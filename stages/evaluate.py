"""Stage evaluate: every variant and bicubic on every prepared test set: PSNR/SSIM (Y, crop = scale;
BasicSR's protocol) and RGB PSNR on ClassSR's patch grid with per-set FLOPs (ClassSR's protocol).

Cost (the conventions: :data:`pipeline.report.COST_CONVENTIONS`): params, FLOPs per 32x32 LR patch,
MACs at 256x256 LR, CPU latency at a fixed thread count (measured on the CPU), each variant exported to
ONNX (``exports/``), checked against PyTorch and timed in ONNX Runtime, and on a GPU, when there is one,
fp32 / fp16 runtime and peak memory (the scoring then runs there too, large images in tiles).

Out: a Markdown table, ``plots/pareto.csv`` (one row per variant and test set; a DVC scatter plot, so
``dvc plots diff`` overlays the fronts of several experiments, and an MLflow table), a Pareto PNG,
side-by-side crops, DVC metrics (everything in ``metrics/evaluate.json``; the headline numbers that
``dvc exp show`` compares experiments by in ``metrics/summary.json``), and one MLflow child run per
variant."""
from pathlib import Path

from pipeline import models
from pipeline.evaluate import iter_pairs
from pipeline.files import write_json
from pipeline.params import is_model, load_section
from pipeline.report import (COST_CONVENTIONS, as_metrics, check_claims, claims_table, classsr_table, crops_figure,
                             deploy_gpu, deploy_onnx, ensemble_variant, headline, markdown_table, pareto_rows,
                             plot_pareto, reference_model, score_all, variant, write_csv)
from pipeline.stage import run
from pipeline.tracking import stage_run
from pipeline.upscale import default_device

TEST, METRICS, TABLE = "data/test", "metrics/evaluate.json", "reports/results.md"
SUMMARY = "metrics/summary.json"  # the headline numbers, what `dvc exp show` compares experiments by
PARETO, PARETO_CSV, CROPS, EXPORTS = "plots/pareto.png", "plots/pareto.csv", "plots/crops.png", "exports"


def collect_variants(cfg):
    variants = [variant("bicubic")]
    # the published rows first, all of them loaded before any work: a bad file stops the stage at once
    variants += [variant(name, reference_model(name, ref, cfg.scale)) for name, ref in cfg.references.items()]
    plain = [variant(name, models.load(folder)) for name, folder in cfg.models.items() if is_model(folder)]
    variants += plain
    if cfg.self_ensemble:
        variants += [ensemble_variant(v) for v in plain]
    for name, folder in cfg.classsr.items():
        if Path(folder).is_dir():
            model = models.load(folder)
            variants += [variant(f"{name}@{b:g}", model, b, cfg.inference) for b in cfg.inference.budgets]
    return variants


def main():
    cfg = load_section("evaluate")
    with stage_run("evaluate", cfg) as tracker:
        variants = collect_variants(cfg)  # on the CPU: each variant's cost is measured there
        Path(EXPORTS).mkdir(exist_ok=True)  # the stage's output either way
        if cfg.onnx:
            deploy_onnx(variants, EXPORTS, cfg.inference)
        else:
            (Path(EXPORTS) / "README.txt").write_text("ONNX export is off (evaluate.onnx: false)\n")
        device = default_device()
        print(f"evaluate: scoring {len(variants)} variants on {device}")
        for v in variants:
            if v.model is not None:
                v.model.to(device)
        if device == "cuda":
            deploy_gpu(variants, cfg.inference)
        sets = score_all(variants, TEST, cfg.scale, cfg.inference, cfg.pareto_set)
        metrics = {v.name: as_metrics(v) for v in variants}
        table, claims = markdown_table(variants, sets), check_claims(variants, sets)
        Path(TABLE).parent.mkdir(exist_ok=True)
        Path(TABLE).write_text(
            f"# Results (x{cfg.scale})\n\n## BasicSR protocol: Y channel, crop {cfg.scale}, whole image\n\n{table}\n"
            f"{COST_CONVENTIONS}\n"
            f"## ClassSR protocol: RGB, crop {cfg.scale}, on the region its {cfg.inference.patch}/"
            f"{cfg.inference.stride} patch grid covers; ClassSR FLOPs weighted by the set's class counts\n\n"
            f"{classsr_table(variants, sets)}\n## Each paper's claim on this run\n\n{claims_table(claims)}")
        rows = pareto_rows(variants, sets, cfg.scale, cfg.inference)
        write_csv(rows, PARETO_CSV)
        front = plot_pareto(variants, cfg.pareto_set if cfg.pareto_set in sets else sets[0], PARETO, cfg.scale)
        crops_set = cfg.crops_set if cfg.crops_set in sets else sets[0]
        crops_figure(variants, next(iter_pairs(Path(TEST) / crops_set, cfg.scale)), cfg.scale, cfg.inference, CROPS)
        write_json(METRICS, {"variants": metrics, "pareto_front": front, "claims": claims})
        write_json(SUMMARY, headline(variants, sets, claims))
        print(table)
        for v in variants:
            tracker.child_run(v.name, as_metrics(v))
        tracker.log_table(rows, "variants.json")  # every variant and set side by side in the run's artifacts
        for f in (TABLE, PARETO, PARETO_CSV, CROPS):
            tracker.log_artifact(f, "report")


if __name__ == "__main__":
    run(main)
