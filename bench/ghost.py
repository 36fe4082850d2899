"""Ghost / source CPU latency and params ratio (target latency ratio <= 0.65 at ratio 0.5).

    python bench/ghost.py [--model models/ghost]   # default: the pipeline's Ghost model if present,
                                                   # else a fresh conversion of EDSR-baseline (16x64)
"""
import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import models  # noqa: E402
from pipeline.ghost import convert, finalize  # noqa: E402
from pipeline.metrics import count_macs, count_params, latency  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/ghost")
    ap.add_argument("--lr_side", type=int, default=128)
    args = ap.parse_args()
    if Path(args.model).is_dir():
        ghost = models.load(args.model).eval()
        src_cfg = ghost.config["kwargs"]["source"]
        source = models.build(src_cfg["arch"], ghost.config["scale"], **src_cfg["kwargs"]).eval()
        what = args.model
    else:
        source = models.build("edsr", 4, n_resblocks=16, n_feats=64).eval()
        ghost = finalize(convert(copy.deepcopy(source), 0.5)).eval()
        what = "EDSR-baseline 16x64 x4, converted at ratio 0.5 (untrained)"
    shape = (1, 3, args.lr_side, args.lr_side)
    with torch.no_grad():
        t_src, t_ghost = latency(source, shape, repeats=7), latency(ghost, shape, repeats=7)
    print(f"{what}; LR {args.lr_side}x{args.lr_side}, {torch.get_num_threads()} threads")
    print(f"latency source {t_src * 1e3:.1f} ms | ghost {t_ghost * 1e3:.1f} ms | ratio {t_ghost / t_src:.2f} (target <= 0.65)")
    print(f"params source {count_params(source):,} | ghost {count_params(ghost):,} | ratio "
          f"{count_params(ghost) / count_params(source):.2f}")
    print(f"MACs ratio {count_macs(ghost, shape) / count_macs(source, shape):.2f}")


if __name__ == "__main__":
    main()
