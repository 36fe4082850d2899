"""Stage compose_classsr: GhostSR applied to one branch (the hard one by default) of the fine-tuned
ClassSR -- a composition none of the published code does. The branch is converted (k-means intrinsic
filters), fine-tuned on its own class's patches with annealed Gumbel shifts, exported with fixed
slicing shifts, and put back; the composed ClassSR is scored against the original at every budget."""
import copy

import numpy as np

from pipeline import models
from pipeline.classsr import branch_flops, budget_metrics, upscale_uint8
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import test_pairs, validator
from pipeline.metrics import count_params, wall_time
from pipeline.params import CLASS_NAMES, ComposeClassSR, load_section
from pipeline.recipes import ghost_fine_tune
from pipeline.stage import run, write_json

DATA, CLASSES, VAL = "data/classsr", "data/classes/classes.npy", "data/test/sample"
OUT, METRICS = "models/classsr_ghost", "metrics/compose_classsr.json"


def with_branch(classsr, index: int, branch):
    """A copy of ``classsr`` whose branch ``index`` is replaced, with a config that rebuilds it."""
    composed = copy.deepcopy(classsr)
    composed.branches[index] = branch
    kw = classsr.config["kwargs"]
    archs = [b.config["arch"] for b in composed.branches]
    composed.config = {"arch": "classsr", "scale": classsr.config["scale"], "kwargs": {
        "branch_arch": kw["branch_arch"], "branch_archs": archs, "branches": [b.config["kwargs"] for b in composed.branches]}}
    return composed


def inference_time(model, lr, scale, cfg) -> float:
    """Median CPU wall time of one ClassSR inference of the image ``lr``."""
    return wall_time(lambda: upscale_uint8(model, lr, scale, cfg.patch, cfg.stride, batch=cfg.infer_batch),
                     warmup=1, repeats=3)


def main():
    cfg = load_section("compose_classsr", ComposeClassSR)
    classsr = models.load(cfg.classsr).eval()
    scale, index = classsr.config["scale"], CLASS_NAMES.index(cfg.branch)
    source = classsr.branches[index]
    pairs = test_pairs(VAL, scale)
    validate = validator(pairs, scale)
    shards = PairShards(DATA, scale)
    indices = np.flatnonzero(np.load(CLASSES) == index)

    def finish(branch, tracker):
        composed = with_branch(classsr, index, branch.eval())
        models.save(composed, OUT)
        composed = models.load(OUT).eval()
        before = budget_metrics(classsr, pairs, scale, cfg.budgets, cfg.patch, cfg.stride, cfg.infer_batch)
        after = budget_metrics(composed, pairs, scale, cfg.budgets, cfg.patch, cfg.stride, cfg.infer_batch)
        source_o = branch_flops(classsr, cfg.patch)[-1]
        lr = pairs[0][1]
        t_before, t_after = inference_time(classsr, lr, scale, cfg), inference_time(composed, lr, scale, cfg)
        metrics = {"branch": cfg.branch, "params": count_params(composed), "source_params": count_params(classsr),
                   "cpu_time_s": t_after, "source_cpu_time_s": t_before, "time_ratio": t_after / t_before}
        for key in after:
            metrics[key] = {**after[key], "flops_percent_of_source_branch_o": 100 * after[key]["flops_per_patch"] / source_o,
                            "source_psnr": before[key]["psnr"], "psnr_delta_db": after[key]["psnr"] - before[key]["psnr"]}
        write_json(METRICS, metrics)
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        tracker.log_metrics({f"{k}/{m}": v for k, d in metrics.items() if k.startswith("budget_") for m, v in d.items()})

    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed, indices=indices)
    ghost_fine_tune("compose_classsr", source, cfg, batches, {**shards.info, "class": cfg.branch,
                                                              "count": int(len(indices))}, validate, finish)


if __name__ == "__main__":
    run(main)
