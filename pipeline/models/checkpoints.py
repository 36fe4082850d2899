"""Published checkpoints in: an official ``.pt`` / ``.pth`` file becomes one of our models.

    model = models.load("edsr_x4-4f62e9ef.pt")            # EDSR-PyTorch's EDSR 32x256 x4
    model = models.load("ClassSR_RCAN.pth")               # ClassSR's released model: classifier + 3 branches
    model = models.load("x.pth", layout="basicsr-edsr")   # name the layout when detection is not enough
    model = models.load("assets/weights/rlfn-x4.safetensors")  # the official tensors, as safetensors

This module converts tensors (names, value scale, architecture facts read from the shapes);
``models.load`` builds the model and loads them strictly. Files are read with
``torch.load(weights_only=True)`` only (never full unpickling); anything but a dict of tensors is
refused, and so is a tensor name or shape the layout does not have (by name).

Layouts (``LAYOUTS``; each official code's ``state_dict`` names, listed in tests/fixtures):

| layout | official code | input range |
|---|---|---|
| ``edsr-pytorch`` | sanghyun-son/EDSR-PyTorch ``model/edsr.py`` (baseline 16x64, EDSR 32x256, x2/x3/x4) | 0-255 |
| ``rcan-pytorch`` | EDSR-PyTorch / yulunzhang ``model/rcan.py`` (also ClassSR-RCAN's branches) | 0-255 |
| ``basicsr-msrresnet``, ``basicsr-edsr``, ``basicsr-rcan`` | XPixelGroup/BasicSR ``archs/*_arch.py`` (``params`` / ``params_ema``) | 0-1 (EDSR/RCAN x255 inside) |
| ``mmsr-srresnet``, ``classsr-carn-m``, ``classsr-fsrcnn`` | Xiangtaokong/ClassSR ``archs/{SRResNet,CARN,FSRCNN}_arch.py`` (its branch models) | 0-1 |
| ``classsr`` | ClassSR ``classSR_*_arch.py``: ``classifier.*`` + ``net1/2/3.*`` (simple -> hard) | 0-1 (RCAN: 0-255) |
| ``rfdn`` | njulj/RFDN ``RFDN.py`` (the AIM 2020 E-RFDN release, trained on 0-255) | 0-255 |
| ``rlfn`` | bytedance/RLFN ``model/rlfn.py`` (``model_zoo/rlfn_x{2,4}.pth``) | 0-255 |
| ``bsrn`` | xiaom233/BSRN ``basicsr/archs/BSRN_arch.py``, BSConvU (BasicSR ``params``) | 0-1 |

Our models all take [0, 1]. Networks with sigmoid attention trained on 0-255 (E-RFDN, RLFN) keep their
weights and scale their input and output (``img_range``). Any other network trained on 0-255 becomes the same function on [0, 1] exactly
(up to float rounding): convs, ReLUs, residual sums, pixel shuffle and BatchNorm-free paths are
positively homogeneous, so f_255(255 x) / 255 is the network with every bias divided by 255. The one
non-homogeneous part, RCAN's channel attention (a sigmoid of the pooled features), keeps its biases
and gets its first 1x1 conv's weights x 255, so the gate sees exactly what it saw on 0-255.
FSRCNN's scale is not in its tensors (a transposed conv's stride); ClassSR is x4 only, so x4.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from pipeline.models.common import DIV2K_MEAN

RANGE_255 = 255.0


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or of a ``.pt`` / ``.pth`` file (``params_ema`` /
    ``params`` / ``state_dict`` wrappers unwrapped) read with ``weights_only=True``; a file holding
    anything else, or cut short, is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled classes, corrupt or truncated files: weights_only refuses them
        raise ValueError(f"{path}: not a readable tensor checkpoint (read with weights_only=True): {e}") from e
    for key in ("params_ema", "params", "state_dict"):  # BasicSR keeps the EMA weights beside the raw ones
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}  # saved from DataParallel


# ---- helpers ---------------------------------------------------------------------------------------

def _indices(state: dict, pattern: str) -> list[int]:
    """The distinct integers matched by the group of ``pattern`` in the tensor names, sorted."""
    return sorted({int(m.group(1)) for k in state if (m := re.match(pattern, k))})


def _rename(state: dict, rules: list[tuple[str, str]]) -> dict:
    out = {}
    for name, t in state.items():
        for pattern, repl in rules:
            name = re.sub(pattern, repl, name)
        out[name] = t.float() if t.is_floating_point() else t
    return out


def _to_unit_range(state: dict, attention: str | None = None) -> dict:
    """Weights of a network trained on 0-255 as the same function on [0, 1]: biases / 255, except in the
    channel attention whose name matches ``attention``: there the first conv's weights x 255."""
    out = {}
    for name, t in state.items():
        if attention and re.search(attention, name):
            out[name] = t * RANGE_255 if re.search(attention + r"0\.weight$", name) else t
        else:
            out[name] = t / RANGE_255 if name.endswith(".bias") else t
    return out


def _mean_shift(prefix: str, state: dict) -> dict:
    """The DIV2K-mean MeanShift tensors on [0, 1] that a layout does not save (BasicSR holds the mean as
    an unsaved buffer), unless the state has them."""
    out = {}
    for name, sign in (("sub_mean", -1), ("add_mean", 1)):
        if f"{prefix}{name}.weight" not in state:
            out[f"{prefix}{name}.weight"] = torch.eye(3).view(3, 3, 1, 1)
            out[f"{prefix}{name}.bias"] = sign * torch.tensor(DIV2K_MEAN)
    return out


def _scale_from_upsampler(n_convs: int, factor: int, path, what: str) -> int:
    """x2: one conv to 4C, x3: one conv to 9C, x4: two convs to 4C (EDSR-PyTorch's Upsampler)."""
    scale = {(1, 4): 2, (1, 9): 3, (2, 4): 4}.get((n_convs, factor))
    if scale is None:
        raise ValueError(f"{path}: {what} upsampler of {n_convs} convs to {factor}x channels is not x2, x3 or x4")
    return scale


def _res_scale(n_blocks: int, n_feats: int) -> float:
    return 0.1 if (n_blocks, n_feats) == (32, 256) else 1.0  # EDSR 32x256 (the paper's); 1 otherwise


def _rcan_kwargs(state: dict, group: str, block: str, ca: str, path) -> dict:
    nf = state["head.weight"].shape[0]
    groups = _indices(state, rf"body\.(\d+)\.{group}\.0\.")
    blocks = _indices(state, rf"body\.0\.{group}\.(\d+)\.{block}")
    squeeze = state[f"body.0.{group}.0.{ca}"].shape[0]
    reduction = 16 if nf // 16 == squeeze else nf // squeeze  # 16 everywhere; nf 36 still squeezes to 2
    return {"n_resgroups": len(groups), "n_resblocks": len(blocks), "nf": nf, "reduction": reduction}


# ---- one converter per official layout: state -> (arch, scale, kwargs, our state) --------------------

def convert_edsr_pytorch(state: dict, path) -> tuple[str, int, dict, dict]:
    ours = _rename(state, [(r"^head\.0\.", "head."), (r"^body\.(\d+)\.body\.0\.", r"body.\1.conv1."),
                           (r"^body\.(\d+)\.body\.2\.", r"body.\1.conv2.")])
    blocks = _indices(ours, r"body\.(\d+)\.conv1\.weight$")
    n_feats = ours["head.weight"].shape[0]
    ups = _indices(ours, r"tail\.0\.(\d+)\.weight$")
    scale = _scale_from_upsampler(len(ups), ours[f"tail.0.{ups[0]}.weight"].shape[0] // n_feats, path, "EDSR")
    kwargs = {"n_resblocks": len(blocks), "n_feats": n_feats, "res_scale": _res_scale(len(blocks), n_feats)}
    return "edsr", scale, kwargs, _to_unit_range(ours)


def convert_rcan_pytorch(state: dict, path) -> tuple[str, int, dict, dict]:
    """The 0-255 RCAN of EDSR-PyTorch (ClassSR's RCAN branches): our RCAN names but ``head.0``."""
    ours = _rename(state, [(r"^head\.0\.", "head.")])
    kwargs = _rcan_kwargs(ours, "body", "body.0.weight", "body.3.conv_du.0.weight", path)
    ups = _indices(ours, r"tail\.0\.(\d+)\.weight$")
    scale = _scale_from_upsampler(len(ups), ours[f"tail.0.{ups[0]}.weight"].shape[0] // kwargs["nf"], path, "RCAN")
    return "rcan", scale, kwargs, _to_unit_range(ours, attention=r"\.conv_du\.")


def convert_basicsr_msrresnet(state: dict, path, trunk: str = "body", hr: str = "conv_hr"):
    ours = _rename(state, [(rf"^{trunk}\.", "body."), (rf"^{hr}\.", "hr_conv.")])
    nf = ours["conv_first.weight"].shape[0]
    factor = ours["upconv1.weight"].shape[0] // nf
    scale = 4 if "upconv2.weight" in ours else {4: 2, 9: 3}.get(factor)
    if scale is None:
        raise ValueError(f"{path}: MSRResNet upconv1 to {factor}x channels is not x2, x3 or x4")
    return "msrresnet", scale, {"nf": nf, "nb": len(_indices(ours, r"body\.(\d+)\.conv1\.weight$"))}, ours


def convert_mmsr_srresnet(state: dict, path):
    """ClassSR's (mmsr's) MSRResNet: ``recon_trunk`` and ``HRconv``."""
    return convert_basicsr_msrresnet(state, path, trunk="recon_trunk", hr="HRconv")


def convert_basicsr_edsr(state: dict, path):
    blocks = _indices(state, r"body\.(\d+)\.conv1\.weight$")
    ours = _rename(state, [(r"^conv_first\.", "head."), (r"^conv_after_body\.", f"body.{len(blocks)}."),
                           (r"^upsample\.", "tail.0."), (r"^conv_last\.", "tail.1.")])
    n_feats = ours["head.weight"].shape[0]
    ups = _indices(ours, r"tail\.0\.(\d+)\.weight$")
    scale = _scale_from_upsampler(len(ups), ours[f"tail.0.{ups[0]}.weight"].shape[0] // n_feats, path, "EDSR")
    kwargs = {"n_resblocks": len(blocks), "n_feats": n_feats, "res_scale": _res_scale(len(blocks), n_feats)}
    # BasicSR feeds (x - mean) * 255 to the convs: the same homogeneity as a 0-255 network
    return "edsr", scale, kwargs, {**_to_unit_range(ours), **_mean_shift("", ours)}


def convert_basicsr_rcan(state: dict, path):
    groups = _indices(state, r"body\.(\d+)\.residual_group\.")
    blocks = _indices(state, r"body\.0\.residual_group\.(\d+)\.rcab")
    ours = _rename(state, [
        (r"^conv_first\.", "head."),
        (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.", r"body.\1.body.\2.body.3.conv_du.0."),
        (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.", r"body.\1.body.\2.body.3.conv_du.2."),
        (r"^body\.(\d+)\.residual_group\.(\d+)\.rcab\.", r"body.\1.body.\2.body."),
        (r"^body\.(\d+)\.conv\.", rf"body.\1.body.{len(blocks)}."),
        (r"^conv_after_body\.", f"body.{len(groups)}."), (r"^upsample\.", "tail.0."), (r"^conv_last\.", "tail.1.")])
    kwargs = _rcan_kwargs(ours, "body", "body.0.weight", "body.3.conv_du.0.weight", path)
    ups = _indices(ours, r"tail\.0\.(\d+)\.weight$")
    scale = _scale_from_upsampler(len(ups), ours[f"tail.0.{ups[0]}.weight"].shape[0] // kwargs["nf"], path, "RCAN")
    return "rcan", scale, kwargs, {**_to_unit_range(ours, attention=r"\.conv_du\."), **_mean_shift("", ours)}


def convert_classsr_carn_m(state: dict, path):
    ours = _rename(state, [(r"^upsample\.up\.body\.", "upsample.")])
    nf = ours["entry.weight"].shape[0]
    ups = _indices(ours, r"upsample\.(\d+)\.weight$")
    factor = ours["upsample.0.weight"].shape[0] // nf
    scale = _scale_from_upsampler(len(ups), factor, path, "CARN-M")
    return "carn_m", scale, {"nf": nf, "group": nf // ours["b1.b1.body.0.weight"].shape[1]}, ours


def convert_classsr_fsrcnn(state: dict, path):
    ours = _rename(state, [])
    mapping = [k for k, t in ours.items() if re.match(r"body_conv\.\d+\.weight$", k) and t.ndim == 4]  # 3x3s
    kwargs = {"d": ours["head_conv.0.weight"].shape[0], "s": ours["body_conv.0.0.weight"].shape[0], "m": len(mapping)}
    return "fsrcnn", 4, kwargs, ours


def convert_rfdn(state: dict, path):
    ours = _rename(state, [])
    nf = ours["fea_conv.weight"].shape[0]
    scale = round((ours["upsampler.0.weight"].shape[0] / 3) ** 0.5)
    kwargs = {"nf": nf, "num_blocks": len(_indices(ours, r"B(\d+)\.c1_d\.weight$")),
              "attention": "esa" if "B1.esa.conv1.weight" in ours else "cca", "img_range": RANGE_255}
    return "rfdn", scale, kwargs, ours


def convert_rlfn(state: dict, path):
    ours = _rename(state, [])
    scale = round((ours["upsampler.0.weight"].shape[0] / 3) ** 0.5)
    kwargs = {"nf": ours["conv_1.weight"].shape[0], "num_blocks": len(_indices(ours, r"block_(\d+)\.c1_r\.weight$")),
              "esa_channels": ours["block_1.esa.conv1.weight"].shape[0], "img_range": RANGE_255}
    return "rlfn", scale, kwargs, ours


def convert_bsrn(state: dict, path):
    ours = _rename(state, [])
    scale = round((ours["upsampler.upsampleOneStep.0.weight"].shape[0] / 3) ** 0.5)
    kwargs = {"nf": ours["fea_conv.pw.weight"].shape[0], "num_blocks": len(_indices(ours, r"B(\d+)\.c1_d\.weight$"))}
    return "bsrn", scale, kwargs, ours


BRANCH_LAYOUTS = ("rcan-pytorch", "mmsr-srresnet", "classsr-carn-m", "classsr-fsrcnn")


def convert_classsr(state: dict, path):
    """ClassSR's released model: ``classifier.*`` (its ``lastOut`` is our ``fc``) + ``net1..3.*``, each
    branch in its own backbone's layout (detected); x4."""
    ours = {re.sub(r"^classifier\.lastOut\.", "classifier.fc.", k): v.float()
            for k, v in state.items() if k.startswith("classifier.")}
    nets = _indices(state, r"net(\d+)\.")
    branches, archs = [], set()
    for i, n in enumerate(nets):
        sub = {k[len(f"net{n}."):]: v for k, v in state.items() if k.startswith(f"net{n}.")}
        layout = detect_layout(sub)
        if layout not in BRANCH_LAYOUTS:
            raise ValueError(f"{path}: ClassSR branch net{n} is in no known backbone layout "
                             f"({', '.join(BRANCH_LAYOUTS)}); first tensors: {list(sub)[:4]}")
        arch, scale, kwargs, tensors = LAYOUTS[layout](sub, f"{path} net{n}")
        branches.append(kwargs)
        archs.add(arch)
        ours.update({f"branches.{i}.{k}": v for k, v in tensors.items()})
    if len(archs) != 1:
        raise ValueError(f"{path}: ClassSR branches of different architectures {sorted(archs)}")
    return "classsr", 4, {"branch_arch": archs.pop(), "branches": branches}, ours


LAYOUTS = {
    "edsr-pytorch": convert_edsr_pytorch, "rcan-pytorch": convert_rcan_pytorch,
    "basicsr-msrresnet": convert_basicsr_msrresnet, "basicsr-edsr": convert_basicsr_edsr,
    "basicsr-rcan": convert_basicsr_rcan, "mmsr-srresnet": convert_mmsr_srresnet,
    "classsr-carn-m": convert_classsr_carn_m, "classsr-fsrcnn": convert_classsr_fsrcnn,
    "classsr": convert_classsr, "rfdn": convert_rfdn, "rlfn": convert_rlfn, "bsrn": convert_bsrn,
}

# The tensor names that identify each layout (all must be present); checked in this order.
SIGNATURES = [
    ("classsr", ("classifier.CondNet.0.weight", "net1.")),
    ("rcan-pytorch", ("head.0.weight", "body.0.body.0.body.3.conv_du.0.weight")),
    ("edsr-pytorch", ("head.0.weight", "sub_mean.weight", "body.0.body.0.weight")),
    ("basicsr-rcan", ("conv_first.weight", "body.0.residual_group.0.rcab.0.weight")),
    ("basicsr-edsr", ("conv_first.weight", "conv_after_body.weight", "upsample.0.weight")),
    ("basicsr-msrresnet", ("conv_first.weight", "body.0.conv1.weight", "conv_hr.weight")),
    ("mmsr-srresnet", ("conv_first.weight", "recon_trunk.0.conv1.weight", "HRconv.weight")),
    ("classsr-carn-m", ("entry.weight", "b1.b1.body.0.weight", "upsample.up.body.0.weight")),
    ("classsr-fsrcnn", ("head_conv.0.weight", "body_conv.0.0.weight", "tail_conv.weight")),
    ("rfdn", ("fea_conv.weight", "B1.c1_d.weight", "LR_conv.weight")),
    ("rlfn", ("conv_1.weight", "block_1.c1_r.weight", "block_1.esa.conv1.weight", "upsampler.0.weight")),
    ("bsrn", ("fea_conv.pw.weight", "B1.c1_r.pw.weight", "c1.weight", "upsampler.upsampleOneStep.0.weight")),
]


def _has(state: dict, key: str) -> bool:
    return key in state if not key.endswith(".") else any(k.startswith(key) for k in state)


def detect_layout(state: dict) -> str | None:
    return next((name for name, keys in SIGNATURES if all(_has(state, k) for k in keys)), None)


def convert(path, layout: str | None = None) -> tuple[str, int, dict, dict]:
    """(arch, scale, constructor kwargs, our state dict) of the official checkpoint ``path`` (layout detected
    from the tensor names unless given)."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout '{layout}'; known: {', '.join(LAYOUTS)}")
    state = read_state_dict(path)
    layout = layout or detect_layout(state)
    if layout is None:
        raise ValueError(f"{path}: unknown checkpoint layout (known: {', '.join(LAYOUTS)}); first tensors: "
                         f"{list(state)[:4]}")
    missing = [k for k in dict(SIGNATURES)[layout] if not _has(state, k)]
    if missing:
        raise ValueError(f"{path}: not in the '{layout}' layout: tensor '{missing[0]}' is missing")
    return LAYOUTS[layout](state, path)


def check_fits(state: dict, expected: dict, what: str):
    """Refuse, by name, a tensor the model does not have, one it lacks, or one of another shape."""
    unknown, missing = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
    if unknown or missing:
        raise ValueError(f"{what}: unknown tensors {unknown[:5]}, missing {missing[:5]}")
    for name, t in state.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise ValueError(f"{what}: tensor '{name}' has shape {tuple(t.shape)}, the layout expects "
                             f"{tuple(expected[name].shape)}")
