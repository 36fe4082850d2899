"""EDSR (EDSR-PyTorch): residual blocks with residual scaling; frozen MeanShift (not counted)."""
from torch import nn

from pipeline.models.common import MeanShift, ResBlock, Upsampler, conv


class EDSR(nn.Module):
    def __init__(self, scale: int = 4, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 rgb_range: float = 1.0):
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, -1)
        self.add_mean = MeanShift(rgb_range, +1)
        self.head = conv(3, n_feats)
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)], conv(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv(n_feats, 3))

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(x + self.body(x)))
