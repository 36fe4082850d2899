"""Ghost / source CPU latency and params ratio (target latency ratio <= 0.65 at ratio 0.5).

    python bench/ghost.py [--model models/ghost] [--lr_side 64]

Measures, side by side in one run: GhostSR's own setting (EDSR 32x256 x2, converted at ratio 0.5),
EDSR-baseline 16x64 x2, and the pipeline's Ghost model against its source when models/ghost exists.
Only the residual-body convs become Ghost modules (as GhostSR), so the MACs ratio -- printed beside
the latency -- bounds what any implementation can reach: an x4 upsampler or a small body (the embedded
teacher) keeps most of the cost.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import models  # noqa: E402
from pipeline.methods.ghost import convert  # noqa: E402
from pipeline.models.ghost import reparameterize  # noqa: E402
from pipeline.metrics import count_macs, count_params, latency  # noqa: E402


def compare(what, source, ghost, shape):
    source, ghost = source.eval(), ghost.eval()
    with torch.no_grad():
        t_src, t_ghost = latency(source, shape, repeats=5), latency(ghost, shape, repeats=5)
    macs = count_macs(ghost, shape) / count_macs(source, shape)
    print(f"{what}: latency {t_src * 1e3:.0f} -> {t_ghost * 1e3:.0f} ms, ratio {t_ghost / t_src:.2f} "
          f"(MACs ratio {macs:.2f}); params {count_params(source):,} -> {count_params(ghost):,} "
          f"(ratio {count_params(ghost) / count_params(source):.2f})")


def converted(source):
    return reparameterize(convert(source, 0.5))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/ghost")
    ap.add_argument("--lr_side", type=int, default=64)
    args = ap.parse_args()
    shape = (1, 3, args.lr_side, args.lr_side)
    print(f"CPU, {torch.get_num_threads()} threads, LR {args.lr_side}x{args.lr_side}, ratio 0.5; target latency ratio <= 0.65")
    edsr = models.build("edsr", 2, n_resblocks=32, n_feats=256)
    compare("EDSR 32x256 x2 (GhostSR's setting)", edsr, converted(edsr), shape)
    baseline = models.build("edsr", 2, n_resblocks=16, n_feats=64)
    compare("EDSR-baseline 16x64 x2", baseline, converted(baseline), shape)
    if Path(args.model).is_dir():
        ghost = models.load(args.model)
        src_cfg = ghost.config["kwargs"]["source"]
        source = models.build(src_cfg["arch"], ghost.config["scale"], **src_cfg["kwargs"])
        compare(f"{args.model} vs its source ({src_cfg['arch']} {src_cfg['kwargs']} x{ghost.config['scale']})",
                source, ghost, shape)


if __name__ == "__main__":
    main()
