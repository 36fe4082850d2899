"""CARN-M as in ClassSR's CARN_M: one residual block shared three times per cascading block,
BasicBlock = 1x1 conv (no bias) + BatchNorm + ReLU, grouped-conv upsampler, learnable MeanShift."""
import torch
from torch import nn

from pipeline.models.common import MeanShift, conv


class EResidualBlock(nn.Module):
    def __init__(self, nf: int, group: int):
        super().__init__()
        self.body = nn.Sequential(conv(nf, nf, groups=group), nn.ReLU(inplace=True),
                                  conv(nf, nf, groups=group), nn.ReLU(inplace=True), conv(nf, nf, 1))

    def forward(self, x):
        return torch.relu(self.body(x) + x)


def basic_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class CascadeBlock(nn.Module):
    def __init__(self, nf: int, group: int):
        super().__init__()
        self.b1 = EResidualBlock(nf, group)  # shared by the three steps (CARN-M)
        self.c1, self.c2, self.c3 = basic_block(2 * nf, nf), basic_block(3 * nf, nf), basic_block(4 * nf, nf)

    def forward(self, x):
        c = x
        o = x
        for fuse in (self.c1, self.c2, self.c3):
            c = torch.cat([c, self.b1(o)], dim=1)
            o = fuse(c)
        return o


class CARNM(nn.Module):
    def __init__(self, scale: int = 4, nf: int = 64, group: int = 4):
        super().__init__()
        self.sub_mean = MeanShift(1.0, -1, learnable=True)
        self.add_mean = MeanShift(1.0, +1, learnable=True)
        self.entry = conv(3, nf)
        self.b1, self.b2, self.b3 = (CascadeBlock(nf, group) for _ in range(3))
        self.c1, self.c2, self.c3 = basic_block(2 * nf, nf), basic_block(3 * nf, nf), basic_block(4 * nf, nf)
        ups = []
        for _ in range({2: 1, 4: 2}.get(scale, 1)):
            r = 3 if scale == 3 else 2
            ups += [conv(nf, r * r * nf, groups=group), nn.ReLU(inplace=True), nn.PixelShuffle(r)]
        self.upsample = nn.Sequential(*ups)
        self.exit = conv(nf, 3)

    def forward(self, x):
        x = self.entry(self.sub_mean(x))
        c = o = x
        for block, fuse in ((self.b1, self.c1), (self.b2, self.c2), (self.b3, self.c3)):
            c = torch.cat([c, block(o)], dim=1)
            o = fuse(c)
        return self.add_mean(self.exit(self.upsample(o)))
