"""Image-quality and cost metrics with BasicSR's conventions.

PSNR / SSIM take uint8 RGB HWC arrays in [0, 255] (BasicSR takes BGR; we take RGB and weight the
channels accordingly): crop ``crop_border`` pixels per side first, then Y = 16 + 65.481 R + 128.553 G +
24.966 B computed in float32 on [0, 1] as BasicSR does, then float64 maths.
"""
from __future__ import annotations

import math
import time
from functools import lru_cache

import numpy as np
import torch

Y_WEIGHTS_RGB = np.array([65.481, 128.553, 24.966])


def _crop(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border, ...] if border else img


def to_y(img: np.ndarray) -> np.ndarray:
    """Y channel on the 0-255 scale, HxWx1, reproducing BasicSR's float32 round trip."""
    x = img.astype(np.float32)
    if img.dtype == np.uint8:
        x /= 255.0
    y = (np.dot(x, Y_WEIGHTS_RGB) + 16.0) / 255.0
    return (y.astype(np.float32) * 255.0)[..., None]


def _prepare(a: np.ndarray, b: np.ndarray, crop_border: int, y_channel: bool):
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    a, b = _crop(a, crop_border), _crop(b, crop_border)
    if y_channel:
        a, b = to_y(a), to_y(b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """BasicSR ``calculate_psnr`` on RGB uint8 HWC images; inf when identical."""
    a, b = _prepare(a, b, crop_border, y_channel)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))


@lru_cache(maxsize=1)
def _gaussian_kernel() -> np.ndarray:
    # cv2.getGaussianKernel(11, 1.5): normalised samples of exp(-x^2 / (2 sigma^2)).
    x = np.arange(11) - 5
    k = np.exp(-(x**2) / (2 * 1.5**2))
    return k / k.sum()


def _filter_valid(img: np.ndarray) -> np.ndarray:
    """BasicSR's filter2D(img, outer(k, k))[5:-5, 5:-5]: the 11x11 Gaussian is separable, so two 1-D
    passes (22 instead of 121 multiply-adds per pixel), keeping only the fully-covered region."""
    from scipy.ndimage import correlate1d

    k = _gaussian_kernel()
    rows = correlate1d(img, k, axis=0, mode="constant")[5:-5]
    return correlate1d(rows, k, axis=1, mode="constant")[:, 5:-5]


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = _filter_valid(a), _filter_valid(b)
    mu1_sq, mu2_sq, mu12 = mu1**2, mu2**2, mu1 * mu2
    s1 = _filter_valid(a * a) - mu1_sq
    s2 = _filter_valid(b * b) - mu2_sq
    s12 = _filter_valid(a * b) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def ssim(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """BasicSR ``calculate_ssim``: 11x11 Gaussian (sigma 1.5) window, valid region, channel mean."""
    a, b = _prepare(a, b, crop_border, y_channel)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def score(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict:
    """Y-channel PSNR/SSIM with crop_border = scale (BasicSR / paper convention)."""
    return {"psnr": psnr(sr, hr, scale, True), "ssim": ssim(sr, hr, scale, True)}


# ---- batched torch versions, for validation inside the training loop -------------------------------

def _y_torch(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([65.481, 128.553, 24.966], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True) + 16.0


def psnr_batch(sr: torch.Tensor, hr: torch.Tensor, crop_border: int = 0, y_channel: bool = True) -> torch.Tensor:
    """Per-image PSNR of NCHW tensors in [0, 1] (rounded to 8 bit first, as saved images are)."""
    sr = (sr.clamp(0, 1) * 255).round().double() / 255
    hr = (hr.clamp(0, 1) * 255).round().double() / 255
    if crop_border:
        sr = sr[..., crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        sr, hr = _y_torch(sr), _y_torch(hr)
        mse = ((sr - hr) ** 2).mean(dim=(1, 2, 3))
        return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))
    mse = ((sr - hr) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """CHW float tensor in [0, 1] -> HWC uint8 array (clamped, rounded)."""
    return (x.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def uint8_to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC uint8 array -> 1xCxHxW float tensor in [0, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0


# ---- cost -------------------------------------------------------------------------------------------

def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, lr_shape=(1, 3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass, via torch's FlopCounterMode (FLOPs = 2 x MACs).

    Transposed convolutions are counted on the output grid, as ClassSR's accounting does.
    """
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), torch.zeros(()))
    x = torch.zeros(lr_shape, dtype=param.dtype, device=param.device)
    correction = []

    def on_output_grid(module, inputs, output):  # torch counts a deconv on its input grid
        per_position = module.in_channels * module.out_channels // module.groups * math.prod(module.kernel_size)
        correction.append((output[0].numel() // module.out_channels * output.shape[0]
                           - inputs[0].numel() // module.in_channels) * per_position)

    hooks = [m.register_forward_hook(on_output_grid) for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return counter.get_total_flops() // 2 + sum(correction)


def wall_time(fn, warmup: int = 2, repeats: int = 5, cuda: bool = False) -> float:
    """Median seconds of ``fn()`` after ``warmup`` untimed calls (CUDA-synchronised when ``cuda``)."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def latency(model: torch.nn.Module, lr_shape=(1, 3, 64, 64), warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds per forward pass on a random LR input of ``lr_shape``."""
    param = next(model.parameters())
    x = torch.rand(lr_shape, dtype=param.dtype, device=param.device)
    return wall_time(lambda: model(x), warmup, repeats, param.is_cuda)

