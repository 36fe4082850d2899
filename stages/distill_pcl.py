"""Stage distill_pcl: fine-tune an SR network with L1 + alpha * PCL's contrastive loss in the embedding
of a wavelet discriminator that is itself trained each step with the dual contrastive loss.

    python -m stages.distill_pcl student    # distill_pcl@student: PCL
    python -m stages.distill_pcl control    # distill_pcl@control: alpha 0, the same start and steps (L1 only)
"""
import dataclasses
import sys

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.deliver import deliver
from pipeline.evaluate import test_pairs, Validator
from pipeline.methods.pcl import PCLObjective
from pipeline.params import ParamError, load_section
from pipeline.stage import run
from pipeline.train import train
from pipeline.cost import cost


VARIANTS = ("student", "control")


def main():
    variant = sys.argv[1] if len(sys.argv) > 1 else "student"
    if variant not in VARIANTS:
        raise ParamError(f"distill_pcl: variant must be one of {', '.join(VARIANTS)}, got '{variant}'")
    cfg = load_section("distill_pcl")
    if variant == "control":
        cfg = dataclasses.replace(cfg, alpha=0.0)
    stage = f"distill_pcl@{variant}"
    model = models.load(cfg.init_from)
    scale = model.config["scale"]
    shards, pairs = PairShards("data/sr", scale), test_pairs(cfg.train.val_set, scale)
    validate = Validator(pairs, scale)
    init_psnr = validate(model.eval())["psnr"]
    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    result = train(model.train(), cfg.train, batches, PCLObjective(cfg, scale), stage=stage, params=cfg,
                   ckpt_dir=f"checkpoints/distill_pcl_{variant}", data_info=shards.info, validate=validate,
                   leave_run_open=True)
    if result.is_main:
        metrics = {**result.metrics, "alpha": cfg.alpha, "init_psnr": init_psnr, "cl_grad": cfg.cl_grad,
                   **cost(result.model, latency=False)}
        deliver(stage, cfg, result.model, f"models/pcl_{variant}", f"metrics/distill_pcl_{variant}.json", metrics,
                result.run_id)


if __name__ == "__main__":
    run(main)
