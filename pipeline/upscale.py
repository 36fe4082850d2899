"""Super-resolve an image with any saved model (ClassSR included).

    python -m pipeline.upscale models/classsr photo.png photo_x4.png [--budget 0.65]
    python -m pipeline.upscale models/teacher photo.png photo_x4.png [--tile 128]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from pipeline import models
from pipeline.data.images import ImageError, read_image, write_png
from pipeline.metrics import tensor_to_uint8, uint8_to_tensor


def upscale(model, img, tile: int = 0, overlap: int = 8, budget: float = 1.0, patch: int = 32, stride: int = 28,
            batch: int = 32):
    """uint8 HWC in, uint8 HWC out. ClassSR runs patch-wise; other models whole-image or tiled."""
    from pipeline.classsr import upscale_uint8
    from pipeline.tiling import run_tiled

    scale = model.config["scale"]
    if model.config["arch"] == "classsr":
        return upscale_uint8(model, img, scale, patch, stride, budget, batch)[0]
    device = next(model.parameters()).device
    lr = uint8_to_tensor(img)[0].to(device)
    with torch.no_grad():
        if tile:
            return tensor_to_uint8(run_tiled(lambda x: model(x), lr, scale, tile, tile - overlap, batch=batch))
        return tensor_to_uint8(model(lr[None])[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--tile", type=int, default=0, help="LR tile side for large images (0: whole image)")
    ap.add_argument("--budget", type=float, default=1.0, help="ClassSR: FLOPs budget as a fraction of branch-O")
    ap.add_argument("--batch", type=int, default=32, help="patches per model call (CPU: small, GPU: large)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    try:
        model = models.load(args.model_dir, args.device).eval()
        img = read_image(args.input)
    except (FileNotFoundError, ImageError) as e:
        sys.exit(f"error: {e}")
    t0 = time.perf_counter()
    out = upscale(model, img, args.tile, budget=args.budget, batch=args.batch)
    write_png(args.output, out)
    print(f"{args.input} {img.shape[1]}x{img.shape[0]} -> {args.output} {out.shape[1]}x{out.shape[0]} "
          f"({model.config['arch']}, {time.perf_counter() - t0:.2f} s)")


if __name__ == "__main__":
    main()
