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
    # quantised to 8 bits, as PCL's data loader makes both
    assert all(torch.allclose(x * 255, (x * 255).round(), atol=1e-4) for x in pos + neg)


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


def official_contrastive_d_loss(real_logits, fake_logits):
    """loss/adversarial.py contrastive_D_loss, written out with its rearrange/repeat as plain torch."""
    real_logits, fake_logits = real_logits.reshape(-1), fake_logits.reshape(-1)

    def loss_half(t1, t2):
        t = torch.cat((t1[:, None], t2[None, :].repeat(t1.shape[0], 1)), dim=-1)
        return torch.nn.functional.cross_entropy(t, torch.zeros(t1.shape[0], dtype=torch.long))

    return loss_half(real_logits, fake_logits) + loss_half(-fake_logits, -real_logits)


def test_d_loss_equals_the_official_formula():
    torch.manual_seed(0)
    real = [torch.randn(3, 1, 4, 4) * 2 for _ in range(4)]  # HR + 3 sharpened
    fake = [torch.randn(3, 1, 4, 4) * 2 for _ in range(4)]  # SR + 3 blurred
    # the released code: d_real = cat(real, dim 0), d_fake = cat(fake, dim 0), then .reshape(-1)
    expected = official_contrastive_d_loss(torch.cat(real), torch.cat(fake))
    assert dual_contrastive_d_loss(real, fake).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("sharp_hr", [False, True])
def test_d_update_contrasts_hr_and_sharpened_with_sr_and_blurred(monkeypatch, sharp_hr):
    """Real: HR (+ the sharpened HRs with sharp_hr, the NLSN script; rcanx4_PCL.sh as released runs
    without them); fake: SR and the blurred HRs."""
    import pipeline.methods.pcl as pcl

    seen = {}

    def spy(real, fake):
        seen["real"], seen["fake"] = len(real), len(fake)
        return dual_contrastive_d_loss(real, fake)

    monkeypatch.setattr(pcl, "dual_contrastive_d_loss", spy)
    cfg = DistillPCL(sharp_hr=sharp_hr, train=TrainConfig(batch_size=2))
    objective = PCLObjective(cfg, 4)
    net = models.build("msrresnet", 4, nf=8, nb=1)
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64)

    class Acc:
        backward = staticmethod(lambda loss: loss.backward())

    inputs, forward = [], objective.discriminator.forward
    monkeypatch.setattr(objective.discriminator, "forward", lambda x, layers=(): inputs.append(x) or forward(x, layers))
    with torch.no_grad():  # an SR output reaching below 0: the released update feeds it raw, unclamped
        net.conv_last.bias.fill_(-0.5)
    objective.before_step(Acc(), net, lr, hr, 0)
    assert seen == {"real": 1 + cfg.num_aug * sharp_hr, "fake": 1 + cfg.num_aug}  # no bicubic LR among the fakes
    assert min(float(x.min()) for x in inputs) < 0  # HR, sharpened and blurred HRs are in [0, 1]: the SR, raw
    assert DistillPCL().sharp_hr is False  # the default follows rcanx4_PCL.sh as it runs


def test_pcl_loss_equals_the_official_rcan_script_loss_on_the_0_255_scale():
    """rcanx4_PCL.sh trains on 0-255 with 1*L1 + 5*CL. Our [0, 1] loss with rgb_range 255 and alpha 5 is
    that number: L1 scales with the images, the embedding (no-bias convs, batch-statistics BN, cosine
    logits) does not."""
    cfg = DistillPCL(alpha=5.0, train=TrainConfig(batch_size=2, rgb_range=255.0))
    objective = PCLObjective(cfg, 4)
    torch.manual_seed(0)
    net = models.build("msrresnet", 4, nf=8, nb=1)
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64)
    loss, _ = objective.loss(net, lr, hr, step=3)
    positives, negatives = objective.samples(lr, hr, 3)
    with torch.no_grad():
        sr255 = net(lr) * 255
        cl255 = objective.contrastive(sr255, [p * 255 for p in positives], [n * 255 for n in negatives])
        official = torch.nn.functional.l1_loss(sr255, hr * 255) + 5.0 * cl255
    assert loss.item() == pytest.approx(official.item(), rel=1e-4)
    assert objective.discriminator.training  # batch statistics for the SR loss, as released


def test_features_stop_at_the_deepest_layer_and_equal_the_full_forward():
    """The CL loss reads block 4: the three deeper blocks need not run. Same features and the same
    gradient to the SR image as the full forward (train mode: batch statistics), fewer convolutions."""
    torch.manual_seed(0)
    d = WaveletDiscriminator().train()
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    full = d(x, (2, 4))[1]
    (g_full,) = torch.autograd.grad(sum(f.square().sum() for f in full), x)
    calls = []
    hooks = [c.register_forward_hook(lambda *_: calls.append(1)) for c in d.convs]
    cut = d.features(x, (2, 4))
    for h in hooks:
        h.remove()
    (g_cut,) = torch.autograd.grad(sum(f.square().sum() for f in cut), x)
    assert len(calls) == 5
    for a, b in zip(full, cut):
        assert torch.equal(a, b)
    assert torch.allclose(g_full, g_cut, atol=1e-6)
