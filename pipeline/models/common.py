"""Building blocks shared by several architectures (EDSR-PyTorch / BasicSR conventions)."""
import math

import torch
from torch import nn

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def conv(in_ch: int, out_ch: int, k: int = 3, bias: bool = True, groups: int = 1, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2, bias=bias, groups=groups)


class MeanShift(nn.Module):
    """Subtract (sign=-1) or add (sign=+1) the DIV2K mean, scaled to ``rgb_range``.

    ``learnable=True`` is the ClassSR/CARN form: a real 1x1 conv whose 12 params are counted and
    trainable (the codebase sets requires_grad on the module, not on its params). ``False`` is
    EDSR-PyTorch's frozen MeanShift, held in buffers and excluded from the parameter count.
    """

    def __init__(self, rgb_range: float = 1.0, sign: int = -1, learnable: bool = False):
        super().__init__()
        weight = torch.eye(3).view(3, 3, 1, 1)
        bias = sign * rgb_range * torch.tensor(DIV2K_MEAN)
        if learnable:
            self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, self.bias)


class ResBlock(nn.Module):
    """conv-ReLU-conv with identity skip and residual scaling (EDSR ResBlock, BasicSR ResidualBlockNoBN)."""

    def __init__(self, nf: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1, self.conv2 = conv(nf, nf), conv(nf, nf)
        self.relu = nn.ReLU(inplace=True)
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class Upsampler(nn.Sequential):
    """EDSR-PyTorch upsampler: log2(scale) x [conv nf->4nf, PixelShuffle(2)] or [conv nf->9nf, PixelShuffle(3)]."""

    def __init__(self, scale: int, nf: int, act: nn.Module | None = None):
        layers = []
        if scale in (2, 4, 8):
            for _ in range(int(math.log2(scale))):
                layers += [conv(nf, 4 * nf), nn.PixelShuffle(2)] + ([act] if act is not None else [])
        elif scale == 3:
            layers += [conv(nf, 9 * nf), nn.PixelShuffle(3)] + ([act] if act is not None else [])
        else:
            raise ValueError(f"scale {scale} not supported; allowed: 2, 3, 4, 8")
        super().__init__(*layers)


def scale_init(modules, factor: float = 0.1):
    """Kaiming-normal (fan_in) init scaled by ``factor``, biases zero (BasicSR's initialize_weights)."""
    for m in modules:
        for layer in m.modules() if isinstance(m, nn.Module) else [m]:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_in")
                layer.weight.data *= factor
                if layer.bias is not None:
                    layer.bias.data.zero_()


def plain_conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding)


class ESA(nn.Module):
    """Enhanced spatial attention (RFANet) as RFDN and BSRN use it: a 1x1 squeeze to nf / 4, a strided 3x3
    conv and a 7x7/3 max-pool, three 3x3 convs, bilinear upsampling, a 1x1 expand and a sigmoid gate.
    ``conv3x3(in, out, stride, padding)`` builds the 3x3 convs (BSRN: blueprint separable), ``act`` is
    their activation (RFDN: ReLU; BSRN: GELU)."""

    def __init__(self, nf: int, conv3x3=plain_conv3x3, act=torch.relu):
        super().__init__()
        f = nf // 4
        self.conv1 = nn.Conv2d(nf, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = conv3x3(f, f)
        self.conv2 = conv3x3(f, f, 2, 0)
        self.conv3 = conv3x3(f, f)
        self.conv3_ = conv3x3(f, f)
        self.conv4 = nn.Conv2d(f, nf, 1)
        self.act = act

    def forward(self, x):
        c1_ = self.conv1(x)
        v = self.act(self.conv_max(nn.functional.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3)))
        c3 = self.conv3_(self.act(self.conv3(v)))
        c3 = nn.functional.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class CCA(nn.Module):
    """Contrast-aware channel attention (IMDN): (std + mean) per channel -> squeeze-excite gate."""

    def __init__(self, nf: int, reduction: int = 4):
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(nf, nf // reduction, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(nf // reduction, nf, 1), nn.Sigmoid())

    def forward(self, x):
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)
