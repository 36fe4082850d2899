"""Evaluation of every variant: scores on every prepared test set, cost, a Markdown table, a PSNR-vs-
FLOPs Pareto plot and side-by-side crops."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from pipeline.evaluate import bicubic_upscale, mean_scores, test_pairs
from pipeline.params import ClassSRInference
from pipeline.upscale import Upscaled, cost, is_classsr, upscale


@dataclass
class Variant:
    """One row of the table: a saved model (``None``: bicubic) run at a FLOPs ``budget`` (ClassSR)."""
    name: str
    model: nn.Module | None = None
    budget: float = 1.0
    params: int = 0
    flops_per_patch: float = 0.0  # per 32x32 LR patch (ClassSR: class-weighted, on the Pareto test set)
    latency_s: float = float("nan")  # CPU, one 128x128 LR input; nan for bicubic
    scores: dict = field(default_factory=dict)  # test set -> {psnr, ssim[, flops_per_patch]}


def variant(name: str, model=None, budget: float = 1.0, inference: ClassSRInference | None = None) -> Variant:
    """A row, with its cost by the pipeline's one convention (:func:`pipeline.upscale.cost`)."""
    if model is None:
        return Variant(name)
    opts = inference.options() if inference and is_classsr(model) else {}
    c = cost(model.eval(), budget=budget, **opts)
    return Variant(name, model, budget, c["params"], c["flops_per_patch"], c["cpu_latency_s"])


def run_variant(v: Variant, lr: np.ndarray, scale: int, inference: ClassSRInference) -> Upscaled:
    if v.model is None:
        return Upscaled(bicubic_upscale(lr, scale))
    return upscale(v.model, lr, budget=v.budget, **(inference.options() if is_classsr(v.model) else {}))


def as_metrics(v: Variant) -> dict:
    """Flat, JSON-safe metrics of a variant (no NaN: bicubic has no latency)."""
    out = {"params": v.params, "flops_per_patch": v.flops_per_patch}
    if v.latency_s == v.latency_s:
        out["cpu_latency_s"] = v.latency_s
    out.update({f"{s}_{k}": val for s, d in v.scores.items() for k, val in d.items() if k != "flops_per_patch"})
    return out


def score_all(variants: list[Variant], test_root, scale: int, inference: ClassSRInference, flops_set: str) -> list[str]:
    """Scores of every variant on every prepared test set; a ClassSR's FLOPs (which depend on the images)
    become those it spent on ``flops_set``."""
    sets = sorted(p.name for p in Path(test_root).iterdir() if (p / f"LR_bicubic/X{scale}").is_dir())
    for name in sets:
        pairs = test_pairs(Path(test_root) / name, scale)
        for v in variants:
            outs = [run_variant(v, lr, scale, inference) for _, lr, _ in pairs]
            r = mean_scores([o.image for o in outs], pairs, scale)
            v.scores[name] = {"psnr": r["psnr"], "ssim": r["ssim"]}
            if outs and outs[0].flops_per_patch is not None:
                v.scores[name]["flops_per_patch"] = float(np.mean([o.flops_per_patch for o in outs]))
    for v in variants:
        v.flops_per_patch = v.scores.get(flops_set, v.scores[sets[-1]]).get("flops_per_patch", v.flops_per_patch)
    return sets


def markdown_table(variants: list[Variant], sets: list[str]) -> str:
    head = "| variant | params | GFLOPs / 32x32 patch | CPU latency (128x128 LR) | " + " | ".join(
        f"{s} PSNR / SSIM" for s in sets) + " |"
    rows = [head, "|" + "---|" * (4 + len(sets))]
    for v in variants:
        lat = "" if np.isnan(v.latency_s) else f"{v.latency_s * 1e3:.0f} ms"
        cells = [f"{v.scores[s]['psnr']:.3f} / {v.scores[s]['ssim']:.4f}" for s in sets]
        rows.append(f"| {v.name} | {v.params:,} | {v.flops_per_patch / 1e9:.3f} | {lat} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names not dominated in (lower FLOPs, higher PSNR)."""
    front = []
    for name, f, p in points:
        if not any((f2 <= f and p2 >= p) and (f2 < f or p2 > p) for _, f2, p2 in points):
            front.append(name)
    return front


def plot_pareto(variants: list[Variant], test_set: str, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(v.name, v.flops_per_patch / 1e9, v.scores[test_set]["psnr"]) for v in variants if v.flops_per_patch > 0]
    front = set(pareto_front(pts))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, f, p in pts:
        ax.scatter(f, p, color="C3" if name in front else "C0")
        ax.annotate(name, (f, p), fontsize=7, xytext=(3, 3), textcoords="offset points")
    fr = sorted((f, p) for n, f, p in pts if n in front)
    if fr:
        ax.plot(*zip(*fr), color="C3", lw=1, ls="--", label="Pareto front")
    bic = next((v for v in variants if v.name == "bicubic"), None)
    if bic:
        ax.axhline(bic.scores[test_set]["psnr"], color="gray", lw=1, label="bicubic")
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs per 32x32 LR patch")
    ax.set_ylabel(f"PSNR on {test_set} (Y, dB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return sorted(front)


def crops_figure(variants: list[Variant], pair, scale: int, inference: ClassSRInference, path, crop: int = 96):
    """Side-by-side HR-size crops of each variant's output, and the HR."""
    from PIL import Image, ImageDraw

    name, lr, hr = pair
    h, w = hr.shape[:2]
    top, left = (h - crop) // 2 // scale * scale, (w - crop) // 2 // scale * scale
    tiles = [(v.name, run_variant(v, lr, scale, inference).image[top:top + crop, left:left + crop]) for v in variants]
    tiles.append(("HR", hr[top:top + crop, left:left + crop]))
    zoom = 2
    sheet = Image.new("RGB", (len(tiles) * crop * zoom, crop * zoom + 14), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(tiles):
        sheet.paste(Image.fromarray(np.ascontiguousarray(img)).resize((crop * zoom, crop * zoom), Image.NEAREST),
                    (i * crop * zoom, 14))
        draw.text((i * crop * zoom + 2, 1), label[:22], fill="black")
    sheet.save(path)
