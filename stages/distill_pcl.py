"""Stage distill_pcl: fine-tune an SR network with L1 + alpha * PCL's contrastive loss in the embedding
of a wavelet discriminator that is itself trained each step with the dual contrastive loss."""
import random

import torch
import torch.nn.functional as F

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import evaluate_pairs, super_resolve, test_pairs, validator
from pipeline.losses.pcl import WaveletDiscriminator, blurred, dual_contrastive_d_loss, info_nce, sharpened
from pipeline.metrics import count_macs, count_params, latency
from pipeline.params import DistillPCL, load_section
from pipeline.stage import run, write_json
from pipeline.train import Objective, train

DATA, VAL, OUT, METRICS = "data/sr", "data/test/sample", "models/pcl_student", "metrics/distill_pcl.json"


class PCLObjective(Objective):
    def __init__(self, cfg: DistillPCL, scale: int):
        self.cfg, self.scale = cfg, scale
        self.discriminator = WaveletDiscriminator()
        self.d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))

    def modules(self):
        return {"discriminator": self.discriminator}

    def optimizers(self):
        return {"d_opt": self.d_opt}

    def samples(self, lr, hr, step):
        gen = random.Random(self.cfg.train.seed * 1_000_003 + step)
        positives = [hr] + sharpened(hr, self.cfg.num_aug, *self.cfg.sharp_range, gen)
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=True).clamp(0, 1)
        negatives = [up] + blurred(hr, self.cfg.num_aug, self.cfg.blur_kernels, tuple(self.cfg.blur_sigma), gen)
        return positives, negatives

    def before_step(self, accelerator, model, lr, hr, step):
        with torch.no_grad():
            sr = model(lr).clamp(0, 1)
            positives, negatives = self.samples(lr, hr, step)
        d = self.discriminator
        d.train()
        real = [d(x)[0] for x in positives]
        fake = [d(x)[0] for x in [sr] + negatives]
        loss = dual_contrastive_d_loss(real, fake)
        self.d_opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        self.d_opt.step()
        self._cache = (step, positives, negatives)
        return {"d_loss": loss.detach()}

    def contrastive(self, sr, positives, negatives):
        """CL of the SR batch; gradients reach the SR network only when cl_grad is on."""
        d = getattr(self.discriminator, "module", self.discriminator)  # frozen for this term
        d.eval()
        layers = tuple(self.cfg.layers)
        with torch.set_grad_enabled(self.cfg.cl_grad and torch.is_grad_enabled()):
            f_sr = d(sr, layers)[1]
        with torch.no_grad():
            f_pos = [d(x, layers)[1] for x in positives]
            f_neg = [d(x, layers)[1] for x in negatives]
        d.train()
        return torch.stack([info_nce(f_sr[i], [f[i] for f in f_pos], [f[i] for f in f_neg])
                            for i in range(len(layers))]).mean()

    def loss(self, model, lr, hr, step):
        sr = model(lr)
        cached_step, positives, negatives = getattr(self, "_cache", (None, None, None))
        if cached_step != step:
            positives, negatives = self.samples(lr, hr, step)
        d = getattr(self.discriminator, "module", self.discriminator)
        d.requires_grad_(False)
        cl = self.contrastive(sr, positives, negatives)
        d.requires_grad_(True)
        l1 = F.l1_loss(sr, hr)
        return l1 + self.cfg.alpha * cl, {"l1": l1.detach(), "contrastive": cl.detach()}


def main():
    cfg = load_section("distill_pcl", DistillPCL)
    model = models.load(cfg.init_from)
    scale = model.config["scale"]
    pairs = test_pairs(VAL, scale)
    validate = validator(pairs, scale)
    start = evaluate_pairs(lambda lr: super_resolve(model.eval(), lr), pairs, scale)

    def finish(net, val, tracker):
        models.save(net, OUT)
        metrics = {"psnr": val["psnr"], "ssim": val["ssim"], "init_psnr": start["psnr"], "cl_grad": cfg.cl_grad,
                   "params": count_params(net), "flops_per_patch": 2 * count_macs(net, (1, 3, 32, 32)),
                   "cpu_latency_s": latency(net, (1, 3, 128, 128))}
        write_json(METRICS, metrics)
        tracker.log_metrics(metrics)

    shards = PairShards(DATA, scale)
    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    train(model.train(), cfg.train, batches, stage="distill_pcl", params=cfg, ckpt_dir="checkpoints/distill_pcl",
          objective=PCLObjective(cfg, scale), validate=validate, data_info=shards.info, finish=finish)


if __name__ == "__main__":
    run(main)
