"""GhostSR: official structure count, shifts, k-means, conversion identity, the deployment form."""
import pytest
import torch
import torch.nn.functional as F

from pipeline import models
from pipeline.methods.ghost import convert, export, kmeans
from pipeline.models.ghost import OFFSETS, GhostConv, ghost_layers, ghost_modules, ghostify, reparameterize, shift
from pipeline.metrics import count_params


def test_edsr_x2_ghost_matches_official_structure_count():
    m = models.build("edsr", 2, n_resblocks=32, n_feats=256, res_scale=0.1)
    plan = {n: {"intrinsic": list(range(128)), "ghost_src": list(range(128))} for n in ghost_layers(m)}
    ghostify(m, plan)
    assert len(ghost_layers(models.build("edsr", 2, n_resblocks=32, n_feats=256))) == 64
    assert count_params(m) == 21_847_619  # intrinsic convs + 9 shift weights per module


@pytest.mark.parametrize("d", [1, 2])
def test_each_shift_equals_depthwise_one_hot_conv(d):
    x = torch.rand(2, 5, 9, 11)
    for i, (dy, dx) in enumerate(OFFSETS):
        k = F.one_hot(torch.tensor(i), 9).float().view(1, 1, 3, 3).expand(5, 1, 3, 3)
        ref = F.conv2d(x, k, padding=d, dilation=d, groups=5)
        assert torch.equal(shift(x, dy * d, dx * d), ref), (dy, dx)


def test_kmeans_returns_distinct_nearest_filters():
    torch.manual_seed(0)
    centers = torch.randn(4, 27) * 5
    points = torch.cat([c + 0.01 * torch.randn(6, 27) for c in centers])
    chosen = kmeans(points, 4)
    assert len(set(chosen.tolist())) == 4
    assert sorted((chosen // 6).tolist()) == [0, 1, 2, 3]  # one representative per true cluster


def small_net():
    torch.manual_seed(0)
    return models.build("msrresnet", 4, nf=8, nb=2).eval()


def test_ratio_one_computes_the_source_function():
    src = small_net()
    ghost = convert(src, ratio=1.0).eval()
    assert all(len(m.ghost_src) == 0 for m in ghost_modules(ghost))
    x = torch.rand(1, 3, 12, 12)
    assert torch.allclose(ghost(x), src(x), atol=1e-6)


def test_duplicate_filters_convert_exactly_at_ratio_half():
    """When every filter has a twin, k-means keeps one of each pair and the ghosts (identity shift)
    reproduce the twins: the converted network equals the source before any fine-tune."""
    src = small_net()
    with torch.no_grad():
        for name in ghost_layers(src):
            conv = src.get_submodule(name)
            conv.weight[4:] = conv.weight[:4]
            conv.bias[4:] = conv.bias[:4]
    ghost = convert(src, ratio=0.5).eval()
    x = torch.rand(1, 3, 12, 12)
    assert torch.allclose(ghost(x), src(x), atol=1e-5)
    assert count_params(ghost) < count_params(src)


@pytest.mark.parametrize("per_channel", [False, True])
def test_reparameterized_equals_training_forward_with_hard_shifts(per_channel):
    net = convert(small_net(), 0.5, per_channel=per_channel)
    with torch.no_grad():
        for m in ghost_modules(net):
            m.shift_logits.normal_()  # arbitrary learned shifts
    net.eval()  # hard one-hot kernels through the depthwise conv
    x = torch.rand(2, 3, 10, 13)
    hard = net(x)
    reparameterize(net)
    assert not any(isinstance(mod, torch.nn.Conv2d) and mod.groups > 1 for mod in net.modules())
    assert torch.allclose(net(x), hard, atol=1e-6)


@pytest.mark.parametrize("mode", ["gumbel", "ste"])
def test_shift_logits_receive_gradient_in_training(mode):
    g = GhostConv(4, 8, [0, 2, 4, 6], [0, 1, 2, 3], mode=mode).train()
    g.tau = 0.5
    g(torch.rand(1, 4, 6, 6)).sum().backward()
    assert g.shift_logits.grad is not None and g.shift_logits.grad.abs().sum() > 0


def test_ste_noise_follows_the_released_epoch_factor():
    """Released: y = w + g 0.97^(epoch-1), hard = argmax |y|. Its script never advances the epoch (factor 1,
    noise_epoch_steps 0); with an epoch length the factor decays, and at factor 0 the sample is argmax |w|."""
    from pipeline.methods.ghost import AnnealedGhost

    net = convert(small_net(), 0.5, mode="ste")
    AnnealedGhost(10.0, 0.01, 100, noise_epoch_steps=10).before_step(None, net, None, None, 25)
    assert {m.noise_scale for m in ghost_modules(net)} == {0.97 ** 2}
    AnnealedGhost(10.0, 0.01, 100).before_step(None, net, None, None, 99)
    assert {m.noise_scale for m in ghost_modules(net)} == {1.0}

    g = GhostConv(4, 8, [0, 2, 4, 6], [0, 1, 2, 3], mode="ste").train()
    g.noise_scale = 0.0
    expected = F.one_hot(g.shift_logits.flatten(1).abs().argmax(1), 9).float().view_as(g.shift_logits)
    assert all(torch.equal(g.kernel(), expected) for _ in range(5))
    g.noise_scale = 1.0
    assert any(not torch.equal(g.kernel(), expected) for _ in range(50))


def test_exported_ghost_model_equals_the_trained_one_and_reloads(tmp_path):
    src = small_net()
    net = convert(src, 0.5)
    with torch.no_grad():
        for m in ghost_modules(net):
            m.shift_logits.normal_()  # arbitrary learned shifts
    net.eval()
    exported = export(net, src.config, 0.5, 1, "gumbel", False)
    assert exported.config["arch"] == "ghost" and exported.config["kwargs"]["source"]["arch"] == "msrresnet"
    x = torch.rand(1, 3, 9, 9)
    assert torch.allclose(exported(x), net(x), atol=1e-6)
    models.save(exported, tmp_path / "g")
    loaded = models.load(tmp_path / "g").eval()
    assert torch.equal(loaded(x), exported(x))


def test_a_network_without_residual_blocks_is_refused():
    with pytest.raises(ValueError, match="no residual-block convs"):
        convert(models.build("fsrcnn", 4, d=8), 0.5)


@pytest.mark.parametrize("ratio", [0.25, 0.3])
def test_ratio_below_half_repeats_intrinsics_and_exports(ratio, tmp_path):
    """Below 0.5 ghosts outnumber intrinsics: each intrinsic feeds several ghosts (GhostSR's x1.repeat)."""
    src = small_net()
    net = convert(src, ratio)
    for m in ghost_modules(net):
        assert m.primary.out_channels == 8 - len(m.ghost_src) and len(m.ghost_src) > m.primary.out_channels
        assert set(m.ghost_src.tolist()) == set(range(m.primary.out_channels))  # every intrinsic used
    with torch.no_grad():
        for m in ghost_modules(net):
            m.shift_logits.normal_()
    net.eval()
    x = torch.rand(1, 3, 9, 9)
    exported = export(net, src.config, ratio, 1, "gumbel", False)
    assert torch.allclose(exported(x), net(x), atol=1e-6)
    models.save(exported, tmp_path / "g")
    assert torch.equal(models.load(tmp_path / "g").eval()(x), exported(x))
    assert count_params(net) < count_params(convert(src, 0.5))


def test_converting_fsrcnn_or_carn_m_raises():
    for arch, kw in [("fsrcnn", {"d": 16}), ("carn_m", {"nf": 16})]:
        with pytest.raises(ValueError, match="no residual-block convs"):
            convert(models.build(arch, 4, **kw), 0.5)
