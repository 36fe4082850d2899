"""CSD: channel splitting and the contrastive loss."""
import pytest
import torch

from pipeline import models
from pipeline.methods.csd import ContrastiveLoss, FeatureStages, load_vgg19_state, teacher_embedding, vgg19_features
from pipeline.models.slim import forward_at_width, slim
from pipeline.metrics import count_params


@pytest.mark.parametrize("width, expected", [(1.0, 43_089_923), (0.5, 10_780_675), (0.25, 2_699_267)])
def test_edsr_x4_effective_params(width, expected):
    edsr = models.build("edsr", 4, n_resblocks=32, n_feats=256, res_scale=0.1)
    assert count_params(edsr if width == 1 else slim(edsr, width)) == expected


@pytest.mark.parametrize("arch, kwargs", [("msrresnet", {"nf": 16, "nb": 2}), ("edsr", {"n_resblocks": 2, "n_feats": 16}),
                                          ("rcan", {"n_resgroups": 1, "n_resblocks": 1, "nf": 64}),
                                          ("edsr", {"n_resblocks": 2, "n_feats": 16, "scale3": True})])
@pytest.mark.parametrize("width", [0.5, 0.25])
def test_student_at_width_equals_standalone_slim_model_bit_exact(arch, kwargs, width):
    kwargs = dict(kwargs)
    scale = 3 if kwargs.pop("scale3", False) else 4
    torch.manual_seed(0)
    teacher = models.build(arch, scale, **kwargs)
    x = torch.rand(2, 3, 10, 11)
    student = slim(teacher, width)
    assert torch.equal(forward_at_width(teacher, x, width), student(x))
    assert student.config["kwargs"] != teacher.config["kwargs"]


@pytest.mark.parametrize("arch, kwargs, scale", [("msrresnet", {"nf": 50, "nb": 1}, 4),
                                                 ("rfdn", {"nf": 50, "num_blocks": 1, "attention": "esa"}, 4),
                                                 ("edsr", {"n_resblocks": 1, "n_feats": 50}, 2)])
def test_slim_at_nf_50_width_quarter(arch, kwargs, scale):
    """floor(50 * 0.25) = 12: the x2/x4 upsampler keeps 4 * 12 = 48 channels (not floor(200 * 0.25) = 50),
    and RFDN's ESA at nf 12 has a 3-channel inner layer that is not an image layer."""
    torch.manual_seed(0)
    teacher = models.build(arch, scale, **kwargs)
    student = slim(teacher, 0.25)
    x = torch.rand(1, 3, 24, 24)
    assert torch.equal(forward_at_width(teacher, x, 0.25), student(x))
    up = [m for m in student.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels in (48, 50)]
    assert up and all(m.out_channels == 48 for m in up)


def test_student_gradients_reach_the_shared_weights():
    teacher = models.build("msrresnet", 4, nf=16, nb=1)
    forward_at_width(teacher, torch.rand(1, 3, 8, 8), 0.5).mean().backward()
    g = teacher.conv_first.weight.grad
    assert g[:8].abs().sum() > 0 and g[8:].abs().sum() == 0  # only the student's channels


def random_features():
    """A small randomly initialised feature network stands in for VGG19 in tests (no download)."""
    torch.manual_seed(0)
    return FeatureStages([torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()),
                          torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU())])


def test_contrastive_loss_is_zero_when_student_equals_teacher_and_scales_with_negatives():
    cl = ContrastiveLoss(random_features(), [0.5, 1.0])
    s = torch.rand(4, 3, 16, 16)
    neg = torch.rand(3, 3, 16, 16)
    assert cl(s, s.clone(), neg).item() == 0.0
    t = torch.rand(4, 3, 16, 16)
    one, two = cl(s, t, neg[:1]), cl(s, t, torch.cat([neg[:1], neg[:1]]))
    assert two.item() == pytest.approx(one.item() / 2, rel=1e-5)  # d_sn sums over negatives


def test_teacher_embedding_is_frozen_and_download_free():
    teacher = models.build("msrresnet", 4, nf=8, nb=6)
    emb = teacher_embedding(teacher, 3)
    x = torch.rand(1, 3, 16, 16)
    feats = emb(x)
    assert len(feats) == 3 and all(not p.requires_grad for p in emb.parameters())
    # head, then the teacher's first two residual blocks, each after a 2x2 average pool (VGG's pyramid)
    pool = torch.nn.functional.avg_pool2d
    with torch.no_grad():
        h = torch.nn.functional.leaky_relu(teacher.conv_first(x), 0.1)
        assert torch.allclose(feats[0], h) and feats[2].shape[-1] == 4
        assert torch.allclose(feats[2], teacher.body[1](pool(teacher.body[0](pool(h, 2)), 2)))
    with pytest.raises(ValueError, match="7 stages need 6"):
        teacher_embedding(models.build("msrresnet", 4, nf=8, nb=5), 7)


def test_vgg19_offline_without_file_names_the_param(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(FileNotFoundError, match="distill_csd.vgg_weights.*teacher"):
        load_vgg19_state("", "distill_csd.vgg_weights")
    with pytest.raises(FileNotFoundError, match="distill_csd.vgg_weights.*not found"):
        load_vgg19_state(str(tmp_path / "missing.pth"), "distill_csd.vgg_weights")


def test_vgg19_loads_a_local_torchvision_format_file(tmp_path):
    from safetensors.torch import save_file

    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    save_file(state, str(tmp_path / "vgg19.safetensors"))
    from pipeline.methods.csd import vgg19_embedding

    emb = vgg19_embedding(str(tmp_path / "vgg19.safetensors"), "x")
    assert [f.shape[1] for f in emb(torch.rand(1, 3, 32, 32))] == [64, 128, 256, 512, 512]


def test_csd_loss_equals_the_official_loss_on_the_0_255_scale():
    """The official trainer: L1(hr, S) + 200 CL + 1 L1(hr, T) on 0-255 images, CL = sum_j w_j d(T_j, S_j) /
    (sum_k d(N_k j, S_j) + 1e-7) with VGG fed 0-255. Ours, on [0, 1] images with rgb_range 255, is the same
    number: the contrastive weight acts against an L1 255x larger than a [0, 1] L1."""
    from pipeline.methods.csd import CSDObjective

    torch.manual_seed(0)
    stages = [torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()),
              torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU())]
    weights = [0.5, 1.0]
    ours = CSDObjective(0.25, ContrastiveLoss(FeatureStages(stages, input_scale=255.0), weights), 4, 3,
                        t_lambda=1.0, contra_lambda=200.0, rgb_range=255.0)
    s, t, hr, neg = (torch.rand(4, 3, 16, 16) for _ in range(4))
    loss, _ = ours.total(s, t, hr, neg[:3])

    def official_cl(s255, t255, n255):  # slim_contrast_trainer + contrast_loss, by hand
        total, fs, ft, fn = 0.0, s255, t255, n255
        for w, stage in zip(weights, stages):
            fs, ft, fn = stage(fs), stage(ft), stage(fn)
            d_ts = (ft - fs).abs().mean()
            d_sn = sum((fn[k:k + 1] - fs).abs().mean() for k in range(len(fn)))
            total = total + w * d_ts / (d_sn + 1e-7)
        return total

    l1 = torch.nn.functional.l1_loss
    official = l1(hr * 255, s * 255) + 200 * official_cl(s * 255, t * 255, neg[:3] * 255) + l1(hr * 255, t * 255)
    assert loss.item() == pytest.approx(official.item(), rel=1e-5)
    # the contrastive share of the loss: ~200/255 of what a [0, 1]-scale weight of 200 would give it
    on_01 = CSDObjective(0.25, ours.contrastive, 4, 3, 1.0, 200.0, rgb_range=1.0).total(s, t, hr, neg[:3])[0]
    assert loss.item() / 255 == pytest.approx((l1(s, hr) + l1(t, hr) + 200 / 255 * official_cl(
        s * 255, t * 255, neg[:3] * 255)).item(), rel=1e-5)
    assert on_01.item() > loss.item() / 255


def test_distance_sum_equals_autograd_through_the_official_formula():
    """d_sn as one L1 cdist gives CSD's value and gradient: sum_k mean|N_k - S|, N_k broadcast over the batch."""
    from pipeline.methods.csd import distance_sum

    def sum_of_distances(x, n):
        return distance_sum(x, n) / x.numel()

    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 8, 12, 12, generator=g, dtype=torch.float64, requires_grad=True)
    n = torch.randn(3, 8, 12, 12, generator=g, dtype=torch.float64)
    weight = torch.randn((), generator=g, dtype=torch.float64)
    reference = sum((n[k:k + 1] - s).abs().mean() for k in range(len(n)))
    (want,) = torch.autograd.grad(weight * reference, s)
    fused = sum_of_distances(s, n)
    (got,) = torch.autograd.grad(weight * fused, s)
    assert fused.item() == pytest.approx(reference.item(), rel=1e-12)
    assert torch.allclose(got, want, rtol=0, atol=1e-15)
    assert torch.autograd.gradcheck(lambda x: sum_of_distances(x, n), (s,))


def test_embed_crop_gives_the_contrastive_loss_one_window_and_the_l1_terms_the_whole_patch():
    """embed_crop (a CPU-budget departure): CL on the same random window of S, T and every negative, drawn
    from the step's generator; L1 on the whole patch; 0 (CSD) embeds the whole patch."""
    from pipeline.methods.csd import CSDObjective, same_window

    torch.manual_seed(0)
    weights = [0.5, 1.0]
    contrastive = ContrastiveLoss(random_features(), weights)
    s, t, hr, neg = (torch.rand(4, 3, 24, 24) for _ in range(4))
    whole = CSDObjective(0.25, contrastive, 4, 3, 1.0, 200.0, 255.0)
    cropped = CSDObjective(0.25, contrastive, 4, 3, 1.0, 200.0, 255.0, embed_crop=8)
    loss, logs = cropped.total(s, t, hr, neg[:3], torch.Generator().manual_seed(5))
    ws, wt, wn = same_window(8, torch.Generator().manual_seed(5), s, t, neg[:3])
    (i, j), = [(i, j) for i in range(17) for j in range(17) if torch.equal(s[..., i:i + 8, j:j + 8], ws)]
    assert torch.equal(wt, t[..., i:i + 8, j:j + 8]) and torch.equal(wn, neg[:3, :, i:i + 8, j:j + 8])  # one window
    assert logs["contrastive"].item() == pytest.approx(contrastive(ws, wt, wn).item(), rel=1e-6)
    assert logs["l1"].item() == pytest.approx(torch.nn.functional.l1_loss(s, hr).item(), rel=1e-6)
    assert loss.item() == pytest.approx(255 * (logs["l1"] + logs["l1_teacher"]).item() + 200 * logs["contrastive"].item(),
                                        rel=1e-5)
    # another step's generator draws another window; 0 and a crop as large as the patch embed all of it
    assert not torch.equal(same_window(8, torch.Generator().manual_seed(6), s)[0], ws)
    full = whole.total(s, t, hr, neg[:3], torch.Generator().manual_seed(5))[1]["contrastive"]
    assert full.item() == pytest.approx(contrastive(s, t, neg[:3]).item(), rel=1e-6)
    assert same_window(24, torch.Generator(), s)[0] is s


def test_csd_negatives_are_bicubic_upsamplings_left_unclamped_as_csd():
    """CSD's negatives: the first neg_num LR images of the batch, permuted, bicubic-upsampled; bicubic
    overshoots past [0, 1] at edges and CSD keeps those values (no clamp)."""
    from pipeline.methods.csd import CSDObjective

    objective = CSDObjective(0.5, ContrastiveLoss(random_features(), [0.5, 1.0]), 2, neg_num=2, t_lambda=1.0,
                             contra_lambda=1.0)
    seen = {}
    def total(s, t, hr, negatives, g):
        seen["negatives"] = negatives
        return s.sum(), {}

    objective.total = total
    lr = torch.zeros(3, 3, 8, 8)
    lr[..., :, 4:] = 1.0  # a hard edge: bicubic rings below 0 and above 1 beside it
    torch.manual_seed(0)
    objective.loss(models.build("edsr", 2, n_resblocks=1, n_feats=8), lr, torch.rand(3, 3, 16, 16), step=0)
    n = seen["negatives"]
    assert n.shape == (2, 3, 16, 16) and n.min() < 0 and n.max() > 1
