"""Published checkpoints in: an official ``.pt`` / ``.pth`` file becomes one of our models.

    model = models.load("edsr_x4-4f62e9ef.pt")      # EDSR-PyTorch's EDSR 32x256 x4

This module converts tensors (name, scale, shape facts); ``models.load`` builds the model and loads them.

Files are read with ``torch.load(weights_only=True)`` only (never full unpickling); anything but a dict
of tensors is refused, and so is a tensor name or shape the layout does not have (by name).

Layouts:
- ``edsr-pytorch``: sanghyun-son/EDSR-PyTorch ``model/edsr.py`` (EDSR baseline 16x64 and EDSR 32x256,
  x2/x3/x4; the bare state dict). Its networks take 0-255 images; ours take [0, 1]. Every layer is
  positively homogeneous (convs, ReLU, residual sums, pixel shuffle), so f_255(255 x) / 255 is the same
  network with every bias divided by 255 (the MeanShift biases, 255 x the DIV2K mean, become the mean):
  the import is exact up to float rounding. Depth, width and scale come from the tensor shapes;
  res_scale is 0.1 for the 32x256 model (the EDSR paper's), 1 for the others.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

EDSR_RGB_RANGE = 255.0


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pt`` / ``.pth`` file (``params_ema`` / ``params`` / ``state_dict`` wrappers
    unwrapped), read with ``weights_only=True``; a file holding anything else is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickled classes, corrupt files: weights_only refuses them
        raise ValueError(f"{path}: not a plain tensor checkpoint (read with weights_only=True): {e}") from e
    for key in ("params_ema", "params", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return obj


def _edsr_kwargs(state: dict, path) -> tuple[int, dict]:
    """(scale, EDSR kwargs) from the tensor shapes of an EDSR-PyTorch state dict."""
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.body\.0\.weight$", k))})
    n_feats = state["head.0.weight"].shape[0]
    ups = [k for k in state if re.match(r"tail\.0\.\d+\.weight$", k)]
    factor = state[ups[0]].shape[0] // n_feats if ups else 0
    scale = {(1, 4): 2, (1, 9): 3, (2, 4): 4}.get((len(ups), factor))
    if scale is None:
        raise ValueError(f"{path}: EDSR-PyTorch upsampler {ups} of {factor}x{n_feats} channels is not x2, x3 or x4")
    res_scale = 0.1 if (len(blocks), n_feats) == (32, 256) else 1.0
    return scale, {"n_resblocks": len(blocks), "n_feats": n_feats, "res_scale": res_scale}


def _edsr_name(name: str) -> str:
    """EDSR-PyTorch tensor name -> ours."""
    name = re.sub(r"^head\.0\.", "head.", name)
    name = re.sub(r"^body\.(\d+)\.body\.0\.", r"body.\1.conv1.", name)
    return re.sub(r"^body\.(\d+)\.body\.2\.", r"body.\1.conv2.", name)


def convert_edsr_pytorch(state: dict, path) -> tuple[str, int, dict, dict]:
    scale, kwargs = _edsr_kwargs(state, path)
    ours = {_edsr_name(n): (t.float() / EDSR_RGB_RANGE if n.endswith(".bias") else t.float()) for n, t in state.items()}
    return "edsr", scale, kwargs, ours


LAYOUTS = {"edsr-pytorch": convert_edsr_pytorch}


def detect_layout(state: dict) -> str | None:
    if "head.0.weight" in state and "sub_mean.weight" in state and "body.0.body.0.weight" in state:
        return "edsr-pytorch"
    return None


def convert(path, layout: str | None = None) -> tuple[str, int, dict, dict]:
    """(arch, scale, constructor kwargs, our state dict) of the official checkpoint ``path`` (layout detected
    from the tensor names unless given)."""
    state = read_state_dict(path)
    layout = layout or detect_layout(state)
    if layout not in LAYOUTS:
        raise ValueError(f"{path}: unknown checkpoint layout (known: {', '.join(LAYOUTS)}); first tensors: "
                         f"{list(state)[:4]}")
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
