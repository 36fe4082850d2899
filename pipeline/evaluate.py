"""Whole-image evaluation of a model on a prepared test folder (HR/ + LR_bicubic/X{s}/)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.data.images import read_image, to_float, to_uint8
from pipeline.metrics import psnr, ssim, tensor_to_uint8, uint8_to_tensor


def test_pairs(folder, scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR) uint8 triples of a prepared test set."""
    folder = Path(folder)
    hr_dir, lr_dir = folder / "HR", folder / f"LR_bicubic/X{scale}"
    if not lr_dir.is_dir():
        raise FileNotFoundError(f"{lr_dir}: no x{scale} LR images; add {scale} to prepare_test.scales")
    return [(p.stem, read_image(lr_dir / p.name), read_image(p)) for p in sorted(hr_dir.glob("*.png"))]


@torch.no_grad()
def super_resolve(model, lr: np.ndarray, device="cpu") -> np.ndarray:
    """Run ``model`` on one uint8 LR image; returns the uint8 SR image (clamped and rounded)."""
    return tensor_to_uint8(model(uint8_to_tensor(lr).to(device))[0])


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    from pipeline.resize import imresize

    return to_uint8(imresize(to_float(lr), scale))


def score(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict:
    """Y-channel PSNR/SSIM with crop_border = scale (BasicSR / paper convention)."""
    return {"psnr": psnr(sr, hr, scale, True), "ssim": ssim(sr, hr, scale, True)}


def evaluate_pairs(upscale_fn, pairs, scale: int) -> dict:
    """Mean and per-image scores of ``upscale_fn(lr) -> sr`` over (name, lr, hr) pairs."""
    per_image = {name: score(upscale_fn(lr), hr, scale) for name, lr, hr in pairs}
    return {"psnr": float(np.mean([s["psnr"] for s in per_image.values()])),
            "ssim": float(np.mean([s["ssim"] for s in per_image.values()])), "per_image": per_image}


def validator(pairs, scale: int, prepare=None):
    """The training loop's ``validate`` callback: whole-image scores of the network on ``pairs``.
    ``prepare(net)`` turns the trained network into the deployed one first (e.g. a slim export)."""

    def validate(net) -> dict:
        model = prepare(net) if prepare else net
        device = next(model.parameters()).device
        return evaluate_pairs(lambda lr: super_resolve(model, lr, device), pairs, scale)

    return validate
