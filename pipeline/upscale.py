"""The one LR -> SR entry point: any saved model or published checkpoint (ClassSR included) on a uint8
image, and its command ``sr-upscale`` (= ``python -m pipeline.upscale``):

    sr-upscale models/classsr photo.png photo_x4.png [--budget 0.65]
    sr-upscale edsr_baseline_x4-6b446fab.pt in.png out.png            # an EDSR-PyTorch checkpoint
    sr-upscale models/teacher "LR/*.png" out/ --gt HR/ [--self-ensemble]  # PSNR/SSIM like BasicSR's test.py
    sr-upscale models/teacher big.png big_x4.png --device cuda --half [--tile 128 --tile-above 0]

:func:`upscale` runs a plain model on the whole image or on overlapping tiles, and a ClassSR model
patch-wise: patches are classified in one batch, then **each branch runs once per batch of its
patches**; outputs are overlap-averaged by :mod:`pipeline.tiling`. ``budget`` (a fraction of the
branch-O FLOPs, which the published code lacks) moves the least confident patches to cheaper branches
until the class-weighted FLOPs fit. Validation in the training loop, the ``evaluate`` stage, the ClassSR
stages and this command all call it. What a model costs (params, FLOPs, MACs, latency) is
:mod:`pipeline.cost`.
"""
from __future__ import annotations

import argparse
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.metrics import count_macs, tensor_to_uint8, uint8_to_tensor
from pipeline.tiling import Canvas, run_tiled, split

# ClassSR's cal_FLOPs adds the Class-Module's cost (a 7.4 M constant; 7.60 M computed) to the FSRCNN
# branches' only; its CARN / SRResNet / RCAN percentages count the branches alone. Same here.
CLASSIFIER_FLOPS_PER_PATCH = {"fsrcnn": 7.4e6}
# Whole-image inference of a plain model runs on overlapping LR tiles above TILE_ABOVE LR pixels, so
# memory stays bounded on Test4K/8K (an MSRResNet-64 activation at 8K HR size is ~8.5 GB); below it,
# the whole image in one pass. The overlap is averaged; measured within 0.01 dB of untiled.
TILE, TILE_OVERLAP, TILE_ABOVE = 256, 32, 512 * 512
# An LR side below this is padded by edge replication for the forward pass and cropped back: E-RFDN's
# ESA (stride-2 conv, then a 7x7 max-pool with stride 3) needs at least 15 px.
MIN_LR_SIDE = 16


def default_device() -> str:
    """Where inference runs when nobody says: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Upscaled:
    image: np.ndarray  # uint8 HxWx3 of the covered region
    classes: np.ndarray | None = None  # ClassSR: the branch of each patch
    flops_per_patch: float | None = None  # ClassSR: class-weighted branch FLOPs (cal_FLOPs)


def is_classsr(model) -> bool:
    return getattr(model, "config", {}).get("arch") == "classsr"


def classifier_flops(model) -> float:
    """The Class-Module FLOPs per patch that ClassSR's cal_FLOPs adds for this backbone (FSRCNN only)."""
    return CLASSIFIER_FLOPS_PER_PATCH.get(model.config["kwargs"].get("branch_arch"), 0.0)


def class_weighted_flops(model, classes: np.ndarray, flops: list[float]) -> float:
    """ClassSR's cal_FLOPs: the branch FLOPs per patch weighted by the class counts of ``classes`` (all
    the patches of an image, or of a whole test set: patch-weighted, not a mean of per-image means)."""
    counts = np.bincount(classes, minlength=len(flops))
    return float(np.dot(counts, flops) / counts.sum()) + classifier_flops(model)


_BRANCH_FLOPS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def branch_flops(model, patch: int = 32) -> list[float]:
    """FLOPs (2 x MACs) of each ClassSR branch on one ``patch`` x ``patch`` LR patch.

    Counted once per model and patch size (a count runs each branch: at the papers' widths, per image of
    a test set, that was a third of evaluate's time); a module keeps its structure once built."""
    counted = _BRANCH_FLOPS.setdefault(model, {})
    if patch not in counted:
        counted[patch] = [2.0 * count_macs(b, (1, 3, patch, patch)) for b in model.branches]
    return list(counted[patch])


def apply_budget(probs: torch.Tensor, flops: list[float], budget: float) -> torch.Tensor:
    """Classes by argmax, then the least confident patches step down to cheaper branches until the mean
    branch FLOPs per patch <= budget x the most expensive branch's (branch-O) FLOPs.

    The moves are made in passes (each pass steps every patch still above the cheapest branch down by
    one, least confident first) and stop at the first move that fits. Vectorised on the probabilities'
    device: one sort, one cumulative sum over at most (classes - 1) x patches moves."""
    classes = probs.argmax(dim=1)
    if budget >= 1.0:
        return classes
    cost = torch.tensor(flops, dtype=torch.float64, device=probs.device)
    excess = cost[classes].sum() - budget * cost.max() * len(classes)
    if excess <= 0:
        return classes
    order = torch.argsort(probs.max(dim=1).values, stable=True)  # least confident first
    start = classes[order]
    passes = torch.arange(1, len(flops), device=probs.device)[:, None]  # pass p moves class c to c - p
    movable = start[None, :] >= passes  # (passes, patches): still above the cheapest branch in pass p
    to = (start[None, :] - passes).clamp(min=0)
    saving = torch.where(movable, cost[(to + 1).clamp(max=len(flops) - 1)] - cost[to], 0.0).flatten()
    done = torch.cumsum(saving, 0) >= excess
    n_moves = int(done.to(torch.int8).argmax()) + 1 if bool(done.any()) else len(saving)
    taken = (torch.arange(len(saving), device=probs.device) < n_moves) & movable.flatten()
    steps = taken.view(movable.shape).sum(0)
    return classes.index_put((order,), classes[order] - steps)


@torch.no_grad()
def classsr_patchwise(model, lr: torch.Tensor, scale: int, patch: int, stride: int, budget: float, batch: int,
                      flops: list[float], cover_all: bool = True) -> tuple[torch.Tensor, np.ndarray]:
    """ClassSR on one LR image (C, H, W) in [0, 1]: the SR of the covered region and each patch's class."""
    tiles = split(lr, patch, stride, cover_all)
    probs = torch.cat([torch.softmax(model.classifier(tiles.patches[i:i + batch]), 1)
                       for i in range(0, len(tiles.patches), batch)])
    classes = apply_budget(probs, flops, budget)
    canvas = None
    for c, branch in enumerate(model.branches):
        idx = torch.nonzero(classes == c).flatten()
        for i in range(0, len(idx), batch):  # each branch once per batch of its own patches
            chunk = idx[i:i + batch]
            out = branch(tiles.patches[chunk])
            if canvas is None:
                canvas = Canvas(tiles, scale, out.shape[1], out)
            canvas.add(out, chunk)
    return canvas.image(), classes.cpu().numpy()


# The x8 geometric self-ensemble ("+" in the EDSR and CSD tables): each rotation by k x 90 degrees, with
# and without a horizontal flip; outputs mapped back and averaged before quantisation (EDSR-PyTorch's forward_x8).
ENSEMBLE = [(k, flip) for flip in (False, True) for k in range(4)]


def _transform(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))


def _untransform(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y


@torch.no_grad()
def super_resolve(model, x: torch.Tensor, *, budget: float = 1.0, patch: int = 32, stride: int = 28, batch: int = 32,
                  tile: int = TILE, overlap: int = TILE_OVERLAP, tile_above: int = TILE_ABOVE,
                  flops: list[float] | None = None, cover_all: bool = True) -> tuple[torch.Tensor, np.ndarray | None]:
    """The SR of one LR image ``x`` (C, H, W) in [0, 1] on the model's device, and a ClassSR's patch classes."""
    scale = model.config["scale"]
    if is_classsr(model):
        return classsr_patchwise(model, x, scale, patch, stride, budget, batch, flops or branch_flops(model, patch),
                                 cover_all)
    h, w = x.shape[1:]
    if tile and h * w > tile_above:
        per_call = max(1, batch * patch * patch // (tile * tile))
        return run_tiled(model, x, scale, tile, tile - overlap, batch=per_call), None
    if min(h, w) < MIN_LR_SIDE:
        pad = (0, max(0, MIN_LR_SIDE - w), 0, max(0, MIN_LR_SIDE - h))
        x = torch.nn.functional.pad(x[None], pad, mode="replicate")[0]
    return model(x[None])[0, :, :h * scale, :w * scale], None


@torch.no_grad()
def upscale(model, lr: np.ndarray, *, budget: float = 1.0, patch: int = 32, stride: int = 28, batch: int = 32,
            tile: int = TILE, overlap: int = TILE_OVERLAP, tile_above: int = TILE_ABOVE,
            flops: list[float] | None = None, cover_all: bool = True, self_ensemble: bool = False) -> Upscaled:
    """Super-resolve the uint8 HxWx3 image ``lr`` with ``model`` on the model's device, in its dtype.

    ClassSR: patch-wise (``patch``/``stride``, ``batch`` patches per branch call) under the FLOPs
    ``budget``; ``flops`` (its branch FLOPs) may be passed to save recounting them; ``cover_all=False``
    is ClassSR's own grid, which drops the remainder. Other models: the whole image, or, when it has
    more than ``tile_above`` LR pixels (0: always), overlapping ``tile`` x ``tile`` LR tiles (``tile``
    0: never), as many per call as ``batch`` patches of ``patch`` pixels hold. ``self_ensemble``: the
    mean of the 8 flipped / rotated passes (a ClassSR's classes and FLOPs: of the untransformed pass, x 8)."""
    param = next(model.parameters())
    x = uint8_to_tensor(lr)[0].to(param.device, param.dtype)
    opts = {"budget": budget, "patch": patch, "stride": stride, "batch": batch, "tile": tile, "overlap": overlap,
            "tile_above": tile_above, "cover_all": cover_all}
    if is_classsr(model):
        opts["flops"] = flops = flops or branch_flops(model, patch)
    if not self_ensemble:
        sr, classes = super_resolve(model, x, **opts)
    else:
        if not cover_all:
            raise ValueError("self_ensemble needs cover_all=True (ClassSR's own grid depends on the orientation)")
        sr, classes = super_resolve(model, x, **opts)
        sr = sr.float()
        for k, flip in ENSEMBLE[1:]:
            sr += _untransform(super_resolve(model, _transform(x, k, flip), **opts)[0].float(), k, flip)
        sr /= len(ENSEMBLE)
    if classes is None:
        return Upscaled(tensor_to_uint8(sr))
    per_patch = class_weighted_flops(model, classes, flops) * (len(ENSEMBLE) if self_ensemble else 1)
    return Upscaled(tensor_to_uint8(sr), classes, per_patch)


def input_files(spec: str) -> list[Path]:
    """An image file, a folder of images, or a glob pattern (quoted, so the shell leaves it alone)."""
    import glob

    from pipeline.data.images import IMAGE_EXTENSIONS, list_images

    path = Path(spec)
    if path.is_dir():
        return list_images(path)
    if path.is_file():
        return [path]
    files = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"'{spec}': no such image file or folder, and no image matches it as a pattern")
    return files


def ground_truth(gt_dir: Path, lr_path: Path, scale: int) -> Path:
    """The HR image of ``lr_path`` in ``gt_dir``: the same stem, or the stem without its ``x4`` suffix
    (DIV2K's and EDSR-PyTorch's LR names)."""
    import glob

    from pipeline.data.images import IMAGE_EXTENSIONS

    stems = [lr_path.stem] + ([lr_path.stem[:-len(f"x{scale}")]] if lr_path.stem.endswith(f"x{scale}") else [])
    for stem in stems:
        for p in sorted(gt_dir.glob(f"{glob.escape(stem)}.*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                return p
    raise FileNotFoundError(f"--gt {gt_dir}: no HR image named {' or '.join(stems)} for {lr_path}")


def main(argv=None):
    from pipeline import models
    from pipeline.data.images import ImageError

    ap = argparse.ArgumentParser(prog="sr-upscale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a saved model folder or a published .pt/.pth checkpoint")
    ap.add_argument("input", help="an LR image, a folder of them, or a quoted glob ('LR/*.png')")
    ap.add_argument("output", help="the SR image (one input) or a folder (written as <name>.png)")
    ap.add_argument("--gt", type=Path, help="folder of HR images: print PSNR/SSIM (Y, crop = scale) per image and mean")
    ap.add_argument("--layout", help="the checkpoint's layout when its tensor names are ambiguous "
                                     "(see pipeline/models/checkpoints.py)")
    ap.add_argument("--tile", type=int, default=TILE, help="LR tile side for large images (0: never tile)")
    ap.add_argument("--tile-above", type=int, default=TILE_ABOVE,
                    help="tile images with more LR pixels than this (0: always tile)")
    ap.add_argument("--budget", type=float, default=1.0, help="ClassSR: FLOPs budget as a fraction of branch-O")
    ap.add_argument("--batch", type=int, default=32, help="patches per model call (CPU: small, GPU: large)")
    ap.add_argument("--self-ensemble", action="store_true", help="x8 flip/rotate self-ensemble ('+' in the tables)")
    ap.add_argument("--device", default=default_device())
    ap.add_argument("--half", action="store_true", help="fp16 weights and activations (CUDA only)")
    args = ap.parse_args(argv)
    if args.half and not str(args.device).startswith("cuda"):
        ap.error(f"--half needs a CUDA device (got --device {args.device})")
    try:
        files = input_files(args.input)
        if args.gt is not None and not args.gt.is_dir():
            raise FileNotFoundError(f"--gt {args.gt}: no such folder")
        model = models.load(args.model, args.device, layout=args.layout).eval()
        model = model.half() if args.half else model
        scale = model.config["scale"]
        gts = [ground_truth(args.gt, f, scale) for f in files] if args.gt else []  # all found before any work
    except (FileNotFoundError, ImageError, ValueError) as e:
        sys.exit(f"error: {e}")
    upscale_files(model, files, Path(args.output), gts, args)


def upscale_files(model, files: list[Path], out: Path, gts: list[Path], args):
    """The command's work: each file super-resolved and written (into the folder ``out`` when there are
    several), scored against its ground truth when ``gts`` are given."""
    from tqdm import tqdm

    from pipeline.data.images import ImageError, read_image, write_png
    from pipeline.metrics import score

    many = len(files) > 1 or Path(args.input).is_dir() or out.is_dir()
    if many:
        out.mkdir(parents=True, exist_ok=True)
    scale, scores, t0 = model.config["scale"], [], time.perf_counter()
    bar = tqdm(files, unit="image", desc=f"{model.config['arch']} x{scale}", disable=len(files) == 1)
    for i, f in enumerate(bar):
        try:
            img = read_image(f)
        except ImageError as e:
            sys.exit(f"error: {e}")
        sr = upscale(model, img, tile=args.tile, tile_above=args.tile_above, budget=args.budget, batch=args.batch,
                     self_ensemble=args.self_ensemble).image
        target = out / f"{f.stem}.png" if many else out
        write_png(target, sr)
        if gts:
            hr = read_image(gts[i])[:sr.shape[0], :sr.shape[1]]  # a benchmark HR not mod-cropped: as BasicSR
            scores.append(score(sr, hr, scale))
            tqdm.write(f"{f.stem}: PSNR {scores[-1]['psnr']:.4f} dB, SSIM {scores[-1]['ssim']:.4f}")
        elif not many:
            print(f"{f} {img.shape[1]}x{img.shape[0]} -> {target} {sr.shape[1]}x{sr.shape[0]} "
                  f"({model.config['arch']}, {time.perf_counter() - t0:.2f} s)")
    if scores:
        print(f"mean over {len(scores)} images: PSNR {np.mean([s['psnr'] for s in scores]):.4f} dB, "
              f"SSIM {np.mean([s['ssim'] for s in scores]):.4f} (Y channel, crop {scale})")
    if many:
        print(f"{len(files)} images -> {out}/ in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
