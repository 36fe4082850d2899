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

from pipeline import models
from pipeline.evaluate import bicubic_upscale, classsr_protocol_psnr, count_pairs, iter_pairs, score
from pipeline.params import ClassSRInference, ParamError
from pipeline.cost import LATENCY_SIDE, LATENCY_THREADS, NTIRE_SIDE, classsr_macs_on, cost
from pipeline.upscale import Upscaled, branch_flops, class_weighted_flops, is_classsr, upscale


@dataclass
class Variant:
    """One row of the table: a saved model (``None``: bicubic) run at a FLOPs ``budget`` (ClassSR)."""
    name: str
    model: nn.Module | None = None
    budget: float = 1.0
    params: int = 0
    flops_per_patch: float = 0.0  # per 32x32 LR patch (ClassSR: class-weighted, on the Pareto test set)
    latency_s: float = float("nan")  # CPU, one 128x128 LR input, LATENCY_THREADS threads; nan for bicubic
    # test set -> {psnr, ssim (Y, whole image), psnr_rgb (ClassSR's grid)[, flops_per_patch, flops_percent]}
    scores: dict = field(default_factory=dict)
    scale: int = 0  # the model's own scale (0: bicubic, at the evaluation's scale)
    macs_256: float = 0.0  # MACs on one 256x256 LR input (NTIRE's convention; ClassSR: its patch-wise work)
    deploy: dict = field(default_factory=dict)  # onnx_max_abs_err, ort_latency_s[, gpu_fp32_s, gpu_fp16_s, ...]
    self_ensemble: bool = False  # the x8 flip/rotate self-ensemble of a plain model ("name+")
    per_image: dict = field(default_factory=dict)  # test set -> {"psnr": [...], "psnr_rgb": [...]}, in file order


def reference_model(name: str, ref, scale: int):
    """The published model of ``evaluate.references.<name>`` (``ref``: its path and layout), at the
    evaluation's scale; a file that does not load, or another scale, is a clear error naming it."""
    try:
        model = models.load(ref.path, layout=ref.layout or None)
    except ValueError as e:
        raise ParamError(f"evaluate.references.{name}: {e}") from e
    if model.config["scale"] != scale:
        raise ParamError(f"evaluate.references.{name}: {ref.path} is a x{model.config['scale']} model, "
                         f"evaluate.scale is {scale}")
    return model


def variant(name: str, model=None, budget: float = 1.0, inference: ClassSRInference | None = None) -> Variant:
    """A row, with its cost by the pipeline's one convention (:func:`pipeline.cost.cost`), said as it
    is measured (at the papers' widths each variant's latency and MACs take minutes on a CPU)."""
    if model is None:
        return Variant(name)
    import time

    opts = inference.options() if inference and is_classsr(model) else {}
    print(f"evaluate: cost of {name} (params, FLOPs, MACs at {NTIRE_SIDE}², CPU latency) ...", flush=True)
    t0 = time.perf_counter()
    c = cost(model.eval(), budget=budget, **opts)
    print(f"evaluate: cost of {name}: {c['params']:,} params, {c['macs_256'] / 1e9:.2f} GMACs, "
          f"{c['cpu_latency_s'] * 1e3:.1f} ms ({time.perf_counter() - t0:.0f} s)", flush=True)
    return Variant(name, model, budget, c["params"], c["flops_per_patch"], c["cpu_latency_s"],
                   scale=model.config["scale"], macs_256=c["macs_256"])


def latency_probe() -> np.ndarray:
    """The seeded random LR image a ClassSR's latency is measured on (:func:`pipeline.cost.cost`'s)."""
    return np.random.default_rng(0).integers(0, 256, (LATENCY_SIDE, LATENCY_SIDE, 3), dtype=np.uint8)


def ensemble_variant(base: Variant) -> Variant:
    """``base``'s "+" row: the x8 self-ensemble, 8 x its FLOPs and MACs, its latency measured."""
    from pipeline.metrics import wall_time
    from pipeline.cost import with_threads

    probe = latency_probe()
    lat = with_threads(LATENCY_THREADS, lambda: wall_time(lambda: upscale(base.model, probe, self_ensemble=True),
                                                          warmup=1, repeats=3))
    return Variant(f"{base.name}+", base.model, 1.0, base.params, 8 * base.flops_per_patch, lat, scale=base.scale,
                   macs_256=8 * base.macs_256, self_ensemble=True)


def deploy_onnx(variants: list[Variant], folder, inference: ClassSRInference) -> None:
    """Export every model variant to ONNX under ``folder/<variant>/`` (a ClassSR once, for all its budgets),
    check ONNX Runtime against PyTorch and time it beside PyTorch's CPU latency (same input, same threads)."""
    from pipeline.export import export_onnx, max_abs_error, ort_latency

    exported, probe = {}, latency_probe()
    for v in (v for v in variants if v.model is not None and not v.self_ensemble):  # "+": 8 x its base's graph
        key = id(v.model)
        if key not in exported:
            files = export_onnx(v.model, Path(folder) / safe_name(v.name.split("@")[0]))
            exported[key] = (files, max_abs_error(v.model, files))
        files, err = exported[key]
        opts = {**inference.options(), "budget": v.budget} if is_classsr(v.model) else {}
        v.deploy.update(onnx_max_abs_err=err, ort_latency_s=ort_latency(v.model, files, LATENCY_SIDE,
                                                                        LATENCY_THREADS, probe, **opts))
        print(f"evaluate: {v.name}: ONNX max |ORT - PyTorch| {err:.2e}, ORT {v.deploy['ort_latency_s'] * 1e3:.1f} ms "
              f"vs PyTorch {v.latency_s * 1e3:.1f} ms")


def deploy_gpu(variants: list[Variant], inference: ClassSRInference) -> None:
    """fp32 / fp16 GPU runtime and peak memory of every model variant (its model on the GPU)."""
    from pipeline.cost import gpu_cost

    for v in (v for v in variants if v.model is not None and not v.self_ensemble):
        opts = {**inference.options(), "budget": v.budget} if is_classsr(v.model) else {}
        v.deploy.update(gpu_cost(v.model, **opts))


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_variant(v: Variant, lr: np.ndarray, scale: int, inference: ClassSRInference,
                cover_all: bool = True) -> Upscaled:
    if v.model is None:
        return Upscaled(bicubic_upscale(lr, scale))
    if is_classsr(v.model):
        return upscale(v.model, lr, budget=v.budget, cover_all=cover_all, **inference.options())
    return upscale(v.model, lr, self_ensemble=v.self_ensemble)


def as_metrics(v: Variant) -> dict:
    """Flat, JSON-safe metrics of a variant (no NaN: bicubic has no latency)."""
    out = {"params": v.params, "flops_per_patch": v.flops_per_patch, "macs_256": v.macs_256}
    if v.latency_s == v.latency_s:
        out["cpu_latency_s"] = v.latency_s
    out.update(v.deploy)
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
                v.per_image[name] = {"psnr": list(acc[v.name].psnr), "psnr_rgb": list(acc[v.name].psnr_rgb)}
    for v in variants:
        chosen = v.scores.get(flops_set) or next(iter(v.scores.values()), {})
        v.flops_per_patch = chosen.get("flops_per_patch", v.flops_per_patch)
        if v.model is not None and is_classsr(v.model):  # its 256^2 work at that set's class mix
            v.macs_256 = classsr_macs_on(v.model, v.flops_per_patch, NTIRE_SIDE, inference.patch, inference.stride)
    return sets


def markdown_table(variants: list[Variant], sets: list[str]) -> str:
    """BasicSR's protocol: Y-PSNR / SSIM on the whole image, with the cost columns (conventions in
    :data:`COST_CONVENTIONS`); ONNX Runtime and GPU columns when measured."""
    ort = any("ort_latency_s" in v.deploy for v in variants)
    gpu = any("gpu_fp32_s" in v.deploy for v in variants)
    cols = ["params", "GFLOPs / 32² patch", f"GMACs @ {NTIRE_SIDE}²",
            f"CPU ms ({LATENCY_SIDE}², {LATENCY_THREADS} thr)"] + (["ORT ms"] if ort else []) + (
        ["GPU fp32 / fp16 ms", "GPU MB"] if gpu else [])
    head = "| variant | " + " | ".join(cols) + " | " + " | ".join(f"{s} PSNR / SSIM" for s in sets) + " |"
    rows = [head, "|" + "---|" * (1 + len(cols) + len(sets))]
    for v in variants:
        ms = lambda sec: "" if sec != sec else f"{sec * 1e3:.1f}"  # noqa: E731  (nan: not measured)
        cells = [f"{v.params:,}", f"{v.flops_per_patch / 1e9:.3f}", f"{v.macs_256 / 1e9:.2f}", ms(v.latency_s)]
        if ort:
            cells.append(ms(v.deploy.get("ort_latency_s", float("nan"))))
        if gpu:
            d = v.deploy
            cells += [f"{ms(d['gpu_fp32_s'])} / {ms(d['gpu_fp16_s'])}" if "gpu_fp32_s" in d else "",
                      f"{d['gpu_peak_mem_mb']:.0f}" if "gpu_peak_mem_mb" in d else ""]
        scores = [f"{v.scores[s]['psnr']:.3f} / {v.scores[s]['ssim']:.4f}" if s in v.scores else "–" for s in sets]
        rows.append(f"| {v.name} | " + " | ".join(cells + scores) + " |")
    return "\n".join(rows) + "\n"


COST_CONVENTIONS = f"""Cost columns:
- **params**: every parameter (ClassSR: classifier and all branches; learnable MeanShift convs counted, as ClassSR does).
- **GFLOPs / 32² patch**: 2 x MACs of one 32x32 LR patch, ClassSR's unit; a ClassSR: its branches' FLOPs weighted
  by the class counts of every patch of the Pareto test set (cal_FLOPs; the classifier's 7.4 M added for FSRCNN only).
- **GMACs @ {NTIRE_SIDE}²**: multiply-accumulates of one {NTIRE_SIDE}x{NTIRE_SIDE} LR input, the NTIRE efficient-SR
  convention most tables print as "FLOPs"; a ClassSR: its patch-wise work there (overlapping 32/28 patches, each classified).
- **CPU ms**: median of 5 forwards on one {LATENCY_SIDE}x{LATENCY_SIDE} LR input, torch at {LATENCY_THREADS} threads
  (a ClassSR: its whole patch-wise inference); **ORT ms**: the same through the exported ONNX graphs in ONNX Runtime
  (CPU, same threads). **GPU**: fp32 / fp16 via torch.utils.benchmark (synchronised) and the fp32 peak memory, when
  a GPU is present.
"""


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
    key: str = ""  # its name in metrics/summary.json (claims.<key>_<set>); default: the paper's


# A method's claim is checked against its own control (the paper's ablation: the same start and steps,
# only the method's term off); the comparison with the L1 student (another start) is kept as context.
CLAIMS = [
    Claim("CSD", "the contrastive loss helps: CSD beats its control (contra_lambda 0, same start and steps)",
          "csd_student", "csd_control", 0.0),
    Claim("CSD", "context: the CSD student beats the same student trained alone with L1 (another start)",
          "csd_student", "student_l1", 0.0, key="CSD_vs_L1"),
    Claim("PCL", "the contrastive loss helps: PCL beats its control (alpha 0, same start and steps)",
          "pcl_student", "pcl_control", 0.0),
    Claim("PCL", "context: fine-tuning with PCL does not lose to the L1 student it starts from (fewer steps)",
          "pcl_student", "student_l1", 0.0, key="PCL_vs_L1"),
    Claim("GhostSR", "almost lossless: at most 0.15 dB below its source", "ghost", "teacher", -0.15),
    Claim("ClassSR", "within 0.05 dB of branch-O (its protocol) at under 90 % of its FLOPs", "classsr@1",
          "branch_O_hard", -0.05, "psnr_rgb", 0.9),
]


def paired_interval(diffs, confidence: float = 0.95) -> tuple[float, float]:
    """The ``confidence`` t-interval of the mean of paired differences (per image); (-inf, inf) from
    fewer than two."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return float("-inf"), float("inf")
    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def verdict(low: float, high: float, margin: float, cost_ok: bool = True) -> str:
    """'holds' when the whole interval clears the paper's margin (strictly: a gain of exactly 0 does not
    "beat" a control), 'fails' when it lies below it (or the cost condition fails), else 'inconclusive':
    the draw does not decide."""
    if not cost_ok or high < margin:
        return "fails"
    return "holds" if low > margin else "inconclusive"


def check_claims(variants: list[Variant], sets: list[str], claims: list[Claim] = CLAIMS) -> list[dict]:
    """One row per claim and test set whose variants this run has: the measured gap, its 95 % interval
    over the set's images (paired: the same image through both), and the verdict of this one run.

    One training run is one draw of the data order and the start: its per-image interval says whether
    the images decide, not whether another seed would agree, so a row that the images do not decide
    is 'inconclusive (1 seed)'; the verdict over seeds is :mod:`pipeline.claims`' (the arms rerun per seed)."""
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
            cost_ok = bool(c.max_flops_ratio is None or ratio < c.max_flops_ratio)
            pairs = (v.per_image.get(s, {}).get(c.metric), ref.per_image.get(s, {}).get(c.metric))
            low, high = (paired_interval(np.subtract(*pairs)) if all(pairs) and len(pairs[0]) == len(pairs[1])
                         else (float("-inf"), float("inf")))
            call = verdict(low, high, c.min_gain_db, cost_ok)
            rows.append({"paper": c.paper, "key": c.key or c.paper, "claim": c.text, "set": s, "variant": c.variant,
                         "reference": c.reference, "gain_db": gain, "ci_low": low, "ci_high": high,
                         "margin_db": c.min_gain_db, "flops_ratio": ratio, "cost_ok": cost_ok, "holds": call == "holds",
                         "verdict": call if call != "inconclusive" else "inconclusive (1 seed)"})
    return rows


def claims_table(rows: list[dict]) -> str:
    lines = ["| paper | claim | set | variant vs reference | ΔPSNR (dB) | 95 % interval (images) | margin | "
             "FLOPs ratio | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        call = r["verdict"] if r["verdict"] != "fails" else "**fails**"
        lines.append(f"| {r['paper']} | {r['claim']} | {r['set']} | {r['variant']} vs {r['reference']} | "
                     f"{r['gain_db']:+.3f} | [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['margin_db']:+.2f} | "
                     f"{r['flops_ratio']:.2f} | {call} |")
    return "\n".join(lines) + "\n"


def headline(variants: list[Variant], sets: list[str], claims: list[dict], reference: str = "teacher") -> dict:
    """The few numbers a researcher compares experiments by, as flat as ``dvc exp show`` shows them:
    each variant's Y-PSNR per set, its FLOPs per patch as a fraction of the teacher's, and each claim's
    measured gap and verdict (``claims.<key>_<set>``)."""
    ref = next((v for v in variants if v.name == reference), None)
    out = {"psnr": {s: {v.name: v.scores[s]["psnr"] for v in variants if s in v.scores} for s in sets}}
    if ref is not None and ref.flops_per_patch:
        out["flops_vs_" + reference] = {v.name: v.flops_per_patch / ref.flops_per_patch for v in variants}
    # everything pipeline.claims needs to aggregate this run with others: the gap, its image interval, the
    # paper's margin and whether the cost condition held
    out["claims"] = {f"{c.get('key', c['paper'])}_{c['set']}": {
        "gain_db": c["gain_db"], "holds": c["holds"], "verdict": c["verdict"], "margin_db": c["margin_db"],
        "cost_ok": c["cost_ok"], **{k: c[k] for k in ("ci_low", "ci_high") if np.isfinite(c[k])}} for c in claims}
    return out


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names not dominated in (lower FLOPs, higher PSNR)."""
    front = []
    for name, f, p in points:
        if not any((f2 <= f and p2 >= p) and (f2 < f or p2 > p) for _, f2, p2 in points):
            front.append(name)
    return front


def pareto_rows(variants: list[Variant], sets: list[str], scale: int, inference: ClassSRInference) -> list[dict]:
    """One row per variant and test set (at the evaluation's scale): scores, both cost conventions, the
    latencies, and whether the variant is on that set's PSNR-vs-MACs front. The DVC plot and the
    MLflow table of the evaluate stage."""
    rows = []
    for s in sets:
        at = [v for v in variants if s in v.scores and v.scale in (0, scale)]
        macs = {}
        for v in at:
            d = v.scores[s]
            macs[v.name] = (classsr_macs_on(v.model, d["flops_per_patch"], NTIRE_SIDE, inference.patch, inference.stride)
                            if "flops_per_patch" in d else v.macs_256)
        front = set(pareto_front([(v.name, macs[v.name], v.scores[s]["psnr"]) for v in at if v.model is not None]))
        for v in at:
            d = v.scores[s]
            rows.append({"variant": v.name, "set": s, "psnr": round(d["psnr"], 4), "ssim": round(d["ssim"], 5),
                         "psnr_rgb": round(d["psnr_rgb"], 4), "params": v.params,
                         "gflops_per_patch": round(d.get("flops_per_patch", v.flops_per_patch) / 1e9, 5),
                         "gmacs_256": round(macs[v.name] / 1e9, 4),
                         "cpu_latency_ms": round(v.latency_s * 1e3, 3) if v.latency_s == v.latency_s else "",
                         "ort_latency_ms": round(v.deploy["ort_latency_s"] * 1e3, 3) if "ort_latency_s" in v.deploy else "",
                         "pareto": v.name in front})
    return rows


def write_csv(rows: list[dict], path):
    import csv

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def text_box(annotation, renderer):
    """The window box of an annotation's text alone (its own extent includes the leader line)."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)
    return Text.get_window_extent(annotation, renderer).expanded(1.04, 1.2)


def place_labels(ax, fig, points: list[tuple[str, float, float]], fontsize: int = 8):
    """Annotate each point where its label overlaps no other label and no marker and stays inside the
    axes: the first free spot on rings of growing radius around the point (a leader line links the
    label to its point); crowded points are labelled first so they get the nearest spots."""
    import math

    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = [ax.transData.transform((x, y)) for _, x, y in points]
    markers = [Bbox.from_bounds(x - 4, y - 4, 8, 8) for x, y in px]
    crowd = [sum(math.dist(a, b) < 40 for b in px) for a in px]
    placed = []
    for i in sorted(range(len(points)), key=lambda i: -crowd[i]):
        name, x, y = points[i]
        text = ax.annotate(name, (x, y), xytext=(6, 0), textcoords="offset points", fontsize=fontsize,
                           va="center", arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkB": 3})
        best = None
        for r in (6, 12, 20, 30, 42, 56, 72, 90, 110):
            for deg in (0, 180, 35, -35, 145, -145, 70, -70, 110, -110, 90, -90):
                dx, dy = r * math.cos(math.radians(deg)), r * math.sin(math.radians(deg))
                text.set_position((dx, dy))
                text.set_horizontalalignment("left" if dx >= 0 else "right")
                box = text_box(text, renderer)
                clashes = sum(box.overlaps(b) for b in placed) + sum(box.overlaps(m) for j, m in enumerate(markers)
                                                                    if j != i)
                inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                score = clashes + (0 if inside else 100)
                if best is None or score < best[0]:
                    best = (score, (dx, dy), box)
                if score == 0:
                    break
            if best[0] == 0:
                break
        text.set_position(best[1])
        text.set_horizontalalignment("left" if best[1][0] >= 0 else "right")
        placed.append(best[2])


def plot_pareto(variants: list[Variant], test_set: str, path, scale: int = 4):
    """PSNR against MACs at 256^2 LR on ``test_set`` (log x), the front in red, labels kept apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(v.name, v.macs_256 / 1e9, v.scores[test_set]["psnr"]) for v in variants
           if v.macs_256 > 0 and test_set in v.scores and v.scale in (0, scale)]
    front = set(pareto_front(pts))
    fig, ax = plt.subplots(figsize=(9, 6))
    for name, f, p in pts:
        ax.scatter(f, p, color="C3" if name in front else "C0", zorder=3)
    fr = sorted((f, p) for n, f, p in pts if n in front)
    if fr:
        ax.plot(*zip(*fr), color="C3", lw=1, ls="--", label="Pareto front")
    bic = next((v for v in variants if v.name == "bicubic"), None)
    if bic and test_set in bic.scores:
        ax.axhline(bic.scores[test_set]["psnr"], color="gray", lw=1, label="bicubic")
    ax.set_xscale("log")
    ax.set_xlabel(f"GMACs per {NTIRE_SIDE}x{NTIRE_SIDE} LR input (log)")
    ax.set_ylabel(f"PSNR on {test_set} (Y, dB)")
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.legend(fontsize=8, loc="lower right")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.15 * (hi - lo))  # headroom for labels moved up
    fig.tight_layout()
    place_labels(ax, fig, pts)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return sorted(front)


def textured_box(hr: np.ndarray, crop: int) -> tuple[int, int]:
    """(top, left) of the ``crop``-sized window with the most gradient energy: where SR methods differ."""
    gray = hr.astype(np.float32).mean(2)
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1]
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = energy.shape
    if h < crop or w < crop:
        return 0, 0
    window = integral[crop:, crop:] - integral[:-crop, crop:] - integral[crop:, :-crop] + integral[:-crop, :-crop]
    top, left = np.unravel_index(np.argmax(window), window.shape)
    return int(top), int(left)


def crops_figure(variants: list[Variant], pair, scale: int, inference: ClassSRInference, path, crop: int = 96,
                 zoom: int = 2):
    """The HR image with the crop's location marked, then each variant's crop of its most textured
    region (zoomed, with its PSNR on the crop), in two rows."""
    from PIL import Image, ImageDraw, ImageFont

    from pipeline.metrics import psnr

    name, lr, hr = pair
    crop = min(crop, *hr.shape[:2])
    top, left = textured_box(hr, crop)
    tiles = []
    for v in (v for v in variants if v.scale in (0, scale)):
        sr = run_variant(v, lr, scale, inference).image[top:top + crop, left:left + crop]
        tiles.append((f"{v.name[:26]}", f"{psnr(sr, hr[top:top + crop, left:left + crop]):.2f} dB", sr))
    tiles.append(("HR", name, hr[top:top + crop, left:left + crop]))
    side, label_h = crop * zoom, 34
    per_row = (len(tiles) + 1) // 2
    font = ImageFont.load_default(size=14)
    full_h = 2 * (side + label_h)
    full_w = round(hr.shape[1] * full_h / hr.shape[0])
    sheet = Image.new("RGB", (full_w + 10 + per_row * (side + 6), full_h), "white")
    thumb = Image.fromarray(np.ascontiguousarray(hr)).resize((full_w, full_h), Image.BICUBIC)
    f = full_h / hr.shape[0]
    ImageDraw.Draw(thumb).rectangle([left * f, top * f, (left + crop) * f, (top + crop) * f], outline="red", width=3)
    sheet.paste(thumb, (0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, (label, sub, img) in enumerate(tiles):
        x, y = full_w + 10 + (i % per_row) * (side + 6), (i // per_row) * (side + label_h)
        draw.text((x + 2, y + 1), label, fill="black", font=font)
        draw.text((x + 2, y + 17), sub, fill="dimgray", font=font)
        sheet.paste(Image.fromarray(np.ascontiguousarray(img)).resize((side, side), Image.NEAREST), (x, y + label_h))
    sheet.save(path, optimize=True)  # git tracks it: kept well under 1 MB
