"""Stage ghost: convert the source model's residual-block convs to Ghost modules (k-means intrinsic
filters), fine-tune the learnable shifts and weights, then export with fixed slicing shifts."""
import copy

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import evaluate_pairs, super_resolve, test_pairs
from pipeline.ghost import convert, finalize, ghost_modules
from pipeline.metrics import count_macs, count_params, latency
from pipeline.params import Ghost, load_section
from pipeline.stage import run, write_json
from pipeline.train import Objective, train

DATA, VAL, OUT, METRICS = "data/sr", "data/test/sample", "models/ghost", "metrics/ghost.json"


class AnnealedGhost(Objective):
    """L1, with the Gumbel temperature decayed exponentially from tau_start to tau_end."""

    def __init__(self, cfg: Ghost):
        self.cfg = cfg

    def before_step(self, accelerator, model, lr, hr, step):
        frac = step / max(self.cfg.train.max_steps - 1, 1)
        tau = self.cfg.tau_start * (self.cfg.tau_end / self.cfg.tau_start) ** frac
        for m in ghost_modules(model):
            m.tau = tau
        return {"tau": tau}


def main():
    cfg = load_section("ghost", Ghost)
    source = models.load(cfg.source).eval()
    scale = source.config["scale"]
    model = convert(copy.deepcopy(source), cfg.ratio, d=cfg.d, mode=cfg.mode, per_channel=cfg.per_channel,
                    seed=cfg.kmeans_seed)
    model.config = {"arch": "ghost", "scale": scale, "kwargs": {}}
    plan = model.ghost_plan
    pairs = test_pairs(VAL, scale)

    def validate(net):
        device = next(net.parameters()).device
        return evaluate_pairs(lambda lr: super_resolve(net, lr, device), pairs, scale)

    source_eval = validate(source)

    def finish(net, val, tracker):
        net = finalize(net)
        net.config = {"arch": "ghost", "scale": scale, "kwargs": {
            "source": {"arch": source.config["arch"], "kwargs": source.config["kwargs"]}, "ratio": cfg.ratio,
            "d": cfg.d, "mode": cfg.mode, "per_channel": cfg.per_channel, "plan": plan,
            "shifts": {n: [list(o) for o in m.fixed] for n, m in zip(plan, ghost_modules(net))}}}
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
    train(model, cfg.train, batches, stage="ghost", params=cfg, ckpt_dir="checkpoints/ghost", objective=AnnealedGhost(cfg),
          validate=validate, data_info=shards.info, finish=finish)


if __name__ == "__main__":
    run(main)
