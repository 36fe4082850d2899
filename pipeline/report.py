"""Evaluation of every variant: scores on every prepared test set, cost, Markdown tables, a PSNR-vs-
FLOPs Pareto plot and side-by-side crops.

Two protocols per test set, because the papers use two:
- BasicSR's (RFDN, CSD, PCL, GhostSR tables): Y-channel PSNR / SSIM, crop = scale, on the whole image
  (a ClassSR covers the whole image: its patch grid gets a last row/column flush with the edge).
- ClassSR's (its tables): **RGB** PSNR, crop = scale, on the region its own 32/28 patch grid covers (the
  remainder rows/columns are dropped, for every variant alike), and a ClassSR's FLOPs per patch
  weighted by the class counts of all the patches of the set (cal_FLOPs), with its % of branch-O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from tqdm import tqdm

from pipeline.evaluate import bicubic_upscale, classsr_protocol_psnr, count_pairs, iter_pairs, score
from pipeline.params import ClassSRInference
from pipeline.upscale import LATENCY_SIDE, Upscaled, branch_flops, class_weighted_flops, cost, is_classsr, upscale


@dataclass
class Variant:
    """One row of the table: a saved model (``None``: bicubic) run at a FLOPs ``budget`` (ClassSR)."""
    name: str
    model: nn.Module | None = None
    budget: float = 1.0
    params: int = 0
    flops_per_patch: float = 0.0  # per 32x32 LR patch (ClassSR: class-weighted, on the Pareto test set)
    latency_s: float = float("nan")  # CPU, one 128x128 LR input; nan for bicubic
    # test set -> {psnr, ssim (Y, whole image), psnr_rgb (ClassSR's grid)[, flops_per_patch, flops_percent]}
    scores: dict = field(default_factory=dict)
    scale: int = 0  # the model's own scale (0: bicubic, at the evaluation's scale)


def variant(name: str, model=None, budget: float = 1.0, inference: ClassSRInference | None = None) -> Variant:
    """A row, with its cost by the pipeline's one convention (:func:`pipeline.upscale.cost`)."""
    if model is None:
        return Variant(name)
    opts = inference.options() if inference and is_classsr(model) else {}
    c = cost(model.eval(), budget=budget, **opts)
    return Variant(name, model, budget, c["params"], c["flops_per_patch"], c["cpu_latency_s"],
                   scale=model.config["scale"])


def run_variant(v: Variant, lr: np.ndarray, scale: int, inference: ClassSRInference,
                cover_all: bool = True) -> Upscaled:
    if v.model is None:
        return Upscaled(bicubic_upscale(lr, scale))
    if is_classsr(v.model):
        return upscale(v.model, lr, budget=v.budget, cover_all=cover_all, **inference.options())
    return upscale(v.model, lr)


def as_metrics(v: Variant) -> dict:
    """Flat, JSON-safe metrics of a variant (no NaN: bicubic has no latency)."""
    out = {"params": v.params, "flops_per_patch": v.flops_per_patch}
    if v.latency_s == v.latency_s:
        out["cpu_latency_s"] = v.latency_s
    out.update({f"{s}_{k}": val for s, d in v.scores.items() for k, val in d.items()})
    return out


@dataclass
class SetScores:
    """One variant's per-image scores on one test set, gathered an image at a time (a Test8K set does
    not fit in memory at once), by both protocols."""
    psnr: list = field(default_factory=list)  # Y, whole image (BasicSR)
    ssim: list = field(default_factory=list)
    psnr_rgb: list = field(default_factory=list)  # RGB on ClassSR's own patch grid
    classes: list = field(default_factory=list)  # a ClassSR's patch classes on that grid

    def add(self, v: Variant, lr: np.ndarray, hr: np.ndarray, scale: int, inference: ClassSRInference):
        whole = run_variant(v, lr, scale, inference).image
        s = score(whole, hr, scale)
        self.psnr.append(s["psnr"])
        self.ssim.append(s["ssim"])
        grid = whole  # any whole-image SR covers ClassSR's grid; a ClassSR runs on that grid itself
        if v.model is not None and is_classsr(v.model):
            out = run_variant(v, lr, scale, inference, cover_all=False)
            grid = out.image
            self.classes.append(out.classes)
        self.psnr_rgb.append(classsr_protocol_psnr([grid], [(None, lr, hr)], scale, inference.patch, inference.stride))

    def result(self, v: Variant, inference: ClassSRInference) -> dict:
        """Means over the set; a ClassSR's FLOPs weighted by the class counts of all the set's patches."""
        out = {"psnr": float(np.mean(self.psnr)), "ssim": float(np.mean(self.ssim)),
               "psnr_rgb": float(np.mean(self.psnr_rgb))}
        if self.classes:
            flops = branch_flops(v.model, inference.patch)
            mean = class_weighted_flops(v.model, np.concatenate(self.classes), flops)
            out.update(flops_per_patch=mean, flops_percent=100 * mean / flops[-1])
        return out


def score_all(variants: list[Variant], test_root, scale: int, inference: ClassSRInference, flops_set: str) -> list[str]:
    """Scores of every variant on every prepared test set by both protocols, each variant at its own scale
    (a x2 GhostSR EDSR on the sets' X2 LR, where prepared), on its model's device. Each image is decoded
    once and run through every variant before the next (memory: one image and its SRs). A ClassSR's
    FLOPs per patch (which depend on the images) become those it spent on ``flops_set``."""
    sets = sorted(p.name for p in Path(test_root).iterdir() if (p / f"LR_bicubic/X{scale}").is_dir())
    for v in variants:
        if v.scale and v.scale != scale and not v.name.endswith(f"(x{v.scale})"):
            v.name = f"{v.name} (x{v.scale})"
    for name in sets:
        folder = Path(test_root) / name
        for s in sorted({v.scale or scale for v in variants}):
            at_s = [v for v in variants if (v.scale or scale) == s]
            if not (folder / f"LR_bicubic/X{s}").is_dir():
                print(f"evaluate: {name} has no X{s} LR (prepare_test.scales): {[v.name for v in at_s]} not scored there")
                continue
            acc = {v.name: SetScores() for v in at_s}
            for _, lr, hr in tqdm(iter_pairs(folder, s), total=count_pairs(folder), desc=f"{name} x{s}", unit="image"):
                for v in at_s:
                    acc[v.name].add(v, lr, hr, s, inference)
            for v in at_s:
                v.scores[name] = acc[v.name].result(v, inference)
    for v in variants:
        chosen = v.scores.get(flops_set) or next(iter(v.scores.values()), {})
        v.flops_per_patch = chosen.get("flops_per_patch", v.flops_per_patch)
    return sets


def markdown_table(variants: list[Variant], sets: list[str]) -> str:
    """BasicSR's protocol: Y-PSNR / SSIM on the whole image, with the cost columns."""
    head = f"| variant | params | GFLOPs / 32x32 patch | CPU latency ({LATENCY_SIDE}x{LATENCY_SIDE} LR) | " + " | ".join(
        f"{s} PSNR / SSIM" for s in sets) + " |"
    rows = [head, "|" + "---|" * (4 + len(sets))]
    for v in variants:
        lat = "" if np.isnan(v.latency_s) else f"{v.latency_s * 1e3:.0f} ms"
        cells = [f"{v.scores[s]['psnr']:.3f} / {v.scores[s]['ssim']:.4f}" if s in v.scores else "–" for s in sets]
        rows.append(f"| {v.name} | {v.params:,} | {v.flops_per_patch / 1e9:.3f} | {lat} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def classsr_table(variants: list[Variant], sets: list[str]) -> str:
    """ClassSR's protocol: RGB PSNR on its patch grid, and per set the GFLOPs per 32x32 patch (a ClassSR:
    class-count weighted over the set, with its % of branch-O)."""
    rows = ["| variant | " + " | ".join(f"{s} RGB PSNR | {s} GFLOPs" for s in sets) + " |",
            "|---|" + "---|---|" * len(sets)]
    for v in variants:
        cells = []
        for s in sets:
            if s not in v.scores:
                cells.append("– | –")
                continue
            d = v.scores[s]
            flops = d.get("flops_per_patch", v.flops_per_patch)  # per set for a ClassSR, fixed otherwise
            pct = f" ({d['flops_percent']:.0f} %)" if "flops_percent" in d else ""
            cells.append(f"{d['psnr_rgb']:.3f} | {flops / 1e9:.3f}{pct}")
        rows.append(f"| {v.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


@dataclass
class Claim:
    """A paper's headline claim as a check on this run: ``variant`` against ``reference`` on each test set,
    PSNR difference >= ``min_gain_db`` (and FLOPs <= ``max_flops_ratio`` of the reference's, if set)."""
    paper: str
    text: str
    variant: str
    reference: str
    min_gain_db: float
    metric: str = "psnr"  # "psnr": Y on the whole image (BasicSR); "psnr_rgb": ClassSR's own protocol
    max_flops_ratio: float | None = None


CLAIMS = [
    Claim("CSD", "the CSD student beats the same student trained alone with L1", "csd_student", "student_l1", 0.0),
    Claim("PCL", "fine-tuning with PCL does not lose to the L1 student it starts from", "pcl_student", "student_l1", 0.0),
    Claim("GhostSR", "almost lossless: at most 0.15 dB below its source", "ghost", "teacher", -0.15),
    Claim("ClassSR", "within 0.05 dB of branch-O (its protocol) at under 90 % of its FLOPs", "classsr@1",
          "branch_O_hard", -0.05, "psnr_rgb", 0.9),
]


def check_claims(variants: list[Variant], sets: list[str], claims: list[Claim] = CLAIMS) -> list[dict]:
    """One row per claim and test set whose variants this run has: the measured gap and whether it holds."""
    by_name, rows = {v.name: v for v in variants}, []
    for c in claims:
        if c.variant not in by_name or c.reference not in by_name:
            continue
        v, ref = by_name[c.variant], by_name[c.reference]
        if v.scale != ref.scale:
            continue  # e.g. the paper profile's x2 GhostSR EDSR against a x4 teacher: no claim to check
        for s in (s for s in sets if s in v.scores and s in ref.scores):
            gain = v.scores[s][c.metric] - ref.scores[s][c.metric]
            ratio = v.scores[s].get("flops_per_patch", v.flops_per_patch) / ref.flops_per_patch
            holds = gain >= c.min_gain_db and (c.max_flops_ratio is None or ratio < c.max_flops_ratio)
            rows.append({"paper": c.paper, "claim": c.text, "set": s, "variant": c.variant, "reference": c.reference,
                         "gain_db": gain, "flops_ratio": ratio, "holds": holds})
    return rows


def claims_table(rows: list[dict]) -> str:
    lines = ["| paper | claim | set | variant vs reference | ΔPSNR (dB) | FLOPs ratio | holds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['paper']} | {r['claim']} | {r['set']} | {r['variant']} vs {r['reference']} | "
                     f"{r['gain_db']:+.3f} | {r['flops_ratio']:.2f} | {'yes' if r['holds'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names not dominated in (lower FLOPs, higher PSNR)."""
    front = []
    for name, f, p in points:
        if not any((f2 <= f and p2 >= p) and (f2 < f or p2 > p) for _, f2, p2 in points):
            front.append(name)
    return front


def plot_pareto(variants: list[Variant], test_set: str, path, scale: int = 4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(v.name, v.flops_per_patch / 1e9, v.scores[test_set]["psnr"]) for v in variants
           if v.flops_per_patch > 0 and test_set in v.scores and v.scale in (0, scale)]
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
    tiles = [(v.name, run_variant(v, lr, scale, inference).image[top:top + crop, left:left + crop]) for v in variants
             if v.scale in (0, scale)]
    tiles.append(("HR", hr[top:top + crop, left:left + crop]))
    zoom = 2
    sheet = Image.new("RGB", (len(tiles) * crop * zoom, crop * zoom + 14), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(tiles):
        sheet.paste(Image.fromarray(np.ascontiguousarray(img)).resize((crop * zoom, crop * zoom), Image.NEAREST),
                    (i * crop * zoom, 14))
        draw.text((i * crop * zoom + 2, 1), label[:22], fill="black")
    sheet.save(path)
