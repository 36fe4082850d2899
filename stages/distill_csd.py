"""Stage distill_csd: CSD channel-splitting self-distillation. Teacher (width 1) and student (the
first floor(C*w) channels of the same weights) train together: rgb_range (L1(S) + t_lambda L1(T)) +
contra_lambda CL(S; T, bicubic negatives), the official balance; the deliverable is the standalone slim
student.

    python -m stages.distill_csd student    # distill_csd@student: CSD
    python -m stages.distill_csd control    # distill_csd@control: contra_lambda 0, the same start and steps
                                            # (CSD's own ablation, its "J-T1" rows)
"""
import dataclasses
import sys

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.deliver import deliver
from pipeline.evaluate import test_pairs, Validator
from pipeline.methods.csd import ContrastiveLoss, CSDObjective, teacher_embedding, vgg19_embedding
from pipeline.params import ParamError, load_section
from pipeline.stage import run
from pipeline.train import train
from pipeline.cost import cost


VARIANTS = ("student", "control")


def main():
    variant = sys.argv[1] if len(sys.argv) > 1 else "student"
    if variant not in VARIANTS:
        raise ParamError(f"distill_csd: variant must be one of {', '.join(VARIANTS)}, got '{variant}'")
    cfg = load_section("distill_csd")
    if variant == "control":
        cfg = dataclasses.replace(cfg, contra_lambda=0.0)
    stage = f"distill_csd@{variant}"
    teacher = models.load(cfg.teacher)
    scale = teacher.config["scale"]
    if cfg.embedding == "vgg19":
        embedding = vgg19_embedding(cfg.vgg_weights, "distill_csd.vgg_weights")
    else:
        embedding = teacher_embedding(teacher, len(cfg.layer_weights))
    objective = CSDObjective(cfg.width, ContrastiveLoss(embedding, cfg.layer_weights), scale, cfg.neg_num,
                             cfg.t_lambda, cfg.contra_lambda, cfg.train.rgb_range, cfg.embed_crop)
    shards, pairs = PairShards("data/sr", scale), test_pairs(cfg.train.val_set, scale)
    validate = Validator(pairs, scale)
    teacher_psnr = validate(teacher.eval())["psnr"]
    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    result = train(teacher, cfg.train, batches, objective, stage=stage, params=cfg,
                   ckpt_dir=f"checkpoints/distill_csd_{variant}", data_info=shards.info, validate=validate, leave_run_open=True)
    if result.is_main:
        # counts only: evaluate times every variant, the teacher included
        student_cost, teacher_cost = cost(result.model, latency=False), cost(models.load(cfg.teacher), latency=False)
        metrics = {**result.metrics, "contra_lambda": cfg.contra_lambda, "embedding": cfg.embedding, "width": cfg.width,
                   "teacher_psnr": teacher_psnr,
                   **student_cost, "teacher_params": teacher_cost["params"],
                   "flops_ratio": student_cost["flops_per_patch"] / teacher_cost["flops_per_patch"]}
        deliver(stage, cfg, result.model, f"models/csd_{variant}", f"metrics/distill_csd_{variant}.json", metrics,
                result.run_id)


if __name__ == "__main__":
    run(main)
