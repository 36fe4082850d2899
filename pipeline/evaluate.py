"""Scores of a model on a prepared test folder (HR/ + LR_bicubic/X{s}/), through the one LR -> SR entry
point (:func:`pipeline.upscale.upscale`): the training loop's validation, ClassSR's budget sweep, and
the bicubic baseline."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.images import read_image, to_float, to_uint8
from pipeline.metrics import psnr, score
from pipeline.tiling import positions
from pipeline.upscale import branch_flops, class_weighted_flops, upscale


def _lr_folder(folder, scale: int) -> Path:
    lr_dir = Path(folder) / f"LR_bicubic/X{scale}"
    if not lr_dir.is_dir():
        raise FileNotFoundError(f"{lr_dir}: no x{scale} LR images; prepare_test makes them (its scales and sets)")
    return lr_dir


def iter_pairs(folder, scale: int):
    """(name, LR, HR) uint8 triples of a prepared test set, decoded one at a time (Test8K's HR images
    are ~200 MB each as pixels)."""
    lr_dir = _lr_folder(folder, scale)
    for p in sorted((Path(folder) / "HR").glob("*.png")):
        yield p.stem, read_image(lr_dir / p.name), read_image(p)


def count_pairs(folder) -> int:
    return len(list((Path(folder) / "HR").glob("*.png")))


def test_pairs(folder, scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every (name, LR, HR) triple of a small prepared test set (the validation sets), in memory."""
    return list(iter_pairs(folder, scale))


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The baseline row: MATLAB-exact bicubic upscaling of a uint8 image."""
    from pipeline.resize import imresize

    return to_uint8(imresize(to_float(lr), scale))


def mean_scores(srs: list[np.ndarray], pairs, scale: int) -> dict:
    """Mean and per-image scores of the SR images ``srs`` of the (name, lr, hr) ``pairs``."""
    return with_means({name: score(sr, hr, scale) for sr, (name, _, hr) in zip(srs, pairs)})


def with_means(per_image: dict) -> dict:
    """``{"psnr", "ssim"}`` means (in ``per_image``'s order) and ``per_image`` itself."""
    return {"psnr": float(np.mean([s["psnr"] for s in per_image.values()])),
            "ssim": float(np.mean([s["ssim"] for s in per_image.values()])), "per_image": per_image}


def grid_side(length: int, patch: int = 32, stride: int = 28) -> int:
    """The LR side ClassSR's own patch grid covers (its test drops the remainder); a side shorter than
    one patch is covered whole (padded to one patch and cropped back, as the inference does)."""
    if length < patch:
        return length
    return positions(length, patch, stride, cover_all=False)[-1] + patch


def classsr_protocol_psnr(srs: list[np.ndarray], pairs, scale: int, patch: int = 32, stride: int = 28) -> float:
    """ClassSR's test metric: RGB PSNR (crop = scale) on the region its patch grid covers, averaged over
    images; ``srs`` cover at least that region (a ClassSR run on its own grid, or any whole-image SR)."""
    values = []
    for sr, (_, lr, hr) in zip(srs, pairs):
        h, w = (grid_side(n, patch, stride) * scale for n in lr.shape[:2])
        values.append(psnr(sr[:h, :w], hr[:h, :w], scale, y_channel=False))
    return float(np.mean(values))


def evaluate_pairs(upscale_fn, pairs, scale: int) -> dict:
    """Mean and per-image scores of ``upscale_fn(lr) -> sr`` over (name, lr, hr) pairs."""
    return mean_scores([upscale_fn(lr) for _, lr, _ in pairs], pairs, scale)


class Validator:
    """The training loop's validation: ``net -> scores`` of ``upscale(net, lr, **upscale_options)``
    (e.g. a ClassSR's patch, stride and batch) on ``pairs``. ``shard`` scores every ``world``-th image
    from ``rank`` on, and ``summary`` of the ranks' shares gives the same scores as the whole set: N
    processes validate side by side (pipeline.train)."""

    def __init__(self, pairs, scale: int, **upscale_options):
        self.pairs, self.scale, self.options = pairs, scale, upscale_options

    def shard(self, net, rank: int = 0, world: int = 1) -> dict:
        return {name: score(upscale(net, lr, **self.options).image, hr, self.scale)
                for name, lr, hr in self.pairs[rank::world]}

    def summary(self, per_image: dict) -> dict:
        return with_means({name: per_image[name] for name, _, _ in self.pairs})  # summed in the set's order

    def __call__(self, net) -> dict:
        return self.summary(self.shard(net))


def budget_metrics(model, pairs, scale: int, budgets: list[float], patch: int = 32, stride: int = 28,
                   batch: int = 32) -> dict:
    """ClassSR at each FLOPs budget on the (name, LR, HR) ``pairs``: PSNR, FLOPs weighted by the class
    counts of all the patches (and % of branch-O's) and class fractions, {"budget_<b>": {...}}."""
    flops = branch_flops(model, patch)
    names = ("simple", "medium", "hard") if len(flops) == 3 else tuple(f"branch{i}" for i in range(len(flops)))
    metrics = {}
    for budget in budgets:
        outs = [upscale(model, lr, budget=budget, patch=patch, stride=stride, batch=batch, flops=flops)
                for _, lr, _ in pairs]
        classes = np.concatenate([o.classes for o in outs])
        mean_flops = class_weighted_flops(model, classes, flops)
        metrics[f"budget_{budget:g}"] = {
            "psnr": float(np.mean([score(o.image, hr, scale)["psnr"] for o, (_, _, hr) in zip(outs, pairs)])),
            "flops_per_patch": mean_flops, "flops_percent_of_branch_o": 100 * mean_flops / flops[-1],
            **{f"fraction_{n}": float(np.mean(classes == i)) for i, n in enumerate(names)}}
    return metrics
