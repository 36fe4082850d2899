"""ClassSR inference on whole images and its FLOPs accounting.

Patches are classified in one batch, then **each branch runs once on the batch of its patches**; the
outputs are overlap-averaged by :mod:`pipeline.tiling`. ``budget`` (a fraction of the branch-O FLOPs,
which the published code lacks) moves the least confident patches to cheaper branches until the
class-weighted FLOPs fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.metrics import count_macs
from pipeline.tiling import merge, split

CLASSIFIER_FLOPS_PER_PATCH = 7.4e6  # the constant in ClassSR's cal_FLOPs (7.60 M computed)


def branch_flops(model, patch: int = 32) -> list[float]:
    """FLOPs (2 x MACs) of each branch on one ``patch`` x ``patch`` LR patch."""
    return [2.0 * count_macs(b, (1, 3, patch, patch)) for b in model.branches]


def apply_budget(probs: torch.Tensor, flops: list[float], budget: float) -> torch.Tensor:
    """Classes by argmax, then the least confident patches step down to cheaper branches until the mean
    branch FLOPs per patch <= budget x the most expensive branch's (branch-O) FLOPs."""
    classes = probs.argmax(dim=1).clone()
    if budget >= 1.0:
        return classes
    cost = torch.tensor(flops, dtype=torch.float64)
    target = budget * cost.max() * len(classes)
    confidence = probs.max(dim=1).values
    order = torch.argsort(confidence)  # least confident first
    while cost[classes].sum() > target and (classes > 0).any():
        for i in order.tolist():
            if classes[i] > 0:
                classes[i] -= 1
                if cost[classes].sum() <= target:
                    break
    return classes


@dataclass
class ClassSROutput:
    sr: torch.Tensor  # (C, H*scale, W*scale) of the covered region
    classes: np.ndarray  # per patch
    flops_per_patch: float  # class-weighted branch FLOPs + classifier, ClassSR's convention


@torch.no_grad()
def classsr_upscale(model, lr: torch.Tensor, scale: int, patch: int = 32, stride: int = 28,
                    cover_all: bool = True, budget: float = 1.0, batch: int = 256,
                    flops: list[float] | None = None) -> ClassSROutput:
    """Super-resolve one LR image (C, H, W) in [0, 1] with a ClassSR model."""
    tiles = split(lr, patch, stride, cover_all)
    probs = torch.cat([torch.softmax(model.classifier(tiles.patches[i:i + batch]), 1)
                       for i in range(0, len(tiles.patches), batch)])
    flops = flops or branch_flops(model, patch)
    classes = apply_budget(probs, flops, budget)
    outputs = tiles.patches.new_zeros(len(classes), lr.shape[0], patch * scale, patch * scale)
    for c, branch in enumerate(model.branches):
        idx = torch.nonzero(classes == c).flatten()
        for i in range(0, len(idx), batch):  # each branch once per batch of its own patches
            chunk = idx[i:i + batch]
            outputs[chunk] = branch(tiles.patches[chunk])
    counts = np.bincount(classes.numpy(), minlength=len(flops))
    mean_flops = float(np.dot(counts, flops) / counts.sum()) + CLASSIFIER_FLOPS_PER_PATCH
    return ClassSROutput(merge(outputs, tiles, scale), classes.numpy(), mean_flops)


def upscale_uint8(model, lr: np.ndarray, scale: int, patch: int = 32, stride: int = 28, budget: float = 1.0,
                  batch: int = 32, flops: list[float] | None = None, cover_all: bool = True):
    """:func:`classsr_upscale` on a uint8 HxWx3 image: (uint8 SR, ClassSROutput)."""
    from pipeline.metrics import tensor_to_uint8, uint8_to_tensor

    device = next(model.parameters()).device
    out = classsr_upscale(model, uint8_to_tensor(lr)[0].to(device), scale, patch, stride, cover_all, budget,
                          batch, flops)
    return tensor_to_uint8(out.sr), out


def budget_metrics(model, pairs, scale: int, budgets: list[float], patch: int = 32, stride: int = 28,
                   batch: int = 32) -> dict:
    """PSNR, class-weighted FLOPs (and % of branch-O's) and class fractions of ``model`` on the
    (name, LR, HR) ``pairs`` at each FLOPs budget: {"budget_<b>": {...}}."""
    from pipeline.evaluate import score

    flops = branch_flops(model, patch)
    names = ("simple", "medium", "hard") if len(flops) == 3 else tuple(f"branch{i}" for i in range(len(flops)))
    metrics = {}
    for budget in budgets:
        outs = [upscale_uint8(model, lr, scale, patch, stride, budget, batch, flops) for _, lr, _ in pairs]
        mean_flops = float(np.mean([o.flops_per_patch for _, o in outs]))
        classes = np.concatenate([o.classes for _, o in outs])
        metrics[f"budget_{budget:g}"] = {
            "psnr": float(np.mean([score(sr, hr, scale)["psnr"] for (sr, _), (_, _, hr) in zip(outs, pairs)])),
            "flops_per_patch": mean_flops, "flops_percent_of_branch_o": 100 * mean_flops / flops[-1],
            **{f"fraction_{n}": float(np.mean(classes == i)) for i, n in enumerate(names)}}
    return metrics


def tertile_thresholds(psnrs: np.ndarray) -> tuple[float, float]:
    """PSNR thresholds that split patches into equal thirds (as ClassSR's 27.17 / 35.15 dB did)."""
    lo, hi = np.quantile(np.asarray(psnrs, np.float64), [1 / 3, 2 / 3])
    return float(lo), float(hi)


def classify_psnr(psnrs: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 = simple (PSNR >= high), 1 = medium, 2 = hard (PSNR < low); ClassSR's divide script."""
    psnrs = np.asarray(psnrs)
    return np.where(psnrs >= high, 0, np.where(psnrs >= low, 1, 2)).astype(np.int64)
