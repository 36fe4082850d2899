"""Every official checkpoint layout imports and runs; the 0-255 and BasicSR conversions are the official
function on [0, 1] (checked against a functional re-implementation of the official forward pass).

The layouts (tensor names and shapes of each official ``state_dict``) are in
``tests/fixtures/checkpoint_layouts.json.gz``, copied from the listings made by instantiating each
official model definition unmodified (see tests/fixtures/README.md)."""
import gzip
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pipeline import models
from pipeline.metrics import count_params
from pipeline.models.common import DIV2K_MEAN

FIXTURE = Path(__file__).parent / "fixtures/checkpoint_layouts.json.gz"
LAYOUTS = json.loads(gzip.decompress(FIXTURE.read_bytes()))
SHARED = Path(__file__).resolve().parents[2] / "shared/reference/checkpoints"
BASICSR = ("basicsr_",)  # saved as {'params': state_dict}

# layout listing -> (arch, scale, kwargs) our import must build
EXPECTED = {
    "edsr-pytorch_baseline_x2": ("edsr", 2, {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}),
    "edsr-pytorch_baseline_x3": ("edsr", 3, {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}),
    "edsr-pytorch_baseline_x4": ("edsr", 4, {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}),
    "edsr-pytorch_edsr_x2": ("edsr", 2, {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}),
    "edsr-pytorch_edsr_x3": ("edsr", 3, {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}),
    "edsr-pytorch_edsr_x4": ("edsr", 4, {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}),
    "basicsr_msrresnet_x4": ("msrresnet", 4, {"nf": 64, "nb": 16}),
    "basicsr_edsr_m_x4": ("edsr", 4, {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}),
    "basicsr_edsr_l_x4": ("edsr", 4, {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}),
    "basicsr_rcan_x4": ("rcan", 4, {"n_resgroups": 10, "n_resblocks": 20, "nf": 64, "reduction": 16}),
    "classsr_fsrcnn": ("classsr", 4, {"branch_arch": "fsrcnn", "branches": [
        {"d": d, "s": 12, "m": 4} for d in (16, 36, 56)]}),
    "classsr_carn": ("classsr", 4, {"branch_arch": "carn_m", "branches": [
        {"nf": nf, "group": 4} for nf in (36, 52, 64)]}),
    "classsr_srresnet": ("classsr", 4, {"branch_arch": "msrresnet", "branches": [
        {"nf": nf, "nb": 16} for nf in (36, 52, 64)]}),
    "classsr_rcan": ("classsr", 4, {"branch_arch": "rcan", "branches": [
        {"n_resgroups": 10, "n_resblocks": 20, "nf": nf, "reduction": 16} for nf in (36, 50, 64)]}),
}


def random_state(listing: dict, seed: int = 0) -> dict:
    """Tensors of the listed names and shapes with values that keep a deep random network finite."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in listing.items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(10)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) >= 2:  # conv / linear weights: variance 0.5 / fan_in
            out[name] = torch.randn(shape, generator=g) * math.sqrt(0.5 / math.prod(shape[1:]))
        else:
            out[name] = torch.randn(shape, generator=g) * 0.01
    return out


def test_fixture_listings_match_the_official_ones_when_available():
    if not SHARED.is_dir():
        pytest.skip("the official listings live in ../shared only")
    for name, layout in LAYOUTS.items():
        assert json.loads((SHARED / f"{name}.json").read_text())["tensors"] == layout["tensors"], name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_official_layout_imports_and_runs(tmp_path, name):
    listing = LAYOUTS[name]
    state = random_state(listing["tensors"])
    path = tmp_path / f"{name}.{'pth' if name.startswith(('basicsr', 'classsr')) else 'pt'}"
    torch.save({"params": state} if name.startswith(BASICSR) else state, path)
    model = models.load(path).eval()
    arch, scale, kwargs = EXPECTED[name]
    assert model.config == {"arch": arch, "scale": scale, "kwargs": kwargs}
    ours = sum(t.numel() for t in model.state_dict().values())
    # BasicSR holds EDSR/RCAN's mean as an unsaved buffer: our model carries it (2 x 12 values)
    assert ours == listing["state_dict_numel"] + (24 if name in ("basicsr_edsr_m_x4", "basicsr_edsr_l_x4",
                                                                   "basicsr_rcan_x4") else 0)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 16, 16))
    assert out.shape == (1, 3, 16 * scale, 16 * scale) and torch.isfinite(out).all()


def test_classsr_param_counts_are_the_papers():
    counts = {}
    for name in ("classsr_fsrcnn", "classsr_carn", "classsr_srresnet", "classsr_rcan"):
        arch, scale, kwargs = EXPECTED[name]
        with torch.device("meta"):
            counts[name] = count_params(models.build(arch, scale, **kwargs))
    # methods.md: 112,940 / 645,476 / 3,062,060 / 30,114,948 (CARN and RCAN count their MeanShift convs)
    assert counts == {"classsr_fsrcnn": 112_940, "classsr_carn": 645_476, "classsr_srresnet": 3_062_060,
                      "classsr_rcan": 30_114_948}


# ---- the conversions compute the official function -----------------------------------------------

def basicsr_rcan_forward(sd: dict, x: torch.Tensor, groups: int, blocks: int) -> torch.Tensor:
    """BasicSR 1.4.2 ``rcan_arch.RCAN.forward`` (x4, img_range 255), written out on its tensor names."""
    def c(name, t):
        w = sd[f"{name}.weight"]
        return F.conv2d(t, w, sd[f"{name}.bias"], padding=w.shape[-1] // 2)

    mean = torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1)
    x = c("conv_first", (x - mean) * 255.0)
    h = x
    for g in range(groups):
        r = h
        for b in range(blocks):
            p = f"body.{g}.residual_group.{b}.rcab"
            y = c(f"{p}.2", torch.relu(c(f"{p}.0", r)))
            a = torch.sigmoid(c(f"{p}.3.attention.3", torch.relu(c(f"{p}.3.attention.1", y.mean((2, 3), keepdim=True)))))
            r = r + y * a
        h = c(f"body.{g}.conv", r) + h
    h = c("conv_after_body", h) + x
    h = F.pixel_shuffle(c("upsample.2", F.pixel_shuffle(c("upsample.0", h), 2)), 2)
    return c("conv_last", h) / 255.0 + mean


def big_biases(state: dict, std: float) -> dict:
    """Biases on the 0-255 scale matter: make them large so a wrong bias scale shows."""
    return {k: (torch.randn_like(v) * std if k.endswith("bias") and "mean" not in k else v) for k, v in state.items()}


def test_basicsr_rcan_imports_as_the_official_function_on_0_1(tmp_path):
    listing = {k: v for k, v in LAYOUTS["basicsr_rcan_x4"]["tensors"].items()
               if not k.startswith("body.") or k.startswith(("body.0.", "body.1."))}
    listing = {k: v for k, v in listing.items() if ".residual_group." not in k
               or int(k.split(".residual_group.")[1].split(".")[0]) < 3}
    sd = big_biases(random_state(listing, seed=1), 2.0)
    torch.save({"params_ema": sd, "params": random_state(listing, seed=2)}, tmp_path / "rcan.pth")
    model = models.load(tmp_path / "rcan.pth").eval()
    assert model.config["kwargs"] == {"n_resgroups": 2, "n_resblocks": 3, "nf": 64, "reduction": 16}
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.allclose(model(x), basicsr_rcan_forward(sd, x, 2, 3), atol=1e-5)  # params_ema wins


def test_classsr_rcan_branch_on_0_255_imports_exactly(tmp_path):
    """ClassSR-RCAN's branches are EDSR-PyTorch RCANs on 0-255 (learnable MeanShift loaded from the file)."""
    torch.manual_seed(0)
    official = models.build("rcan", 4, n_resgroups=2, n_resblocks=2, nf=36, reduction=16, rgb_range=255.0).eval()
    state = big_biases({k.replace("head.", "head.0.", 1) if k.startswith("head.") else k: v
                        for k, v in official.state_dict().items()}, 3.0)
    official.load_state_dict({k.replace("head.0.", "head.", 1): v for k, v in state.items()})
    torch.save(state, tmp_path / "RCAN_branch1.pth")
    model = models.load(tmp_path / "RCAN_branch1.pth").eval()
    assert model.config["kwargs"]["reduction"] == 16  # 36 channels squeeze to 2, as the official's
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(model(x), official(x * 255) / 255, atol=1e-5)


def to_basicsr_edsr(state: dict, n_blocks: int) -> dict:
    out = {}
    for k, v in state.items():
        if "mean" in k:
            continue  # an unsaved buffer in BasicSR
        k = k.replace("head.", "conv_first.").replace(f"body.{n_blocks}.", "conv_after_body.")
        out[k.replace("tail.0.", "upsample.").replace("tail.1.", "conv_last.")] = v
    return out


def test_basicsr_edsr_imports_as_the_official_function(tmp_path):
    torch.manual_seed(1)
    official = models.build("edsr", 3, n_resblocks=2, n_feats=16, rgb_range=255.0).eval()  # (x - mean) * 255 inside
    official.load_state_dict(big_biases(official.state_dict(), 2.0))
    torch.save({"params": to_basicsr_edsr(official.state_dict(), 2)}, tmp_path / "EDSR_Mx3.pth")
    model = models.load(tmp_path / "EDSR_Mx3.pth").eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.allclose(model(x), official(x * 255) / 255, atol=1e-5)


@pytest.mark.parametrize("arch, kwargs, rename", [
    ("msrresnet", {"nf": 16, "nb": 2}, [("body.", "recon_trunk."), ("hr_conv.", "HRconv.")]),
    ("msrresnet", {"nf": 16, "nb": 2}, [("hr_conv.", "conv_hr.")]),
    ("carn_m", {"nf": 16, "group": 4}, [("upsample.", "upsample.up.body.")]),
    ("fsrcnn", {"d": 16, "s": 12, "m": 4}, []),
], ids=["mmsr-srresnet", "basicsr-msrresnet", "classsr-carn-m", "classsr-fsrcnn"])
def test_classsr_model_with_its_branches_imports_exactly(tmp_path, arch, kwargs, rename):
    """The mmsr layout: classifier (``lastOut``) + net1..3 in the branch's own layout."""
    torch.manual_seed(2)
    ours = models.build("classsr", 4, branch_arch=arch, branches=[kwargs] * 3).eval()
    official = {}
    for k, v in ours.state_dict().items():
        k = k.replace("classifier.fc.", "classifier.lastOut.")
        if k.startswith("branches."):
            i, rest = k[len("branches."):].split(".", 1)
            for a, b in rename:
                rest = rest.replace(a, b, 1) if rest.startswith(a) else rest
            k = f"net{int(i) + 1}.{rest}"
        official[k] = v
    if arch == "msrresnet" and rename[0][0] == "hr_conv.":  # BasicSR's standalone MSRResNet, not ClassSR's
        official = {k.split(".", 1)[1]: v for k, v in official.items() if k.startswith("net1.")}
        ours = ours.branches[0]
    torch.save(official, tmp_path / "model.pth")
    loaded = models.load(tmp_path / "model.pth").eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), ours(x))


def test_rfdn_release_layout_is_the_official_erfdn(tmp_path, repo):
    from safetensors.torch import load_file

    weights = repo / "assets/weights/e-rfdn-aim2020-x4.safetensors"
    torch.save(load_file(str(weights)), tmp_path / "RFDN_AIM.pth")
    loaded = models.load(tmp_path / "RFDN_AIM.pth").eval()
    official = models.import_official("erfdn", weights).eval()
    assert loaded.config == official.config
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        assert torch.equal(loaded(x), official(x))


def test_a_named_layout_that_does_not_fit_fails_by_name(tmp_path):
    torch.save(random_state(LAYOUTS["basicsr_msrresnet_x4"]["tensors"]), tmp_path / "m.pth")
    with pytest.raises(ValueError, match="not in the 'basicsr-edsr' layout: tensor 'conv_after_body.weight'"):
        models.load(tmp_path / "m.pth", layout="basicsr-edsr")
    with pytest.raises(ValueError, match="unknown checkpoint layout 'nope'"):
        models.load(tmp_path / "m.pth", layout="nope")


def test_ghost_and_slim_work_on_an_imported_model(tmp_path):
    from test_checkpoints import official_edsr_state

    from pipeline.methods import ghost
    from pipeline.models.slim import slim

    torch.manual_seed(3)
    torch.save(official_edsr_state(models.build("edsr", 4, n_resblocks=2, n_feats=16, rgb_range=255.0)),
               tmp_path / "edsr.pt")
    teacher = models.load(tmp_path / "edsr.pt").eval()
    x = torch.rand(1, 3, 8, 8)
    student = slim(teacher, 0.5).eval()
    assert student.config["kwargs"]["n_feats"] == 8
    ghosted = ghost.convert(teacher, ratio=0.5).eval()  # shifts at the identity: ghosts copy their cluster's
    with torch.no_grad():
        assert student(x).shape == ghosted(x).shape == (1, 3, 32, 32)
        assert torch.isfinite(ghosted(x)).all()
