"""Stage ghost: convert the source model's residual-block convs to Ghost modules (k-means intrinsic
filters), fine-tune the learnable shifts and weights, then export with fixed slicing shifts."""
from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import test_pairs, validator
from pipeline.metrics import count_macs, count_params, latency
from pipeline.params import Ghost, load_section
from pipeline.recipes import ghost_fine_tune
from pipeline.stage import run, write_json

DATA, VAL, OUT, METRICS = "data/sr", "data/test/sample", "models/ghost", "metrics/ghost.json"


def main():
    cfg = load_section("ghost", Ghost)
    source = models.load(cfg.source).eval()
    scale = source.config["scale"]
    validate = validator(test_pairs(VAL, scale), scale)
    source_eval = validate(source)

    def finish(net, tracker):
        models.save(net, OUT)
        exported = models.load(OUT).eval()
        final = validate(exported)
        shape = (1, 3, 128, 128)
        metrics = {
            "psnr": final["psnr"], "ssim": final["ssim"], "source_psnr": source_eval["psnr"],
            "psnr_delta_db": final["psnr"] - source_eval["psnr"],
            "params": count_params(exported), "source_params": count_params(source),
            "params_ratio": count_params(exported) / count_params(source),
            "flops_per_patch": 2 * count_macs(exported, (1, 3, 32, 32)),
            "source_flops_per_patch": 2 * count_macs(source, (1, 3, 32, 32)),
            "cpu_latency_s": latency(exported, shape), "source_cpu_latency_s": latency(source, shape)}
        metrics["latency_ratio"] = metrics["cpu_latency_s"] / metrics["source_cpu_latency_s"]
        write_json(METRICS, metrics)
        tracker.log_metrics(metrics)

    shards = PairShards(DATA, scale)
    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    ghost_fine_tune("ghost", source, cfg, batches, shards.info, validate, finish)


if __name__ == "__main__":
    run(main)
