"""FSRCNN as in ClassSR's FSRCNN_net: one PReLU after the four mapping convs, 9x9 transposed-conv tail."""
from torch import nn

from pipeline.models.common import scale_init

# (padding, output_padding) giving exactly scale x the input size with a 9x9 kernel.
_DECONV = {2: (4, 1), 3: (3, 0), 4: (3, 1)}


class FSRCNN(nn.Module):
    def __init__(self, scale: int = 4, d: int = 56, s: int = 12, m: int = 4, in_ch: int = 3):
        super().__init__()
        self.head_conv = nn.Sequential(nn.Conv2d(in_ch, d, 5, 1, 2), nn.PReLU())
        layers = [nn.Sequential(nn.Conv2d(d, s, 1), nn.PReLU())]
        layers += [nn.Conv2d(s, s, 3, 1, 1) for _ in range(m)]
        layers += [nn.PReLU(), nn.Sequential(nn.Conv2d(s, d, 1), nn.PReLU())]
        self.body_conv = nn.Sequential(*layers)
        pad, out_pad = _DECONV[scale]
        self.tail_conv = nn.ConvTranspose2d(d, in_ch, 9, scale, pad, output_padding=out_pad)
        scale_init([self.head_conv, self.body_conv], 0.1)  # the deconv keeps PyTorch's init, as ClassSR

    def forward(self, x):
        return self.tail_conv(self.body_conv(self.head_conv(x)))
