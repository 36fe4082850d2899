"""MSRResNet (BasicSR / ClassSR SRResNet_arch): residual blocks without BN and a bilinear global skip."""
import torch.nn.functional as F
from torch import nn

from pipeline.models.common import ResBlock, conv, scale_init


class MSRResNet(nn.Module):
    def __init__(self, scale: int = 4, nf: int = 64, nb: int = 16, in_ch: int = 3, out_ch: int = 3):
        super().__init__()
        self.scale = scale
        self.conv_first = conv(in_ch, nf)
        self.body = nn.Sequential(*[ResBlock(nf) for _ in range(nb)])
        if scale == 3:
            self.upconv1, self.upconv2 = conv(nf, 9 * nf), None
        else:
            self.upconv1 = conv(nf, 4 * nf)
            self.upconv2 = conv(nf, 4 * nf) if scale == 4 else None
        self.pixel_shuffle = nn.PixelShuffle(3 if scale == 3 else 2)
        self.hr_conv = conv(nf, nf)
        self.conv_last = conv(nf, out_ch)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        scale_init([self.conv_first, self.upconv1, self.hr_conv, self.conv_last], 0.1)
        scale_init(self.body, 0.1)
        if self.upconv2 is not None:
            scale_init([self.upconv2], 0.1)

    def forward(self, x):
        out = self.body(self.lrelu(self.conv_first(x)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.upconv2 is not None:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.hr_conv(out)))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
