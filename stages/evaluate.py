"""Stage evaluate: every variant and bicubic on every prepared test set: PSNR/SSIM (Y, crop = scale;
BasicSR's protocol) and RGB PSNR on ClassSR's patch grid with per-set FLOPs (ClassSR's protocol),
params, FLOPs per 32x32 LR patch, CPU latency (measured on the CPU; the scoring runs on the GPU when
there is one, large images in tiles); a Markdown table, a Pareto plot, side-by-side crops,
DVC metrics, and one MLflow child run per variant (so the UI's Compare view lines them up)."""
from pathlib import Path

from pipeline import models
from pipeline.evaluate import iter_pairs
from pipeline.files import write_json
from pipeline.params import is_model, load_section
from pipeline.report import (as_metrics, check_claims, claims_table, classsr_table, crops_figure, markdown_table,
                             plot_pareto, score_all, variant)
from pipeline.stage import run
from pipeline.tracking import stage_run
from pipeline.upscale import default_device

TEST, METRICS, TABLE = "data/test", "metrics/evaluate.json", "reports/results.md"
PARETO, CROPS = "plots/pareto.png", "plots/crops.png"


def collect_variants(cfg):
    variants = [variant("bicubic")]
    if cfg.official_erfdn and Path(cfg.official_erfdn).is_file():
        variants.append(variant("E-RFDN official (AIM 2020)", models.import_official("erfdn", cfg.official_erfdn)))
    variants += [variant(name, models.load(folder)) for name, folder in cfg.models.items() if is_model(folder)]
    for name, folder in cfg.classsr.items():
        if Path(folder).is_dir():
            model = models.load(folder)
            variants += [variant(f"{name}@{b:g}", model, b, cfg.inference) for b in cfg.inference.budgets]
    return variants


def main():
    cfg = load_section("evaluate")
    with stage_run("evaluate", cfg) as tracker:
        variants = collect_variants(cfg)  # on the CPU: each variant's cost is measured there
        device = default_device()
        print(f"evaluate: scoring {len(variants)} variants on {device}")
        for v in variants:
            if v.model is not None:
                v.model.to(device)
        sets = score_all(variants, TEST, cfg.scale, cfg.inference, cfg.pareto_set)
        metrics = {v.name: as_metrics(v) for v in variants}
        table, claims = markdown_table(variants, sets), check_claims(variants, sets)
        Path(TABLE).parent.mkdir(exist_ok=True)
        Path(TABLE).write_text(
            f"# Results (x{cfg.scale})\n\n## BasicSR protocol: Y channel, crop {cfg.scale}, whole image\n\n{table}\n"
            f"## ClassSR protocol: RGB, crop {cfg.scale}, on the region its {cfg.inference.patch}/"
            f"{cfg.inference.stride} patch grid covers; ClassSR FLOPs weighted by the set's class counts\n\n"
            f"{classsr_table(variants, sets)}\n## Each paper's claim on this run\n\n{claims_table(claims)}")
        Path(PARETO).parent.mkdir(exist_ok=True)
        front = plot_pareto(variants, cfg.pareto_set if cfg.pareto_set in sets else sets[0], PARETO, cfg.scale)
        crops_set = cfg.crops_set if cfg.crops_set in sets else sets[0]
        crops_figure(variants, next(iter_pairs(Path(TEST) / crops_set, cfg.scale)), cfg.scale, cfg.inference, CROPS)
        write_json(METRICS, {"variants": metrics, "pareto_front": front, "claims": claims})
        print(table)
        for v in variants:
            tracker.child_run(v.name, as_metrics(v))
        for f in (TABLE, PARETO, CROPS):
            tracker.log_artifact(f, "report")


if __name__ == "__main__":
    run(main)
