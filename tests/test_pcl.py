"""PCL: wavelet discriminator, InfoNCE, dual contrastive loss, gradient switch, augmentations."""
import math
import random

import pytest
import torch

from pipeline import models
from pipeline.methods.pcl import (PCLObjective, WaveletDiscriminator, blurred, dual_contrastive_d_loss, haar_high_bands,
                                  info_nce, sharpened)
from pipeline.metrics import count_params
from pipeline.params import DistillPCL, TrainConfig


def test_discriminator_matches_official_shapes_and_count():
    d = WaveletDiscriminator()
    assert count_params(d) == 4_691_265
    logits, feats = d(torch.rand(2, 3, 192, 192), layers=(4,))
    assert logits.shape == (2, 1, 4, 4) and feats[0].shape == (2, 256, 24, 24)


def test_haar_bands_of_a_flat_image_are_zero():
    assert haar_high_bands(torch.full((1, 3, 8, 8), 0.3)).abs().max() == 0
    assert haar_high_bands(torch.rand(1, 3, 8, 8)).shape == (1, 9, 4, 4)


def test_info_nce_with_identical_positive_and_orthogonal_negatives():
    def onehot(c):
        f = torch.zeros(2, 8, 3, 3)
        f[:, c] = 1.0
        return f

    loss = info_nce(onehot(0), [onehot(0)], [onehot(c) for c in range(1, 5)])
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 4)), abs=1e-6)


def test_dual_contrastive_loss_prefers_separated_logits():
    real = [torch.full((2, 1, 4, 4), 3.0)]
    fake = [torch.full((2, 1, 4, 4), -3.0), torch.full((2, 1, 4, 4), -3.0)]
    assert dual_contrastive_d_loss(real, fake) < dual_contrastive_d_loss(fake[:1], real + real)


def test_augmentations_follow_the_paper_ranges():
    hr = torch.rand(2, 3, 32, 32)
    gen = random.Random(0)
    pos = sharpened(hr, 3, 0.5, 3.0, gen)
    neg = blurred(hr, 3, [3, 5, 7, 9, 11], (0.1, 2.0), gen)
    assert len(pos) == len(neg) == 3 and all(p.shape == hr.shape for p in pos + neg)
    assert all((n - hr).abs().mean() > 0 for n in neg)
    assert all(torch.allclose(p * 255, (p * 255).round(), atol=1e-4) for p in pos)  # quantised, as PCL


@pytest.mark.parametrize("cl_grad", [True, False])
def test_cl_grad_switch_controls_gradient_into_the_sr_network(cl_grad):
    cfg = DistillPCL(cl_grad=cl_grad, train=TrainConfig(batch_size=2))
    objective = PCLObjective(cfg, 4)
    torch.manual_seed(0)
    net = models.build("msrresnet", 4, nf=8, nb=1)
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64)
    positives, negatives = objective.samples(lr, hr, 0)
    cl = objective.contrastive(net(lr), positives, negatives)
    assert cl.requires_grad is cl_grad
    if cl_grad:
        grads = torch.autograd.grad(cl, list(net.parameters()), allow_unused=True)
        assert sum(g.abs().sum() for g in grads if g is not None) > 0
