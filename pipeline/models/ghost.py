"""GhostSR's layer (Nie et al., TMLR 2022): part of a conv's output channels ("ghost" features) are
shifted copies of the others ("intrinsic" features), so the layer costs about ``ratio`` of the conv.

This file is the architecture: :class:`GhostConv`, :func:`ghostify` (a network with the given convs
replaced by GhostConvs, from a saved plan) and :func:`reparameterize` (the deployment form, timm style:
shifts fixed and applied by slicing). How the plan is chosen (k-means over pretrained filters) and how
the shifts are learned is GhostSR's method: :mod:`pipeline.methods.ghost`.

The shift is one of 9 offsets (8 directions at distance ``d`` and the identity, zero fill), learned per
layer (``per_channel`` as an option) by a Gumbel-Softmax with annealed temperature (the paper) or by
the released code's straight-through ``argmax |w + noise|`` (``mode='ste'``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.common import ResBlock

OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # index 4 is the identity


def shift_padded(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """:func:`shift` as a crop by constant bounds and a zero pad, for graph export: no slice bound
    depends on the input size, so an ONNX graph traced at one size is right at every size."""
    def crop(d: int) -> slice:
        return slice(d, None) if d > 0 else slice(None, d) if d < 0 else slice(None)

    return F.pad(x[..., crop(dy), crop(dx)], (max(-dx, 0), max(dx, 0), max(-dy, 0), max(dy, 0)))


def shift(x: torch.Tensor, dy: int, dx: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """out[..., y, x] = in[..., y + dy, x + dx], zero outside: a translation by slicing (into ``out``
    when given, e.g. a slice of a preallocated concatenation)."""
    if out is None and torch.onnx.is_in_onnx_export():
        return shift_padded(x, dy, dx)
    if out is None:
        if dy == 0 and dx == 0:
            return x
        out = torch.empty_like(x)
    h, w = x.shape[-2:]
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = x[..., ys, xs]
    # zero only the uncovered border strips
    if dy > 0:
        out[..., h - dy:, :] = 0
    elif dy < 0:
        out[..., :-dy, :] = 0
    if dx > 0:
        out[..., :, w - dx:] = 0
    elif dx < 0:
        out[..., :, :-dx] = 0
    return out


class GhostConv(nn.Module):
    """``oup`` output channels: ``len(intrinsic)`` from a conv, the rest shifted intrinsic features.

    ``intrinsic[j]`` is the output position of intrinsic feature j; ``ghost_pos[g]`` / ``ghost_src[g]``
    give each ghost channel's output position and the intrinsic feature it shifts.
    """

    def __init__(self, inp: int, oup: int, intrinsic: list[int], ghost_src: list[int], kernel_size: int = 3,
                 bias: bool = True, d: int = 1, mode: str = "gumbel", per_channel: bool = False):
        super().__init__()
        if mode not in ("gumbel", "ste"):
            raise ValueError(f"ghost mode must be 'gumbel' or 'ste', got {mode!r}")
        self.oup, self.d, self.mode, self.per_channel = oup, d, mode, per_channel
        self.primary = nn.Conv2d(inp, len(intrinsic), kernel_size, padding=kernel_size // 2, bias=bias)
        ghost_pos = sorted(set(range(oup)) - set(intrinsic))
        order = list(intrinsic) + ghost_pos  # position of each concatenated channel
        self.register_buffer("perm", torch.tensor([order.index(p) for p in range(oup)]), persistent=True)
        self.register_buffer("ghost_src", torch.tensor(ghost_src, dtype=torch.long), persistent=True)
        n_shift = max(len(ghost_src), 1) if per_channel else 1
        self.shift_logits = nn.Parameter(torch.empty(n_shift, 1, 3, 3))
        nn.init.kaiming_uniform_(self.shift_logits, a=math.sqrt(5))  # HeUniform(a=sqrt 5), as released
        self.tau = 1.0  # Gumbel-Softmax temperature, annealed during the fine-tune
        self.noise_scale = 1.0  # mode 'ste': the released 0.97^(epoch-1) factor on the Gumbel noise
        self.fixed: list[tuple[int, int]] | None = None  # set by reparameterize()
        self._cache_layout(list(ghost_src), [order.index(p) for p in range(oup)])

    def _cache_layout(self, ghost_src: list[int] | None = None, perm: list[int] | None = None):
        """Layout facts the forward needs, kept as Python bools (no tensor checks per call); from the
        lists when given (a model built on the meta device, for counting, has no buffer values)."""
        ghost_src = self.ghost_src.tolist() if ghost_src is None else ghost_src
        perm = self.perm.tolist() if perm is None else perm
        self._contiguous = ghost_src == list(range(len(ghost_src)))
        self._identity_perm = perm == list(range(len(perm)))

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._cache_layout()

    def set_identity_shift(self):
        with torch.no_grad():
            self.shift_logits.fill_(-1.0)
            self.shift_logits[:, 0, 1, 1] = 1.0

    def kernel(self) -> torch.Tensor:
        """(n_shift, 1, 3, 3) one-hot kernels in eval; straight-through relaxed ones in training."""
        w = self.shift_logits.flatten(1)
        if not self.training:
            idx = (w.abs() if self.mode == "ste" else w).argmax(1)
            return F.one_hot(idx, 9).to(w.dtype).view_as(self.shift_logits)
        u = torch.rand_like(w)
        noise = -torch.log(-torch.log(u + 1e-20) + 1e-20)
        if self.mode == "ste":  # released code: argmax |w + g 0.97^(epoch-1)|, straight-through on w
            hard = F.one_hot((w + noise * self.noise_scale).abs().argmax(1), 9).to(w.dtype)
            soft = w
        else:  # paper: Gumbel-Softmax with temperature, straight-through hard sample
            soft = torch.softmax((w + noise) / self.tau, dim=1)
            hard = F.one_hot(soft.argmax(1), 9).to(w.dtype)
        return (hard - soft.detach() + soft).view_as(self.shift_logits)

    def offsets(self) -> list[tuple[int, int]]:
        w = self.shift_logits.flatten(1)
        idx = (w.abs() if self.mode == "ste" else w).argmax(1).tolist()
        return [(OFFSETS[i][0] * self.d, OFFSETS[i][1] * self.d) for i in idx]

    def reparameterize(self):
        """Deployment form: each shift fixed to its argmax offset, applied by slicing (no depthwise conv)."""
        self.fixed = self.offsets()

    def forward(self, x):
        intr = self.primary(x)
        n = len(self.ghost_src)
        if n == 0:
            return self._reorder(intr)
        src = intr[:, :n] if self._contiguous else intr.index_select(1, self.ghost_src)
        exporting = torch.onnx.is_in_onnx_export()  # a traced graph: no size-dependent slice bounds
        if self.fixed is not None and len(self.fixed) == 1 and not exporting:  # one slice copy into the output
            out = intr.new_empty(intr.shape[0], self.oup, *intr.shape[2:])
            out[:, :intr.shape[1]] = intr
            shift(src, *self.fixed[0], out=out[:, intr.shape[1]:])
            return self._reorder(out)
        if self.fixed is not None and len(self.fixed) == 1:
            ghosts = shift(src, *self.fixed[0])
        elif self.fixed is not None:
            ghosts = torch.cat([shift(src[:, g:g + 1], *o) for g, o in enumerate(self.fixed)], 1)
        else:
            k = self.kernel()
            k = k.expand(src.shape[1], 1, 3, 3) if k.shape[0] == 1 else k
            ghosts = F.conv2d(src, k, padding=self.d, dilation=self.d, groups=src.shape[1])
        return self._reorder(torch.cat([intr, ghosts], 1))

    def _reorder(self, out: torch.Tensor) -> torch.Tensor:
        """Back to the source's channel order, unless reparameterize() folded it into the next layer."""
        return out if self._identity_perm else out.index_select(1, self.perm)


LAYER_RULES = ("resblocks", "conv3x3")


def ghost_layers(model: nn.Module, rule: str = "resblocks") -> list[str]:
    """The convs a rule picks: ``resblocks`` (default), the two body convs of every residual block, as
    GhostSR's EDSR; ``conv3x3``, every plain 3x3 stride-1 conv with as many outputs as inputs (the body
    of any network: RLFN, RFDN, IMDN-like ones; not the first conv, the upsampler or strided ones)."""
    if rule not in LAYER_RULES:
        raise ValueError(f"ghost: unknown layer rule '{rule}'; rules: {', '.join(LAYER_RULES)}")
    names = []
    for name, m in model.named_modules():
        if rule == "resblocks" and isinstance(m, ResBlock):
            names += [f"{name}.conv1", f"{name}.conv2"]
        elif (rule == "conv3x3" and type(m) is nn.Conv2d and m.kernel_size == (3, 3) and m.stride == (1, 1)
              and m.groups == 1 and m.in_channels == m.out_channels):
            names.append(name)
    return names


def _set(model: nn.Module, name: str, module: nn.Module):
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def ghostify(model: nn.Module, plan: dict, d: int = 1, mode: str = "gumbel", per_channel: bool = False) -> nn.Module:
    """Replace each conv named in ``plan`` ({layer: {intrinsic, ghost_src}}) by a GhostConv of that
    structure (fresh weights); returns the model, modified in place, with ``model.ghost_plan = plan``."""
    for name, layer in plan.items():
        conv = model.get_submodule(name)
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.stride != (1, 1):
            raise ValueError(f"ghost: {name} is not a plain stride-1 Conv2d")
        ghost = GhostConv(conv.in_channels, conv.out_channels, layer["intrinsic"], layer["ghost_src"],
                          conv.kernel_size[0], conv.bias is not None, d, mode, per_channel)
        _set(model, name, ghost.to(conv.weight.device))
    model.ghost_plan = dict(plan)
    return model


def ghost_modules(model: nn.Module) -> list[GhostConv]:
    return [m for m in model.modules() if isinstance(m, GhostConv)]


@torch.no_grad()
def _fold_inner_order(block: ResBlock):
    """In a residual block conv1 -> ReLU -> conv2, let conv1 emit its natural [intrinsic, ghost] order
    and permute conv2's input channels instead (ReLU is channel-wise): one gather less per block."""
    first, second = block.conv1, block.conv2
    if not isinstance(first, GhostConv):
        return
    consumer = second.primary if isinstance(second, GhostConv) else second
    order = first.perm.argsort()  # natural channel q comes from source position order[q]
    consumer.weight.copy_(consumer.weight[:, order])
    first.perm.copy_(torch.arange(len(first.perm)))
    first._cache_layout()


def reparameterize(model: nn.Module) -> nn.Module:
    """The deployment form of a Ghost network, in place: every shift fixed (slicing, no depthwise conv),
    and the inner channel order of each residual block folded into its second conv."""
    for m in ghost_modules(model):
        m.reparameterize()
    for block in model.modules():
        if isinstance(block, ResBlock):
            _fold_inner_order(block)
    return model
