"""Stage train_branch@<class>: one ClassSR SR branch trained on the patches of its class."""
import sys

import numpy as np

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import bicubic_upscale, evaluate_pairs, test_pairs, validator
from pipeline.metrics import count_macs, count_params
from pipeline.params import CLASS_NAMES, ParamError, TrainBranch, load_section
from pipeline.stage import run, write_json
from pipeline.train import train

DATA, CLASSES, VAL, TEACHER = "data/classsr", "data/classes/classes.npy", "data/test/sample", "models/teacher"


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in CLASS_NAMES:
        raise ParamError(f"train_branch: class must be one of {', '.join(CLASS_NAMES)}, got '{name}'")
    cfg = load_section("train_branch", TrainBranch)
    out, metrics_path = f"models/branch_{name}", f"metrics/train_branch_{name}.json"
    shards = PairShards(DATA, cfg.scale)
    indices = np.flatnonzero(np.load(CLASSES) == CLASS_NAMES.index(name))
    init = TEACHER if name == "hard" and cfg.init_hard_from_teacher else cfg.train.init_from
    model = models.init_model(cfg.arch, cfg.scale, cfg.branches[name], init)
    pairs = test_pairs(VAL, cfg.scale)
    validate = validator(pairs, cfg.scale)
    bicubic = evaluate_pairs(lambda lr: bicubic_upscale(lr, cfg.scale), pairs, cfg.scale)

    def finish(net, val, tracker):
        models.save(net, out)
        metrics = {"psnr": val["psnr"], "ssim": val["ssim"], "bicubic_psnr": bicubic["psnr"],
                   "params": count_params(net), "flops_per_patch": 2 * count_macs(net, (1, 3, 32, 32)),
                   "train_patches": int(len(indices))}
        write_json(metrics_path, metrics)
        tracker.log_metrics(metrics)

    tcfg = cfg.train_config(name)
    warmup = 0 if name == "hard" and cfg.init_hard_from_teacher else cfg.all_patches_steps * tcfg.grad_accum
    batches = PatchBatches(shards, tcfg.batch_size, tcfg.lr_patch, tcfg.seed, indices=indices, all_patches_until=warmup)
    train(model, tcfg, batches, stage=f"train_branch@{name}", params=cfg, ckpt_dir=f"checkpoints/train_branch_{name}",
          validate=validate, data_info={**shards.info, "class": name, "count": int(len(indices))}, finish=finish)


if __name__ == "__main__":
    run(main)
