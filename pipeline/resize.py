"""MATLAB-exact bicubic resize (``imresize`` with antialiasing), as matrix products.

MATLAB's (and BasicSR's ``matlab_functions.imresize``) resize is separable: each output row is a
weighted sum of at most ``ceil(4 / scale) + 2`` input rows, with the image mirrored at its borders
("symmetric" padding, edge pixel repeated). Instead of looping over output pixels we fold the weights
and the mirroring into an (out x in) matrix per axis and apply it as a few banded matmuls: each block
of 8 output rows only touches a narrow band of input rows, so the work is ~out x (8/scale + taps)
instead of out x in. An HWC image is resized as the 2-D (H, W*C) array it is in memory, so its
full-size input is never transposed. Exact up to float rounding, on any torch device.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def _taps(in_length: int, out_length: int, scale: float, antialiasing: bool):
    """MATLAB's contributions: (out x taps) 0-based input indices (unmirrored) and normalised weights."""
    kernel_width = 4.0
    stretch = scale < 1 and antialiasing
    if stretch:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    # 0.5 in output space maps to 0.5 in input space (pixel-centre alignment, as MATLAB).
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based input positions
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if stretch else _cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return indices.astype(np.int64) - 1, weights


def _mirror(idx: np.ndarray, in_length: int) -> np.ndarray:
    """Symmetric padding (edge pixel repeated), as MATLAB and BasicSR."""
    idx = np.where(idx < 0, -idx - 1, idx)
    idx = np.where(idx >= in_length, 2 * in_length - idx - 1, idx)
    if idx.min() < 0 or idx.max() >= in_length:
        raise ValueError(f"imresize: input length {in_length} is too small for this scale")
    return idx


@lru_cache(maxsize=64)
def resize_matrix(in_length: int, out_length: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """The (out_length x in_length) float64 matrix that resizes one axis, borders included."""
    idx, weights = _taps(in_length, out_length, scale, antialiasing)
    idx = _mirror(idx, in_length)
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(out_length), idx.shape[1]), idx.ravel()), weights.ravel())
    return matrix


BAND_ROWS = 8  # output rows per banded matmul: each only touches ~BAND_ROWS/scale + taps input rows


@lru_cache(maxsize=64)
def _bands(in_length: int, out_length: int, scale: float, antialiasing: bool):
    """Split the resize matrix into row blocks with the input band each one touches."""
    matrix = resize_matrix(in_length, out_length, scale, antialiasing)
    bands = []
    for r0 in range(0, out_length, BAND_ROWS):
        block = matrix[r0:r0 + BAND_ROWS]
        cols = np.flatnonzero(np.abs(block).sum(axis=0))
        lo, hi = int(cols.min()), int(cols.max()) + 1
        bands.append((r0, lo, hi, torch.from_numpy(np.ascontiguousarray(block[:, lo:hi], dtype=np.float32))))
    return bands


def _resize_leading(x: torch.Tensor, scale: float, antialiasing: bool) -> torch.Tensor:
    """Resize the first axis of a 2-D (L, M) tensor: one matmul per block of output rows, each on a
    contiguous slice of input rows, written in place."""
    n_in = x.shape[0]
    out = x.new_empty(output_size(n_in, scale), x.shape[1])
    for r0, lo, hi, block in _bands(n_in, out.shape[0], scale, antialiasing):
        torch.matmul(block.to(x.device, x.dtype), x[lo:hi], out=out[r0:r0 + len(block)])
    return out


def output_size(in_length: int, scale: float) -> int:
    return math.ceil(in_length * scale)


def _resize_hwb(x: torch.Tensor, scale: float, antialiasing: bool) -> torch.Tensor:
    """Resize an (H, W, B) tensor (B: channels, or batch x channels) along H, then W. Both passes are
    row-block matmuls on a contiguous 2-D view: (H, W*B) first, then the small intermediate transposed
    to (W, H'*B): an HWC image needs no copy of its full-size input."""
    h, w, b = x.shape
    rows = _resize_leading(x.reshape(h, w * b), scale, antialiasing)  # (H', W*B)
    h2 = rows.shape[0]
    cols = _resize_leading(rows.view(h2, w, b).transpose(0, 1).reshape(w, h2 * b), scale, antialiasing)
    return cols.view(-1, h2, b).transpose(0, 1)  # (H', W', B), a view


def _resize_tensor(img: torch.Tensor, scale: float, antialiasing: bool) -> torch.Tensor:
    """CHW / NCHW / HW float tensors on any device, returned in the same layout."""
    dtype = img.dtype if img.dtype in (torch.float32, torch.float64) else torch.float32
    x = img.to(dtype)
    lead = x.shape[:-2]
    hwb = x.reshape(-1, *x.shape[-2:]).permute(1, 2, 0).contiguous()
    out = _resize_hwb(hwb, scale, antialiasing).permute(2, 0, 1)
    return out.reshape(*lead, *out.shape[-2:]).contiguous()


def imresize(img, scale: float, antialiasing: bool = True):
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')``; the output is not rounded.

    ``img`` is a numpy HWC (or HW) float array in [0, 1], returned the same way (float32), or a torch
    float tensor shaped CHW / NCHW / HW on any device, returned with the same layout and device.
    Output size is ``ceil(in * scale)`` per axis.
    """
    if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"imresize: scale must be a positive number, got {scale!r}")
    scale = float(scale)
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"imresize: numpy input must be HW or HWC, got shape {img.shape}")
        if not np.issubdtype(img.dtype, np.floating):
            raise TypeError(f"imresize: numpy input must be float in [0, 1], got {img.dtype}")
        hwc = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        out = _resize_hwb(hwc[..., None] if img.ndim == 2 else hwc, scale, antialiasing)
        return (out[..., 0] if img.ndim == 2 else out).contiguous().numpy()
    if isinstance(img, torch.Tensor):
        if img.ndim < 2:
            raise ValueError(f"imresize: tensor input must be HW, CHW or NCHW, got shape {tuple(img.shape)}")
        if not img.is_floating_point():
            raise TypeError(f"imresize: tensor input must be floating point, got {img.dtype}")
        return _resize_tensor(img, scale, antialiasing)
    raise TypeError(f"imresize: expected a numpy array or torch tensor, got {type(img).__name__}")
