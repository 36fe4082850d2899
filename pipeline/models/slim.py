"""Channel splitting (CSD's CSSR-Net): the student at width w uses the first floor(C*w) output and input
channels of every teacher conv, sharing the teacher's weights.

- :func:`forward_at_width` runs the shared weights at width w (for training teacher and student
  together, gradients flow into the shared tensors).
- :func:`slim` exports a standalone narrow model (real speed-up) with the sliced weights;
  :func:`student_kwargs` is the width rule (also the L1 student baseline's architecture).

Slicing rule (CSD's): a dimension equal to the image channel count (3: the head conv's input, the tail
conv's output) is kept; every other channel dimension is cut to floor(C*w). The upsampler's 4C (x2/x4)
or 9C (x3) outputs are cut to the first 4*floor(C*w), which PixelShuffle maps to the first floor(C*w)
channels. Concatenation-fusion convs are sliced naively, as the official code does.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn
from torch.func import functional_call

from pipeline import models

WIDTH_KWARG = {"msrresnet": "nf", "edsr": "n_feats", "rcan": "nf", "carn_m": "nf", "rfdn": "nf", "fsrcnn": "d"}
IMAGE_CHANNELS = 3


def _keep(c: int, width: float) -> int:
    return c if c == IMAGE_CHANNELS else max(1, math.floor(c * width + 1e-9))


def sliced_state(model: nn.Module, width: float) -> dict[str, torch.Tensor]:
    """Every parameter and buffer cut to the student's shape (views of the shared tensors)."""
    out = {}
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if isinstance(module, nn.Conv2d) and name == "weight":
                if module.groups != 1:
                    raise ValueError(f"slim: grouped conv {mod_name} is not supported")
                t = t[:_keep(t.shape[0], width), :_keep(t.shape[1], width)]
            elif isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.PReLU)) and t.ndim == 1 and t.numel() > 1:
                t = t[:_keep(t.shape[0], width)]
            out[prefix + name] = t
    return out


def forward_at_width(model: nn.Module, x: torch.Tensor, width: float) -> torch.Tensor:
    """The student's forward: the teacher's modules with sliced weights (width 1 = the teacher)."""
    if width == 1.0:
        return model(x)
    return functional_call(model, sliced_state(model, width), (x,), strict=False)


def student_kwargs(config: dict, width: float) -> dict:
    """The constructor arguments of the width-``width`` student of a model with ``config``: its width
    argument (nf, n_feats, d) cut to floor(C*w), the rest unchanged."""
    if config["arch"] not in WIDTH_KWARG:
        raise ValueError(f"slim: no width argument known for '{config['arch']}'")
    key = WIDTH_KWARG[config["arch"]]
    kwargs = dict(config["kwargs"])
    full = kwargs.get(key, inspect.signature(models.ARCHS[config["arch"]]).parameters[key].default)
    kwargs[key] = math.floor(full * width + 1e-9)
    return kwargs


def slim(model: nn.Module, width: float) -> nn.Module:
    """A standalone model of width floor(C*w) holding the student's weights (same outputs, bit-exact)."""
    cfg = model.config
    student = models.build(cfg["arch"], cfg["scale"], **student_kwargs(cfg, width))
    student.load_state_dict({k: v.detach().clone() for k, v in sliced_state(model, width).items()})
    return student
