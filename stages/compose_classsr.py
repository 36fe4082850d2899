"""Stage compose_classsr: GhostSR applied to one branch (the hard one by default) of the fine-tuned
ClassSR -- a composition none of the published code does. The branch is converted (k-means intrinsic
filters), fine-tuned on its own class's patches with annealed Gumbel shifts, exported with fixed
slicing shifts, and put back; the composed ClassSR is scored against the original at every budget."""
import numpy as np

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.deliver import deliver
from pipeline.evaluate import budget_metrics, test_pairs, Validator
from pipeline.methods.classsr import with_branch
from pipeline.methods.ghost import fine_tune
from pipeline.metrics import count_params
from pipeline.params import CLASS_NAMES, load_section
from pipeline.stage import run
from pipeline.upscale import branch_flops


def main():
    cfg = load_section("compose_classsr")
    classsr = models.load(cfg.classsr).eval()
    scale, index = classsr.config["scale"], CLASS_NAMES.index(cfg.branch)
    shards, pairs = PairShards("data/classsr", scale), test_pairs(cfg.train.val_set, scale)
    indices = np.flatnonzero(np.load("data/classes/classes.npy") == index)
    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed, indices=indices)
    data_info = {**shards.info, "class": cfg.branch, "count": int(len(indices))}
    branch, result = fine_tune(classsr.branches[index], cfg, batches, "compose_classsr", data_info, Validator(pairs, scale))
    if not result.is_main:
        return
    composed = with_branch(classsr, index, branch)
    inference, opts = cfg.inference, cfg.inference.options()
    before = budget_metrics(classsr, pairs, scale, inference.budgets, **opts)
    after = budget_metrics(composed, pairs, scale, inference.budgets, **opts)
    source_o = branch_flops(classsr, inference.patch)[-1]
    # the FLOPs per budget are below; evaluate times both ClassSRs
    metrics = {"branch": cfg.branch, "params": count_params(composed), "source_params": count_params(classsr)}
    for key in after:
        metrics[key] = {**after[key], "flops_percent_of_source_branch_o": 100 * after[key]["flops_per_patch"] / source_o,
                        "source_psnr": before[key]["psnr"], "psnr_delta_db": after[key]["psnr"] - before[key]["psnr"]}
    deliver("compose_classsr", cfg, composed, "models/classsr_ghost", "metrics/compose_classsr.json",
            metrics, result.run_id)


if __name__ == "__main__":
    run(main)
