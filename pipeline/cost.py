"""The pipeline's one cost convention, used by every stage's metrics, the evaluation table and the benches:

- params;
- FLOPs per 32x32 LR patch (ClassSR's unit, comparable across scales; FLOPs = 2 x MACs); a ClassSR: its
  branches' FLOPs weighted by the class counts of the patches it saw (cal_FLOPs, :mod:`pipeline.upscale`);
- MACs on one 256x256 LR input (the NTIRE efficient-SR convention, which most tables print as "FLOPs");
- median CPU latency of one forward on a 128x128 LR input with LATENCY_THREADS threads (set for the
  measurement, then restored), so numbers from two machines differ by the cores, not the thread count;
- on a GPU: fp32 / fp16 runtime and peak memory (:func:`gpu_cost`).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from pipeline.metrics import count_macs, count_params, wall_time
from pipeline.metrics import latency as latency_of
from pipeline.upscale import branch_flops, classifier_flops, classsr_patchwise, is_classsr, upscale

# PIPELINE_LATENCY_SIDE changes the latency input for smoke runs only (an EDSR 32x256 forward at 128^2
# takes ~15 s on a 2-core CPU, and cost() times seven); PIPELINE_LATENCY_THREADS the thread count.
PATCH, NTIRE_SIDE = 32, 256
LATENCY_SIDE = int(os.environ.get("PIPELINE_LATENCY_SIDE", "128"))
LATENCY_THREADS = int(os.environ.get("PIPELINE_LATENCY_THREADS", "2"))


def macs_on(model, side: int) -> int:
    """MACs of one forward on a ``side`` x ``side`` LR input, counted on a meta-device copy built from
    the model's config (no memory, no compute: an EDSR 32x256 at 256^2 is 2.2 T MACs)."""
    from pipeline import models

    with torch.device("meta"):
        meta = models.build(model.config["arch"], model.config["scale"], **model.config["kwargs"])
    return count_macs(meta, (1, 3, side, side))


def classsr_macs_on(model, flops_per_patch: float, side: int = NTIRE_SIDE, patch: int = PATCH, stride: int = 28) -> float:
    """What ClassSR's patch-wise inference does on a ``side``^2 LR image: its overlapping patches (every
    one classified) at the class mix behind ``flops_per_patch`` (cal_FLOPs, on a test set)."""
    from pipeline.tiling import positions

    n = len(positions(side, patch, stride, cover_all=True)) ** 2
    branch_macs = (flops_per_patch - classifier_flops(model)) / 2
    return n * (branch_macs + count_macs(model.classifier, (1, 3, patch, patch)))


def with_threads(threads: int, fn):
    """``fn()`` with torch's intra-op thread count set to ``threads``, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def cost(model, *, budget: float = 1.0, patch: int = PATCH, stride: int = 28, batch: int = 32,
         probe: np.ndarray | None = None, latency: bool = True) -> dict:
    """The pipeline's cost convention: ``{params, flops_per_patch, macs_256, cpu_latency_s, cpu_threads}``.

    Plain models: 2 x MACs of one 32x32 patch, MACs of one 256x256 LR input, latency of one forward pass
    on a 128x128 LR input. ClassSR: class-weighted branch FLOPs + the classifier's (ClassSR's cal_FLOPs)
    on the LR image ``probe``, its patch-wise MACs on 256^2 at that class mix, and the latency of
    :func:`upscale` on ``probe`` (default: a seeded random 128x128 image), at ``budget``. ``latency``
    False: the counts only (a training stage's metrics; ``evaluate`` times every variant)."""
    model = model.eval()
    common = {"params": count_params(model), **({"cpu_threads": LATENCY_THREADS} if latency else {})}
    if not is_classsr(model):
        counts = {**common, "flops_per_patch": 2.0 * count_macs(model, (1, 3, PATCH, PATCH)),
                  "macs_256": float(macs_on(model, NTIRE_SIDE))}
        if latency:
            counts["cpu_latency_s"] = with_threads(LATENCY_THREADS, lambda: latency_of(model, (1, 3, LATENCY_SIDE, LATENCY_SIDE)))
        return counts
    if probe is None:
        probe = np.random.default_rng(0).integers(0, 256, (LATENCY_SIDE, LATENCY_SIDE, 3), dtype=np.uint8)
    flops = branch_flops(model, patch)
    run = lambda: upscale(model, probe, budget=budget, patch=patch, stride=stride, batch=batch, flops=flops)  # noqa: E731
    per_patch = run().flops_per_patch
    counts = {**common, "flops_per_patch": per_patch, "macs_256": classsr_macs_on(model, per_patch, patch=patch, stride=stride)}
    if latency:
        counts["cpu_latency_s"] = with_threads(LATENCY_THREADS, lambda: wall_time(run, warmup=1, repeats=3))
    return counts


def gpu_cost(model, *, side: int = LATENCY_SIDE, probe: np.ndarray | None = None, **classsr_options) -> dict:
    """On a CUDA model: median fp32 and fp16 runtime of one forward on a ``side``^2 LR input (a ClassSR:
    its patch-wise inference on ``probe``), by ``torch.utils.benchmark`` (which synchronises), and the
    peak memory allocated during the fp32 run. The model is left in fp32."""
    from torch.utils import benchmark

    out = {}
    if probe is None:
        probe = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        model.to(dtype)
        x = torch.rand(1, 3, side, side, device="cuda", dtype=dtype)
        if is_classsr(model):
            lr = (torch.from_numpy(probe).permute(2, 0, 1).to("cuda", dtype) / 255.0)
            flops = branch_flops(model.float(), classsr_options.get("patch", PATCH))
            model.to(dtype)
            opts = {"patch": PATCH, "stride": 28, "budget": 1.0, "batch": 32, **classsr_options}
            fn = lambda: classsr_patchwise(model, lr, model.config["scale"], opts["patch"], opts["stride"],  # noqa: E731
                                           opts["budget"], opts["batch"], flops)
        else:
            fn = lambda: model(x)  # noqa: E731
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            fn()  # warm-up (cuDNN autotuning, allocations)
            out[f"gpu_{name}_s"] = benchmark.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.5).median
        if name == "fp32":
            out["gpu_peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    model.float()
    return out
