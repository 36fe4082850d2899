"""PCL (Wu et al., TNNLS 2023): contrastive learning with a learned embedding, and its objective.

Positives: HR, and with ``sharp_hr`` K sharpened HRs (kornia sharpness, factor ~ U[0.5, 3)): the released
RCAN script runs without them (a missing backslash drops its --sharp_hr line). Negatives: the bicubic-
upsampled LR and K Gaussian-blurred HRs (odd kernels 3-11, sigma ~ U[0.1, 2)). The embedding is a
discriminator on the Haar high-frequency bands (LH, HL, HH of each RGB channel: 9 channels at half
resolution); it is trained each step with the dual contrastive loss (real: HR and the sharpened HRs;
fake: SR and the blurred HRs), and its features at ``layers`` give the InfoNCE loss of the SR network
(spatial mean of per-pixel cosine similarity, no temperature).

As the released code (Aitical/PCL-SISR, loss/adversarial.py) runs, not as its flags read: the features
are post-activation (``--before_relu`` stores each block's BN output, which the in-place LeakyReLU then
overwrites), the discriminator stays in train mode (batch statistics) for the SR network's loss, and
the D loss compares every real logit of the batch with every fake one. The loss is on the official
scale: rgb_range * L1 + alpha * CL (the RCAN script trains on 0-255: alpha 5 there is ~0.02 on [0, 1]).

Over several processes the discriminator sees the global batch, as the released ``data_parallel`` run
does: its loss over every real and fake logit of it, its BatchNorm statistics over it (the official
replicas' are per GPU: here N processes equal one process on the whole batch), the sharpening factors
drawn for it (:mod:`pipeline.distributed`).
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distributed import all_gather, batch_norm, world
from pipeline.objective import Objective

DISC_CHANNELS = [(9, 64, 1), (64, 64, 2), (64, 128, 1), (128, 128, 2), (128, 256, 1), (256, 256, 2),
                 (256, 512, 1), (512, 512, 2)]


def haar_high_bands(x: torch.Tensor) -> torch.Tensor:
    """One-level Haar DWT of each channel, keeping LH, HL, HH: (N, 3C, H/2, W/2)."""
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    lh = (a + b - c - d) / 2
    hl = (a - b + c - d) / 2
    hh = (a - b - c + d) / 2
    return torch.cat([lh, hl, hh], dim=1)


class WaveletDiscriminator(nn.Module):
    """PCL's embedding network (4,691,265 params): 8 x [conv3x3 no-bias, BN, LeakyReLU 0.2] on the Haar
    bands, then a patch head (4x4 average pool, 1x1 conv) giving 16 logits per image."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, s, 1, bias=False) for i, o, s in DISC_CHANNELS)
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o, _ in DISC_CHANNELS)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(512, 1, 1))

    def forward(self, x, layers=()):
        """Patch logits (N, 1, 4, 4), and the features after block ``i`` (conv, BN, LeakyReLU) for each i
        in ``layers`` (post-activation, as the released code's features end up)."""
        h, feats = self._blocks(x, len(self.convs), layers)
        return self.head(h), feats

    def features(self, x, layers):
        """Only the features at ``layers``: the blocks after the deepest one are not run (in train mode
        they change nothing but their BatchNorms' running statistics, which train mode never reads)."""
        return self._blocks(x, max(layers) + 1, layers)[1]

    def _blocks(self, x, depth: int, layers):
        feats, h = {}, haar_high_bands(x)
        for i, (conv, bn) in enumerate(zip(self.convs[:depth], self.bns[:depth])):
            h = F.leaky_relu(batch_norm(bn, conv(h)), 0.2)  # the global batch's statistics
            if i in layers:
                feats[i] = h
        return h, [feats[i] for i in layers]


def info_nce(anchor: torch.Tensor, positives: list[torch.Tensor], negatives: list[torch.Tensor]) -> torch.Tensor:
    """For each positive: CE([pos_k, neg_1..neg_M], target 0), logits = spatial mean of per-pixel cosine."""
    def sim(a, b):
        return (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1).mean(dim=(1, 2))  # (N,)

    neg = torch.stack([sim(anchor, n) for n in negatives], dim=1)  # (N, M)
    target = torch.zeros(anchor.shape[0], dtype=torch.long, device=anchor.device)
    losses = [F.cross_entropy(torch.cat([sim(anchor, p)[:, None], neg], 1), target) for p in positives]
    return torch.stack(losses).mean()


def dual_contrastive_d_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """PCL's ``contrastive_D_loss(d_real.reshape(-1), d_fake.reshape(-1))``: every real patch logit of the
    batch (all samples, images and patches) against every fake one, CE with target the real, plus the
    mirrored term on negated logits. CE([a_i, b_1..b_M], 0) = logaddexp(a_i, logsumexp(b)) - a_i, so
    the (R x F) logit matrix is never built."""
    r = torch.cat([x.flatten() for x in real])
    f = torch.cat([x.flatten() for x in fake])

    def half(a, b):
        return (torch.logaddexp(a, torch.logsumexp(b, 0)) - a).mean()

    return half(r, f) + half(-f, -r)


def sharpened(hr: torch.Tensor, k: int, low: float, high: float, gen: random.Random,
              first: int = 0, total: int = 0) -> list[torch.Tensor]:
    """K sharpened copies of ``hr``; the factors are drawn for a global batch of ``total`` samples
    (default: ``hr``'s) of which ``hr`` holds those from ``first`` on, so every process draws its
    samples' factors of one process's draw."""
    import kornia

    out, total = [], total or len(hr)
    for _ in range(k):
        draws = [gen.uniform(low, high) for _ in range(total)][first:first + len(hr)]
        factor = torch.tensor(draws, device=hr.device, dtype=hr.dtype)
        out.append((kornia.enhance.sharpness(hr, factor) * 255).round() / 255)  # quantised, as PCL
    return out


def blurred(hr: torch.Tensor, k: int, sizes: list[int], sigma: tuple[float, float], gen: random.Random) -> list[torch.Tensor]:
    import kornia

    out = []
    for _ in range(k):
        ks = (gen.choice(sizes), gen.choice(sizes))
        sig = torch.tensor([[gen.uniform(*sigma), gen.uniform(*sigma)]], device=hr.device, dtype=hr.dtype)
        blur = kornia.filters.gaussian_blur2d(hr, ks, sig.expand(len(hr), 2))
        out.append((blur * 255).round() / 255)  # quantised to 8 bits, as PCL's data loader stores them
    return out


class PCLObjective(Objective):
    """rgb_range * L1 + alpha * InfoNCE in the embedding of a wavelet discriminator that is itself trained each step
    with the dual contrastive loss (``cfg``: a DistillPCL params section)."""

    def __init__(self, cfg, scale: int):
        self.cfg, self.scale, self.rgb_range = cfg, scale, cfg.train.rgb_range
        self.discriminator = WaveletDiscriminator()
        self.d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))

    def modules(self):
        return {"discriminator": self.discriminator}

    def optimizers(self):
        return {"d_opt": self.d_opt}

    def prepared(self, discriminator, d_opt):
        self.discriminator, self.d_opt = discriminator, d_opt

    def samples(self, lr, hr, step):
        gen = random.Random(self.cfg.train.seed * 1_000_003 + step)
        rank, processes = world()
        positives = [hr] + (sharpened(hr, self.cfg.num_aug, *self.cfg.sharp_range, gen, rank * len(hr),
                                      processes * len(hr)) if self.cfg.sharp_hr else [])
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=True).clamp(0, 1)
        negatives = [up] + blurred(hr, self.cfg.num_aug, self.cfg.blur_kernels, tuple(self.cfg.blur_sigma), gen)
        return positives, negatives

    def before_step(self, accelerator, model, lr_img, hr_img, step):
        """One update of the discriminator: real = HR and the sharpened HRs, fake = SR and the blurred HRs
        (the released --contras_D_train sets; the bicubic LR is a negative of the SR loss only). With alpha 0
        (the control) the embedding reaches nothing: it is not trained."""
        if not self.cfg.alpha:
            return {}
        with torch.no_grad():
            sr = model(lr_img)  # raw, as the released update feeds it (no clamp)
            positives, negatives = self.samples(lr_img, hr_img, step)
        d = self.discriminator
        d.train()
        # every real logit of the global batch against every fake one, as PCL's data_parallel loss sees them
        real = [all_gather(d(x)[0]) for x in positives]
        fake = [all_gather(d(x)[0]) for x in [sr] + negatives[1:]]
        loss = dual_contrastive_d_loss(real, fake)
        self.d_opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        self.d_opt.step()
        self._cache = (step, positives, negatives)
        return {"d_loss": loss.detach()}

    def contrastive(self, sr, positives, negatives):
        """CL of the SR batch, the discriminator frozen and in train mode (as released); gradients reach
        the SR network only when cl_grad is on (the paper; the released code computes it under no_grad)."""
        d = getattr(self.discriminator, "module", self.discriminator)
        layers = tuple(self.cfg.layers)
        with torch.set_grad_enabled(self.cfg.cl_grad and torch.is_grad_enabled()):
            f_sr = d.features(sr, layers)
        with torch.no_grad():
            f_pos = [d.features(x, layers) for x in positives]
            f_neg = [d.features(x, layers) for x in negatives]
        return torch.stack([info_nce(f_sr[i], [f[i] for f in f_pos], [f[i] for f in f_neg])
                            for i in range(len(layers))]).mean()

    def loss(self, model, lr_img, hr_img, step):
        sr = model(lr_img)
        l1 = F.l1_loss(sr, hr_img)
        if not self.cfg.alpha:
            return self.rgb_range * l1, {"l1": l1.detach()}
        cached_step, positives, negatives = getattr(self, "_cache", (None, None, None))
        if cached_step != step:
            positives, negatives = self.samples(lr_img, hr_img, step)
        d = getattr(self.discriminator, "module", self.discriminator)
        d.requires_grad_(False)
        cl = self.contrastive(sr, positives, negatives)
        d.requires_grad_(True)
        return self.rgb_range * l1 + self.cfg.alpha * cl, {"l1": l1.detach(), "contrastive": cl.detach()}
