"""ClassSR: Class-Module, losses, tiling, batched per-class inference, budget, thresholds."""
import numpy as np
import pytest
import torch

from pipeline import models
from pipeline.data.classes import classify_psnr, rank_indices, tertile_thresholds
from pipeline.methods.classsr import average_loss, cheapest_adequate_branch, class_loss, with_branch
from pipeline.metrics import count_macs, count_params
from pipeline.models.classsr import Classifier
from pipeline.tiling import merge, positions, run_tiled, split
from pipeline.upscale import apply_budget, branch_flops, classsr_patchwise, upscale


def patchwise(model, lr, budget=1.0, batch=32):
    """ClassSR's tensor-level inference, as the entry point runs it: (SR, classes)."""
    return classsr_patchwise(model, lr, 4, 32, 28, budget, batch, branch_flops(model))


def image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_classifier_matches_official():
    c = Classifier()
    assert count_params(c) == 60_035
    assert c(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    assert abs(count_macs(c, (1, 3, 32, 32)) / 1e6 - 3.80) < 0.01


@pytest.mark.parametrize("arch, widths, total", [
    ("fsrcnn", [{"d": 16}, {"d": 36}, {"d": 56}], 112_940),
    ("carn_m", [{"nf": 36}, {"nf": 52}, {"nf": 64}], 645_476),
    ("msrresnet", [{"nf": 36}, {"nf": 52}, {"nf": 64}], 3_062_060),
])
def test_classsr_totals(arch, widths, total):
    assert count_params(models.build("classsr", 4, branch_arch=arch, branches=widths)) == total


def test_losses():
    one_hot = torch.eye(3)[[0, 1, 2, 0]]
    uniform = torch.full((4, 3), 1 / 3)
    assert class_loss(one_hot).item() == pytest.approx(0.0)
    assert class_loss(uniform).item() == pytest.approx(2.0)
    balanced = torch.eye(3)[[0, 1, 2, 0, 1, 2]]
    assert average_loss(balanced).item() == pytest.approx(0.0)
    assert average_loss(torch.eye(3)[[0] * 6]).item() == pytest.approx((4 + 2 + 2) / 8)


def test_thresholds_split_into_thirds():
    psnrs = np.arange(30.0)
    low, high = tertile_thresholds(psnrs)
    classes = classify_psnr(psnrs, low, high)
    assert np.bincount(classes).tolist() == [10, 10, 10]
    assert classes[0] == 2 and classes[-1] == 0  # low PSNR = hard
    assert classify_psnr([27.0, 30.0, 36.0], 27.16882, 35.149761).tolist() == [2, 1, 0]  # ClassSR's values


def test_positions_cover_the_image_or_drop_the_remainder():
    assert positions(100, 32, 28) == [0, 28, 56, 68]
    assert positions(100, 32, 28, cover_all=False) == [0, 28, 56]  # ClassSR: covered 88 px
    with pytest.raises(ValueError, match="smaller than the patch"):
        positions(20, 32, 28)


def test_reassembly_reproduces_a_known_function_exactly():
    img = torch.rand(3, 75, 93)
    nearest = lambda x: x.repeat_interleave(4, -1).repeat_interleave(4, -2)  # noqa: E731
    out = run_tiled(nearest, img, 4, 32, 28, batch=5)
    assert torch.allclose(out, nearest(img), atol=1e-6)
    cropped = run_tiled(nearest, img, 4, 32, 28, cover_all=False)
    assert cropped.shape == (3, (28 * 1 + 32) * 4, (28 * 2 + 32) * 4)
    # overlaps are averaged: a patch-dependent output gives the mean of the covering patches
    tiles = split(img, 32, 28)
    ids = torch.arange(len(tiles.boxes), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 128, 128)
    merged = merge(ids, tiles, 4)
    assert merged[0, 0, 0] == 0 and merged[0, 0, 28 * 4 + 1] == pytest.approx(0.5)


def test_images_smaller_than_a_patch_are_padded_and_cropped_back():
    img = torch.rand(3, 20, 45)
    nearest = lambda x: x.repeat_interleave(4, -1).repeat_interleave(4, -2)  # noqa: E731
    for cover_all in (True, False):
        out = run_tiled(nearest, img, 4, 32, 28, cover_all=cover_all)
        expected_w = 45 if cover_all else 32  # ClassSR's grid drops the remainder of the long side
        assert torch.allclose(out, nearest(img)[:, :, :expected_w * 4], atol=1e-6)
    out = upscale(tiny_classsr(), image(12, 30))
    assert out.image.shape == (48, 120, 3) and len(out.classes) == 1


def test_routing_target_is_the_cheapest_branch_within_tolerance():
    hr = torch.full((3, 3, 8, 8), 0.5)
    # per patch, branch outputs off by these amounts: PSNR = -20 log10(err)
    errs = [[0.02, 0.011, 0.01], [0.0101, 0.0101, 0.01], [0.05, 0.0105, 0.01]]
    srs = [torch.stack([hr[i] + errs[i][b] for i in range(3)]) for b in range(3)]
    assert cheapest_adequate_branch(srs, hr, 0.1).tolist() == [2, 0, 2]  # 0.0105 is 0.42 dB worse
    assert cheapest_adequate_branch(srs, hr, 1.0).tolist() == [1, 0, 1]
    model = tiny_classsr()
    sr, probs, branch_srs = model(torch.rand(2, 3, 8, 8), return_branches=True)
    assert torch.allclose(sr, sum(probs[:, i, None, None, None] * s for i, s in enumerate(branch_srs)))


def tiny_classsr():
    torch.manual_seed(0)
    return models.build("classsr", 4, branch_arch="fsrcnn", branches=[{"d": 4}, {"d": 6}, {"d": 8}]).eval()


def test_batched_per_class_equals_per_patch_inference():
    model = tiny_classsr()
    lr = torch.rand(3, 70, 90)
    batched_sr, batched_classes = patchwise(model, lr, batch=7)
    tiles = split(lr, 32, 28)
    per_patch = []
    with torch.no_grad():
        for p in tiles.patches:
            c = model.classifier(p[None]).argmax(1).item()
            per_patch.append(model.branches[c](p[None])[0])
    reference = merge(torch.stack(per_patch), tiles, 4)
    assert torch.allclose(batched_sr, reference, atol=1e-5)
    assert len(batched_classes) == len(tiles.boxes)


def test_budget_moves_least_confident_patches_to_cheaper_branches():
    probs = torch.tensor([[0.1, 0.1, 0.8], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7], [0.9, 0.05, 0.05]])
    flops = [1.0, 2.0, 4.0]
    assert apply_budget(probs, flops, 1.0).tolist() == [2, 2, 2, 0]
    classes = apply_budget(probs, flops, 0.6)
    assert sum(flops[c] for c in classes) <= 0.6 * 4 * len(classes)
    assert classes[1] < 2 and classes[0] == 2  # the least confident hard patch moved first
    model = tiny_classsr()
    full = upscale(model, image(64, 64))
    half = upscale(model, image(64, 64), budget=0.5)
    fl = branch_flops(model)
    # the budget holds when it is feasible; otherwise every patch goes to the cheapest branch
    assert half.flops_per_patch - 7.4e6 <= max(0.5 * fl[-1], fl[0]) + 1e-6  # FSRCNN: + the classifier's 7.4 M
    assert full.flops_per_patch >= half.flops_per_patch - 1e-6


def test_upscale_command_runs_classsr_and_plain_models(tmp_path):
    from PIL import Image

    from photos import photo
    from pipeline.upscale import main

    Image.fromarray(photo("chelsea", (0, 0, 40, 50))).save(tmp_path / "in.png")
    model = tiny_classsr()
    models.save(model, tmp_path / "classsr")
    models.save(models.build("msrresnet", 4, nf=8, nb=1), tmp_path / "plain")
    main([str(tmp_path / "classsr"), str(tmp_path / "in.png"), str(tmp_path / "a.png"), "--budget", "0.7"])
    main([str(tmp_path / "plain"), str(tmp_path / "in.png"), str(tmp_path / "b.png"), "--tile", "24"])
    for name in ("a.png", "b.png"):
        assert Image.open(tmp_path / name).size == (200, 160)
    with pytest.raises(SystemExit, match="cannot read image"):
        (tmp_path / "bad.png").write_bytes(b"x")
        main([str(tmp_path / "plain"), str(tmp_path / "bad.png"), str(tmp_path / "c.png")])


def test_classsr_with_a_ghost_branch_saves_and_reloads(tmp_path):
    """The composition stage's model: a ClassSR whose hard branch is a finalized Ghost model."""
    from pipeline.methods.ghost import convert, export

    torch.manual_seed(0)
    model = models.build("classsr", 4, branch_arch="msrresnet", branches=[{"nf": 4, "nb": 1}, {"nf": 6, "nb": 1},
                                                                          {"nf": 8, "nb": 1}]).eval()
    hard = model.branches[2]
    ghost = export(convert(hard, 0.5), hard.config, 0.5, 1, "gumbel", False)
    composed = with_branch(model, 2, ghost)
    assert composed.config["kwargs"]["branch_archs"] == ["msrresnet", "msrresnet", "ghost"]
    models.save(composed, tmp_path / "composed")
    reloaded = models.load(tmp_path / "composed").eval()
    lr = torch.rand(3, 40, 50)
    (a, a_classes), (b, b_classes) = patchwise(composed.eval(), lr), patchwise(reloaded, lr)
    assert torch.allclose(a, b, atol=1e-6) and (a_classes == b_classes).all()
    assert branch_flops(reloaded)[2] < branch_flops(model)[2]  # the Ghost branch is cheaper
    assert model.branches[2] is hard  # the source ClassSR is left as it was


def test_rank_shares_cover_every_patch_once_in_order():
    for n, world in [(11, 2), (10, 3), (2, 4), (7, 1)]:
        shares = [rank_indices(n, r, world) for r in range(world)]
        assert len({len(s) for s in shares}) == 1  # equal counts: all_gather needs them
        assert [i for s in shares for i in s][:n] == list(range(n))


def sequential_budget(probs, flops, budget):
    """The budget rule written as a plain loop: passes over the patches, least confident first, each
    moving a patch one branch down, until the class-weighted FLOPs fit."""
    classes = probs.argmax(dim=1).tolist()
    target = budget * max(flops) * len(classes)
    order = torch.argsort(probs.max(dim=1).values, stable=True).tolist()
    while budget < 1 and sum(flops[c] for c in classes) > target and any(classes):
        for i in order:
            if classes[i] > 0:
                classes[i] -= 1
                if sum(flops[c] for c in classes) <= target:
                    break
    return classes


def test_vectorised_budget_equals_the_sequential_rule():
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, k = int(rng.integers(1, 80)), int(rng.choice([2, 3, 4]))
        probs = torch.softmax(3 * torch.randn(n, k, generator=gen), 1)
        flops = sorted(rng.uniform(0.1, 5.0, k).tolist())
        budget = float(rng.choice([0.0, 0.2, 0.5, 0.65, 0.8, 0.99, 1.0]))
        assert apply_budget(probs, flops, budget).tolist() == sequential_budget(probs, flops, budget)


def test_classifier_flops_are_added_for_fsrcnn_branches_only():
    from pipeline.upscale import class_weighted_flops

    torch.manual_seed(0)
    srresnet = models.build("classsr", 4, branch_arch="msrresnet",
                            branches=[{"nf": 4, "nb": 1}, {"nf": 6, "nb": 1}, {"nf": 8, "nb": 1}]).eval()
    classes = np.array([0, 0, 1, 2, 2, 2])
    fl = branch_flops(srresnet)
    assert class_weighted_flops(srresnet, classes, fl) == pytest.approx((2 * fl[0] + fl[1] + 3 * fl[2]) / 6)
    fsrcnn = tiny_classsr()
    fl = branch_flops(fsrcnn)
    assert class_weighted_flops(fsrcnn, classes, fl) == pytest.approx((2 * fl[0] + fl[1] + 3 * fl[2]) / 6 + 7.4e6)


class DeviceLog(torch.overrides.TorchFunctionMode):
    """Every torch call in order: its name, whether it copies to the host, and the device types it touches."""

    HOST = {"cpu", "numpy", "tolist"}

    def __init__(self):
        super().__init__()
        self.calls, self.devices = [], set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        flat = torch.utils._pytree.tree_flatten((args, kwargs))[0]
        devices = {t.device.type for t in flat if isinstance(t, torch.Tensor)}
        self.devices |= devices
        to_host = name in self.HOST or (name == "to" and any(str(a) == "cpu" for a in flat[1:]))
        self.calls.append((name, to_host, devices))
        return func(*args, **kwargs)


def routes_to_hard(model):
    """A Class-Module that sends every patch to branch-O (with varying confidence): a budget must move some."""
    with torch.no_grad():
        model.classifier.fc.bias += torch.tensor([0.0, 0.0, 3.0])
    return model


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_classsr_inference_under_a_budget_stays_on_the_model_device(device):
    """The bug this pins: indices and counts moved to numpy mid-way (fine on a CPU, a crash on CUDA).
    Between the classifier's first conv and the last branch conv nothing is copied to the host; only
    the final image and the class list are; on CUDA every tensor touched is on the GPU (the LR input
    aside, copied there first)."""
    model = routes_to_hard(tiny_classsr()).to(device)
    lr = image(70, 90)
    with DeviceLog() as log:
        out = upscale(model, lr, budget=0.7, batch=7)
    convs = [i for i, (name, _, _) in enumerate(log.calls) if name == "conv2d"]
    transfers = [i for i, (_, host, _) in enumerate(log.calls) if host]
    midway = [log.calls[i][0] for i in transfers if convs[0] < i < convs[-1]]
    assert convs and transfers[-4:] == [i for i in transfers if i > convs[-1]] and not midway, midway
    assert log.devices <= {"cpu", torch.device(device).type}
    if device == "cuda":  # every call from the first conv to the last touches GPU tensors only
        on_cpu = [name for name, _, devs in log.calls[convs[0]:convs[-1] + 1] if "cpu" in devs]
        assert not on_cpu, on_cpu
    flops = branch_flops(model)
    assert np.mean([flops[c] for c in out.classes]) <= 0.7 * flops[-1] and len(set(out.classes)) > 1 and out.image.shape == (280, 360, 3)
    reference = upscale(routes_to_hard(tiny_classsr()), lr, budget=0.7, batch=70)  # on the CPU, one batch per branch
    np.testing.assert_array_equal(out.classes, reference.classes)
    assert np.abs(out.image.astype(int) - reference.image).max() <= 1


def test_canvas_memory_is_the_image_not_the_patches():
    """Outputs are merged a batch at a time: equal to merging every patch at once."""
    img = torch.rand(3, 75, 93)
    double = lambda x: x.repeat_interleave(2, -1).repeat_interleave(2, -2) * x.mean((1, 2, 3), keepdim=True)  # noqa: E731
    tiles = split(img, 32, 28)
    everything = merge(torch.cat([double(tiles.patches[i:i + 1]) for i in range(len(tiles.patches))]), tiles, 2)
    batched = run_tiled(double, img, 2, 32, 28, batch=3)
    assert torch.allclose(batched, everything)


@pytest.mark.slow
def test_tiled_whole_image_inference_is_within_a_hundredth_of_a_db_of_untiled():
    """Above TILE_ABOVE LR pixels a plain model runs on overlapping tiles (bounded memory on Test4K/8K):
    the official E-RFDN (whose ESA branch sees far) on a 128x128 LR photo in 64-px tiles, the default
    overlap, against one pass."""
    from photos import photo
    from pipeline.data.images import bicubic_downscale, mod_crop
    from pipeline.metrics import psnr
    from pipeline.upscale import TILE_ABOVE, TILE_OVERLAP

    from test_models import WEIGHTS

    model = models.import_official("erfdn", WEIGHTS).eval()
    hr = mod_crop(photo("astronaut", None), 4)
    lr = bicubic_downscale(hr, 4)
    whole = upscale(model, lr, tile=0).image
    tiled = upscale(model, lr, tile=64, overlap=TILE_OVERLAP, tile_above=0).image
    assert whole.shape == tiled.shape and np.abs(whole.astype(int) - tiled).max() > 0  # it did tile
    assert abs(psnr(tiled, hr, 4, True) - psnr(whole, hr, 4, True)) < 0.01
    assert np.array_equal(upscale(model, lr).image, whole) and 128 * 128 <= TILE_ABOVE  # small: one pass


def test_an_image_smaller_than_the_model_needs_is_padded_and_cropped_back():
    """E-RFDN's ESA needs >= 15 LR px: a 12x10 LR image (a Test2K image of a small DIV8K file) still runs."""
    from test_models import WEIGHTS

    model = models.import_official("erfdn", WEIGHTS).eval()
    out = upscale(model, image(12, 10)).image
    assert out.shape == (48, 40, 3)
    big = image(40, 40)
    assert np.array_equal(upscale(model, big).image, upscale(model, big, tile=0).image)
