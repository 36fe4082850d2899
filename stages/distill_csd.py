"""Stage distill_csd: CSD channel-splitting self-distillation. Teacher (width 1) and student (the
first floor(C*w) channels of the same weights) train together: L1(S) + t_lambda L1(T) +
contra_lambda CL(S; T, bicubic negatives); the deliverable is the standalone slim student."""
import torch
import torch.nn.functional as F

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import evaluate_pairs, super_resolve, test_pairs, validator
from pipeline.losses.contrastive import ContrastiveLoss, teacher_embedding, vgg19_embedding
from pipeline.metrics import count_macs, count_params, latency
from pipeline.models.slim import forward_at_width, slim
from pipeline.params import DistillCSD, load_section
from pipeline.stage import run, write_json
from pipeline.train import Objective, train

DATA, VAL, OUT, METRICS = "data/sr", "data/test/sample", "models/csd_student", "metrics/distill_csd.json"


class CSDObjective(Objective):
    def __init__(self, cfg: DistillCSD, contrastive: ContrastiveLoss, scale: int):
        self.cfg, self.contrastive, self.scale = cfg, contrastive, scale

    def loss(self, model, lr, hr, step):
        net = getattr(model, "module", model)  # the shared weights, unwrapped from DDP
        self.contrastive.to(lr.device)
        teacher_sr = model(lr)
        student_sr = forward_at_width(net, lr, self.cfg.width)
        # negatives: the first neg_num LR images of the batch, permuted, bicubic-upsampled (CSD)
        g = torch.Generator().manual_seed(step)
        idx = torch.randperm(self.cfg.neg_num, generator=g).to(lr.device)
        negatives = F.interpolate(lr[idx], scale_factor=self.scale, mode="bicubic").clamp(0, 1)
        l1_s, l1_t = F.l1_loss(student_sr, hr), F.l1_loss(teacher_sr, hr)
        cl = self.contrastive(student_sr, teacher_sr, negatives)
        loss = l1_s + self.cfg.t_lambda * l1_t + self.cfg.contra_lambda * cl
        return loss, {"l1": l1_s.detach(), "l1_teacher": l1_t.detach(), "contrastive": cl.detach()}


def main():
    cfg = load_section("distill_csd", DistillCSD)
    teacher = models.load(cfg.teacher)
    scale = teacher.config["scale"]
    if cfg.embedding == "vgg19":
        embedding = vgg19_embedding(cfg.vgg_weights, "distill_csd.vgg_weights")
    else:
        embedding = teacher_embedding(teacher, len(cfg.layer_weights))
    contrastive = ContrastiveLoss(embedding, cfg.layer_weights)
    pairs = test_pairs(VAL, scale)
    teacher_eval = evaluate_pairs(lambda lr: super_resolve(teacher, lr), pairs, scale)

    validate = validator(pairs, scale, prepare=lambda net: slim(net, cfg.width).to(next(net.parameters()).device).eval())

    def finish(net, val, tracker):
        student = slim(net, cfg.width).eval()
        models.save(student, OUT)
        shape = (1, 3, 128, 128)
        metrics = {"psnr": val["psnr"], "ssim": val["ssim"], "embedding": cfg.embedding, "width": cfg.width,
                   "teacher_psnr": teacher_eval["psnr"], "params": count_params(student),
                   "teacher_params": count_params(teacher), "flops_per_patch": 2 * count_macs(student, (1, 3, 32, 32)),
                   "cpu_latency_s": latency(student, shape), "teacher_cpu_latency_s": latency(teacher.eval(), shape)}
        metrics["latency_ratio"] = metrics["cpu_latency_s"] / metrics["teacher_cpu_latency_s"]
        write_json(METRICS, metrics)
        tracker.log_metrics(metrics)
        tracker.set_tags({"embedding": cfg.embedding})

    shards = PairShards(DATA, scale)
    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    train(teacher, cfg.train, batches, stage="distill_csd", params=cfg, ckpt_dir="checkpoints/distill_csd",
          objective=CSDObjective(cfg, contrastive, scale), validate=validate, data_info=shards.info, finish=finish)


if __name__ == "__main__":
    run(main)
