"""Stage finetune_classsr: Class-Module + the three branches. Phase 1 trains the classifier with the
branches frozen (ClassSR's released configs); phase 2 fine-tunes everything (``phases`` picks which
run). Each phase is one launch (``python -m stages.finetune_classsr <phase>``; ``pipeline.launch`` runs
them in order, each with its own process count), the next phase starting from the model the last left.
The last phase scores patch-wise inference on the validation set at every FLOPs budget."""
import sys


from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.deliver import deliver
from pipeline.evaluate import (bicubic_upscale, budget_metrics, classsr_protocol_psnr, evaluate_pairs, test_pairs,
                               Validator)
from pipeline.methods.classsr import ClassSRObjective, assemble
from pipeline.metrics import count_params
from pipeline.params import CLASS_NAMES, ParamError, load_section
from pipeline.stage import run
from pipeline.train import train
from pipeline.upscale import branch_flops, upscale

OUT, METRICS = "models/classsr", "metrics/finetune_classsr.json"


def phase_result(phase: str) -> str:
    """Where a phase that is not the last leaves its model for the next phase (a separate launch)."""
    return f"checkpoints/finetune_classsr/{phase}/result"


def classsr_metrics(net, pairs, scale: int, inference) -> dict:
    """ClassSR against bicubic and its own branch-O (tiled like ClassSR, and whole-image) at every budget
    (Y-PSNR), and by ClassSR's own protocol (its grid, no remainder: RGB PSNR on the covered region)."""
    hard, opts = net.branches[-1], inference.options()
    tiled = {**opts, "tile": inference.patch, "overlap": inference.patch - inference.stride}
    metrics = {"params": count_params(net),
               "branch_flops_per_patch": dict(zip(CLASS_NAMES, branch_flops(net, inference.patch))),
               "bicubic_psnr": evaluate_pairs(lambda lr: bicubic_upscale(lr, scale), pairs, scale)["psnr"],
               "branch_o_tiled_psnr": Validator(pairs, scale, **tiled)(hard)["psnr"],
               "branch_o_whole_psnr": Validator(pairs, scale)(hard)["psnr"],
               **budget_metrics(net, pairs, scale, inference.budgets, **opts)}
    grid = [upscale(net, lr, cover_all=False, **opts).image for _, lr, _ in pairs]
    metrics["classsr_protocol_rgb_psnr"] = classsr_protocol_psnr(grid, pairs, scale, inference.patch, inference.stride)
    return metrics


def main():
    cfg = load_section("finetune_classsr")
    phase = sys.argv[1] if len(sys.argv) > 1 else ""
    if phase not in cfg.phases:
        raise ParamError(f"finetune_classsr: phase must be one of finetune_classsr.phases {cfg.phases}, got "
                         f"'{phase}' (python -m pipeline.launch finetune_classsr stages.finetune_classsr runs them all)")
    i, tcfg = cfg.phases.index(phase), getattr(cfg, phase)
    if i == 0:
        model = assemble([f"models/branch_{n}" for n in CLASS_NAMES], cfg.classifier_init_scale, cfg.classifier.seed)
    else:
        model = models.load(phase_result(cfg.phases[i - 1]))
    scale = model.config["scale"]
    shards, pairs = PairShards("data/classsr", scale), test_pairs(tcfg.val_set, scale)
    objective = ClassSRObjective(cfg.loss_weights, cfg.routing_weight, cfg.routing_tolerance_db, phase)
    validate = Validator(pairs, scale, flops=branch_flops(model, cfg.inference.patch), **cfg.inference.options())
    batches = PatchBatches(shards, tcfg.batch_size, cfg.inference.patch, tcfg.seed)
    result = train(model, tcfg, batches, objective, stage=f"finetune_classsr:{phase}", params=cfg,
                   ckpt_dir=f"checkpoints/finetune_classsr/{phase}", data_info=shards.info, validate=validate, leave_run_open=True)
    if not result.is_main:
        return
    if i < len(cfg.phases) - 1:
        models.save(result.model, phase_result(phase))
        return
    metrics = classsr_metrics(result.model, pairs, scale, cfg.inference)
    deliver(f"finetune_classsr:{phase}", cfg, result.model, OUT, METRICS, metrics, result.run_id)


if __name__ == "__main__":
    run(main)
