"""Channel splitting (CSD's CSSR-Net): the student at width w uses the first floor(C*w) output and input
channels of every teacher conv, sharing the teacher's weights.

- :func:`forward_at_width` runs the shared weights at width w (for training teacher and student
  together, gradients flow into the shared tensors).
- :func:`slim` exports a standalone narrow model (real speed-up) with the sliced weights;
  :func:`student_kwargs` is the width rule (also the L1 student baseline's architecture).

Slicing rule (CSD's): every tensor is cut to the leading block of the shape it has in the student, the
same architecture built with its width argument cut to floor(C*w) (:func:`student_kwargs`). So image
channels stay 3, the upsampler's 4C (x2/x4) or 9C (x3) outputs become the first 4*floor(C*w) (which
PixelShuffle maps to the first floor(C*w) channels; not floor(4*C*w)), inner layers follow the
architecture's own rule (RCAN's channel attention C -> C/16 -> C, RFDN's ESA C/4, even when that is 3),
and concatenation-fusion convs are sliced naively, as the official code does.
"""
from __future__ import annotations

import inspect
import json
import math
from functools import lru_cache

import torch
from torch import nn
from torch.func import functional_call

from pipeline import models

WIDTH_KWARG = {"msrresnet": "nf", "edsr": "n_feats", "rcan": "nf", "carn_m": "nf", "rfdn": "nf", "fsrcnn": "d"}


@lru_cache(maxsize=16)
def _student_shapes(config_json: str, width: float) -> dict[str, tuple[int, ...]]:
    config = json.loads(config_json)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        student = models.build(config["arch"], config["scale"], **student_kwargs(config, width))
    if any(isinstance(m, nn.Conv2d) and m.groups != 1 for m in student.modules()):
        raise ValueError(f"slim: grouped convs ({config['arch']}) are not supported")
    return {k: tuple(v.shape) for k, v in student.state_dict().items()}


def student_shapes(model: nn.Module, width: float) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter and buffer of the width-``width`` student of ``model``."""
    return _student_shapes(json.dumps(model.config, sort_keys=True), float(width))


def sliced_state(model: nn.Module, width: float) -> dict[str, torch.Tensor]:
    """Every parameter and buffer cut to the leading block of its student shape (views of the shared
    tensors)."""
    shapes, out = student_shapes(model, width), {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        shape = shapes.get(name)
        if shape is None or len(shape) != t.ndim:
            raise ValueError(f"slim: {name} {tuple(t.shape)} has no counterpart in the width-{width} student")
        out[name] = t[tuple(slice(0, n) for n in shape)]
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
