"""Stage ghost: convert the source model's residual-block convs to Ghost modules (k-means intrinsic
filters), fine-tune the learnable shifts and weights, then export with fixed slicing shifts."""
from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.deliver import deliver
from pipeline.evaluate import test_pairs, Validator
from pipeline.methods.ghost import fine_tune
from pipeline.params import load_section
from pipeline.stage import run
from pipeline.cost import cost


def main():
    cfg = load_section("ghost")
    source = models.load(cfg.source).eval()
    scale = source.config["scale"]
    shards, pairs = PairShards("data/sr", scale), test_pairs(cfg.train.val_set, scale)
    validate = Validator(pairs, scale)
    before = validate(source)
    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    exported, result = fine_tune(source, cfg, batches, "ghost", shards.info, validate)
    if result.is_main:
        # counts only: evaluate times every variant, the source included
        after, ghost_cost, source_cost = validate(exported), cost(exported, latency=False), cost(source, latency=False)
        metrics = {"psnr": after["psnr"], "ssim": after["ssim"], "source_psnr": before["psnr"],
                   "psnr_delta_db": after["psnr"] - before["psnr"], **ghost_cost,
                   **{f"source_{k}": v for k, v in source_cost.items()},
                   "params_ratio": ghost_cost["params"] / source_cost["params"],
                   "flops_ratio": ghost_cost["flops_per_patch"] / source_cost["flops_per_patch"]}
        deliver("ghost", cfg, exported, "models/ghost", "metrics/ghost.json", metrics, result.run_id)


if __name__ == "__main__":
    run(main)
