"""Stage distill_pcl: fine-tune an SR network with L1 + alpha * PCL's contrastive loss in the embedding
of a wavelet discriminator that is itself trained each step with the dual contrastive loss."""
from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.deliver import deliver
from pipeline.evaluate import test_pairs, validator
from pipeline.methods.pcl import PCLObjective
from pipeline.params import load_section
from pipeline.stage import run
from pipeline.train import train
from pipeline.upscale import cost


def main():
    cfg = load_section("distill_pcl")
    model = models.load(cfg.init_from)
    scale = model.config["scale"]
    shards, pairs = PairShards("data/sr", scale), test_pairs(cfg.train.val_set, scale)
    validate = validator(pairs, scale)
    init_psnr = validate(model.eval())["psnr"]
    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    result = train(model.train(), cfg.train, batches, PCLObjective(cfg, scale), stage="distill_pcl", params=cfg,
                   ckpt_dir="checkpoints/distill_pcl", data_info=shards.info, validate=validate)
    if result.is_main:
        metrics = {**result.metrics, "init_psnr": init_psnr, "cl_grad": cfg.cl_grad, **cost(result.model)}
        deliver("distill_pcl", cfg, result.model, "models/pcl_student", "metrics/distill_pcl.json", metrics,
                result.run_id)


if __name__ == "__main__":
    run(main)
