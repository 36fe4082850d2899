"""Stage train_branch@<class>: one ClassSR SR branch trained on the patches of its class (the hard
branch, branch-O, starts from the teacher and gets a short fine-tune when ``init_hard_from_teacher``)."""
import sys

import numpy as np

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.deliver import deliver
from pipeline.evaluate import bicubic_upscale, evaluate_pairs, test_pairs, Validator
from pipeline.params import CLASS_NAMES, ParamError, load_section
from pipeline.stage import run
from pipeline.train import train
from pipeline.cost import cost


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in CLASS_NAMES:
        raise ParamError(f"train_branch: class must be one of {', '.join(CLASS_NAMES)}, got '{name}'")
    cfg = load_section("train_branch")
    from_teacher = name == "hard" and cfg.init_hard_from_teacher
    tcfg = cfg.train_config(name)
    shards, pairs = PairShards("data/classsr", cfg.scale), test_pairs(tcfg.val_set, cfg.scale)
    classes = np.load("data/classes/classes.npy")
    indices = np.flatnonzero(classes == CLASS_NAMES.index(name))
    if len(indices) == 0:  # before any work: fixed thresholds that do not fit this teacher leave a class empty
        counts = ", ".join(f"{n} {int((classes == i).sum())}" for i, n in enumerate(CLASS_NAMES))
        raise ParamError(f"train_branch@{name}: no training patch is in class '{name}' ({counts}; "
                         f"metrics/classify_patches.json has the thresholds used): 'classify_patches.thresholds' "
                         "[] gives this teacher's tertiles")
    model = models.init_model(cfg.arch, cfg.scale, cfg.branches[name], "models/teacher" if from_teacher else tcfg.init_from)
    warmup = 0 if from_teacher else cfg.all_patches_steps * tcfg.grad_accum  # every patch first, then the class
    batches = PatchBatches(shards, tcfg.batch_size, tcfg.lr_patch, tcfg.seed, indices=indices, all_patches_until=warmup)
    result = train(model, tcfg, batches, stage=f"train_branch@{name}", params=cfg, ckpt_dir=f"checkpoints/train_branch_{name}",
                   data_info={**shards.info, "class": name, "count": int(len(indices))}, validate=Validator(pairs, cfg.scale), leave_run_open=True)
    if result.is_main:
        bicubic = evaluate_pairs(lambda lr: bicubic_upscale(lr, cfg.scale), pairs, cfg.scale)["psnr"]
        branch_cost = cost(result.model, latency=False)
        metrics = {**result.metrics, "bicubic_psnr": bicubic, "params": branch_cost["params"],
                   "flops_per_patch": branch_cost["flops_per_patch"], "train_patches": int(len(indices))}
        deliver(f"train_branch@{name}", cfg, result.model, f"models/branch_{name}", f"metrics/train_branch_{name}.json",
                metrics, result.run_id)


if __name__ == "__main__":
    run(main)
