"""BSRN (Li et al., "Blueprint Separable Residual Network for Efficient Image Super-Resolution", NTIRE
2022 ESR model-complexity winner; xiaom233/BSRN ``BSRN_arch.py``): blueprint separable convolutions
(BSConvU: a 1x1 pointwise conv, then a depthwise 3x3), efficient separable distillation blocks (ESDB)
with ESA and contrast-aware channel attention, GELU, one-step pixel-shuffle upsampling.

Module names follow the official code (``fea_conv``, ``B1``..``Bn``, ``c1``, ``c2``,
``upsampler.upsampleOneStep``), so BasicSR's ``{'params': ...}`` checkpoints load as they are. The input
is repeated 4 times along the channels before the first conv, as released. Trained on [0, 1]. x4 with
nf 64 and 8 blocks: 352,400 params.
"""
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.common import CCA, ESA


class BSConvU(nn.Module):
    """Blueprint separable conv: pointwise (no bias) then depthwise 3x3 (with bias)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, padding: int = 1):
        super().__init__()
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.dw = nn.Conv2d(out_ch, out_ch, 3, stride=stride, padding=padding, groups=out_ch)

    def forward(self, x):
        return self.dw(self.pw(x))


class ESDB(nn.Module):
    def __init__(self, nf: int):
        super().__init__()
        dc = nf // 2
        self.c1_d, self.c1_r = nn.Conv2d(nf, dc, 1), BSConvU(nf, nf)
        self.c2_d, self.c2_r = nn.Conv2d(nf, dc, 1), BSConvU(nf, nf)
        self.c3_d, self.c3_r = nn.Conv2d(nf, dc, 1), BSConvU(nf, nf)
        self.c4 = BSConvU(nf, dc)
        self.c5 = nn.Conv2d(4 * dc, nf, 1)
        self.esa, self.cca = ESA(nf, BSConvU, F.gelu), CCA(nf, reduction=16)

    def forward(self, x):
        distilled, r = [], x
        for c_d, c_r in ((self.c1_d, self.c1_r), (self.c2_d, self.c2_r), (self.c3_d, self.c3_r)):
            distilled.append(F.gelu(c_d(r)))
            r = F.gelu(c_r(r) + r)
        distilled.append(F.gelu(self.c4(r)))
        return self.cca(self.esa(self.c5(torch.cat(distilled, dim=1)))) + x


class BSRN(nn.Module):
    def __init__(self, scale: int = 4, nf: int = 64, num_blocks: int = 8):
        super().__init__()
        self.num_blocks = num_blocks
        self.fea_conv = BSConvU(3 * 4, nf)
        for i in range(1, num_blocks + 1):
            setattr(self, f"B{i}", ESDB(nf))
        self.c1 = nn.Conv2d(nf * num_blocks, nf, 1)
        self.c2 = BSConvU(nf, nf)
        self.upsampler = nn.Module()
        self.upsampler.upsampleOneStep = nn.Sequential(nn.Conv2d(nf, 3 * scale * scale, 3, padding=1),
                                                       nn.PixelShuffle(scale))

    def forward(self, x):
        fea = self.fea_conv(torch.cat([x, x, x, x], dim=1))
        outs, out = [], fea
        for i in range(1, self.num_blocks + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        lr = self.c2(F.gelu(self.c1(torch.cat(outs, dim=1)))) + fea
        return self.upsampler.upsampleOneStep(lr)
