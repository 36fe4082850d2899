"""RCAN (EDSR-PyTorch): residual groups of residual channel-attention blocks; MeanShift counted as in ClassSR."""
from torch import nn

from pipeline.models.common import MeanShift, Upsampler, conv


class CALayer(nn.Module):
    def __init__(self, nf: int, reduction: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(nf, nf // reduction, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(nf // reduction, nf, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.conv_du(self.pool(x))


class RCAB(nn.Module):
    def __init__(self, nf: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(conv(nf, nf), nn.ReLU(inplace=True), conv(nf, nf), CALayer(nf, reduction))

    def forward(self, x):
        return x + self.body(x)


class ResidualGroup(nn.Module):
    def __init__(self, nf: int, reduction: int, n_resblocks: int):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(nf, reduction) for _ in range(n_resblocks)], conv(nf, nf))

    def forward(self, x):
        return x + self.body(x)


class RCAN(nn.Module):
    def __init__(self, scale: int = 4, n_resgroups: int = 10, n_resblocks: int = 20, nf: int = 64,
                 reduction: int = 16, rgb_range: float = 1.0):
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, -1, learnable=True)
        self.add_mean = MeanShift(rgb_range, +1, learnable=True)
        self.head = conv(3, nf)
        self.body = nn.Sequential(*[ResidualGroup(nf, reduction, n_resblocks) for _ in range(n_resgroups)],
                                  conv(nf, nf))
        self.tail = nn.Sequential(Upsampler(scale, nf), conv(nf, 3))

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(x + self.body(x)))
