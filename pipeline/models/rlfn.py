"""RLFN (Kong et al., "Residual Local Feature Network for Efficient Super-Resolution", NTIRE 2022 ESR
runtime winner; bytedance/RLFN): residual local feature blocks of three 3x3 convs with LeakyReLU 0.05, a
1x1 conv and a trimmed ESA (no conv_max / conv3_), pixel-shuffle upsampling.

Module names follow the official code (``conv_1``, ``block_1``..``block_n``, ``conv_2``, ``upsampler``),
so its checkpoints load as they are. ``img_range=255`` serves weights trained on 0-255 input (the
official ones: its test multiplies by 255); the model still takes and returns [0, 1]. x4 with nf 52 and
6 blocks: 543,740 params.
"""
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.common import conv


class ESA(nn.Module):
    """RFANet's enhanced spatial attention as RLFN trims it: no conv_max and no conv3_."""

    def __init__(self, nf: int, f: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = conv(f, f)
        self.conv4 = nn.Conv2d(f, nf, 1)

    def forward(self, x):
        c1_ = self.conv1(x)
        c3 = self.conv3(F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3))
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class RLFB(nn.Module):
    def __init__(self, nf: int, esa_channels: int = 16):
        super().__init__()
        self.c1_r, self.c2_r, self.c3_r = conv(nf, nf), conv(nf, nf), conv(nf, nf)
        self.c5 = nn.Conv2d(nf, nf, 1)
        self.esa = ESA(nf, esa_channels)
        self.act = nn.LeakyReLU(0.05, inplace=True)

    def forward(self, x):
        out = self.act(self.c3_r(self.act(self.c2_r(self.act(self.c1_r(x))))))
        return self.esa(self.c5(out + x))


class RLFN(nn.Module):
    def __init__(self, scale: int = 4, nf: int = 52, num_blocks: int = 6, esa_channels: int = 16,
                 img_range: float = 1.0):
        super().__init__()
        self.num_blocks, self.img_range = num_blocks, img_range
        self.conv_1 = conv(3, nf)
        for i in range(1, num_blocks + 1):
            setattr(self, f"block_{i}", RLFB(nf, esa_channels))
        self.conv_2 = conv(nf, nf)
        self.upsampler = nn.Sequential(conv(nf, 3 * scale * scale), nn.PixelShuffle(scale))

    def forward(self, x):
        fea = self.conv_1(x * self.img_range)
        out = fea
        for i in range(1, self.num_blocks + 1):
            out = getattr(self, f"block_{i}")(out)
        return self.upsampler(self.conv_2(out) + fea) / self.img_range
