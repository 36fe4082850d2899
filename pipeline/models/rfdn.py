"""RFDN / E-RFDN (njulj/RFDN block.py): residual feature distillation blocks, LeakyReLU 0.05.

Module names follow the official code (``fea_conv``, ``B1``..``Bn``, ``c``, ``LR_conv``, ``upsampler``),
so the official checkpoint loads as is. ``attention='esa'`` is the released E-RFDN block;
``attention='cca'`` (IMDN's contrast-aware channel attention, reduction 4) reproduces the paper's
RFDN parameter counts. ``img_range=255`` serves weights trained on 0-255 input (the official ones):
the model still takes and returns [0, 1], like every model here.
"""
import torch
from torch import nn

from pipeline.models.common import CCA, ESA, conv


def lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.05, inplace=True)


class RFDB(nn.Module):
    def __init__(self, nf: int, attention: str = "esa"):
        super().__init__()
        dc = nf // 2
        self.c1_d, self.c1_r = nn.Conv2d(nf, dc, 1), conv(nf, nf)
        self.c2_d, self.c2_r = nn.Conv2d(nf, dc, 1), conv(nf, nf)
        self.c3_d, self.c3_r = nn.Conv2d(nf, dc, 1), conv(nf, nf)
        self.c4 = conv(nf, dc)
        self.act = lrelu()
        self.c5 = nn.Conv2d(4 * dc, nf, 1)
        self.esa = ESA(nf) if attention == "esa" else CCA(nf)  # official attribute name kept

    def forward(self, x):
        distilled, r = [], x
        for c_d, c_r in ((self.c1_d, self.c1_r), (self.c2_d, self.c2_r), (self.c3_d, self.c3_r)):
            distilled.append(self.act(c_d(r)))
            r = self.act(c_r(r) + r)  # shallow residual block
        distilled.append(self.act(self.c4(r)))
        return self.esa(self.c5(torch.cat(distilled, dim=1)))


class RFDN(nn.Module):
    def __init__(self, scale: int = 4, nf: int = 48, num_blocks: int = 6, attention: str = "cca",
                 img_range: float = 1.0):
        super().__init__()
        if attention not in ("esa", "cca"):
            raise ValueError(f"rfdn: attention must be 'esa' or 'cca', got {attention!r}")
        self.num_blocks, self.img_range = num_blocks, img_range
        self.fea_conv = conv(3, nf)
        for i in range(1, num_blocks + 1):
            setattr(self, f"B{i}", RFDB(nf, attention))
        self.c = nn.Sequential(nn.Conv2d(nf * num_blocks, nf, 1), lrelu())
        self.LR_conv = conv(nf, nf)
        self.upsampler = nn.Sequential(conv(nf, 3 * scale * scale), nn.PixelShuffle(scale))

    def forward(self, x):
        fea = self.fea_conv(x * self.img_range)
        outs, out = [], fea
        for i in range(1, self.num_blocks + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(lr) / self.img_range
