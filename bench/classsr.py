"""ClassSR wall time on a 2K-size image (LR 510x339 -> 2040x1356): ClassSR / branch-O with the same
tiling, ClassSR / branch-O on the whole image, and batched-per-class vs one patch at a time.

    python bench/classsr.py [--model models/classsr]   # default: the trained pipeline model if present,
                                                       # else an untrained ClassSR-FSRCNN (16/36/56)
    python bench/classsr.py --model ClassSR_RCAN.pth --device cuda --batch 256   # a released model, on a GPU
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import best_of as timed_best_of  # noqa: E402
from pipeline import models  # noqa: E402
from pipeline.metrics import uint8_to_tensor  # noqa: E402
from pipeline.tiling import run_tiled, split  # noqa: E402
from pipeline.upscale import upscale  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/classsr")
    ap.add_argument("--batch", type=int, default=32, help="patches per branch call (finetune_classsr.infer_batch)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (timings synchronised)")
    args = ap.parse_args()
    if Path(args.model).exists():  # a saved folder or a published checkpoint (.pth)
        model, what = models.load(args.model).eval(), args.model
    else:
        model = models.build("classsr", 4, branch_arch="fsrcnn", branches=[{"d": 16}, {"d": 36}, {"d": 56}]).eval()
        what = "untrained ClassSR-FSRCNN (run the pipeline for the trained model)"
    lr_img = np.asarray(Image.fromarray(skimage.data.retina()).resize((510, 339), Image.BICUBIC))
    model = model.to(args.device)
    lr = uint8_to_tensor(lr_img)[0].to(args.device)
    hard = model.branches[-1]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def best_of(fn, repeats=3):  # the wall time of fn's work, the GPU's included
        return timed_best_of(lambda: (fn(), sync()), repeats)

    with torch.no_grad():
        out = upscale(model, lr_img, batch=args.batch)
        t_classsr = best_of(lambda: upscale(model, lr_img, batch=args.batch))
        t_tiled_o = best_of(lambda: run_tiled(hard, lr, 4, 32, 28, batch=args.batch))
        t_whole_o = best_of(lambda: hard(lr[None]))
        tiles = split(lr, 32, 28)
        classes = out.classes

        def one_at_a_time():
            for p, c in zip(tiles.patches, classes):
                model.branches[c](p[None])

        t_single = best_of(one_at_a_time, repeats=1)
    fractions = np.bincount(classes, minlength=3) / len(classes)
    print(f"model: {what}; LR 510x339, {len(classes)} patches of 32 (stride 28), classes simple/medium/hard "
          f"{fractions.round(2).tolist()}, {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else
             f", {torch.get_num_threads()} threads") + f", batch {args.batch}")
    print(f"ClassSR {t_classsr:.3f} s | branch-O tiled {t_tiled_o:.3f} s | branch-O whole image {t_whole_o:.3f} s")
    print(f"ratio ClassSR / branch-O same tiling: {t_classsr / t_tiled_o:.2f} (target <= 0.65 once trained)")
    print(f"ratio ClassSR / branch-O whole image: {t_classsr / t_whole_o:.2f}")
    print(f"batched per class {t_classsr:.3f} s vs one patch at a time {t_single:.3f} s: {t_single / t_classsr:.1f}x")


if __name__ == "__main__":
    main()
