"""CPU latency of the slim student vs its teacher (target <= 0.25 at width 0.25).

    python bench/distill.py [--student models/csd_student --teacher models/teacher]
    (default when those are missing: EDSR 32x256 x4 and its 0.25 slim, untrained)
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import models  # noqa: E402
from pipeline.metrics import count_params, latency  # noqa: E402
from pipeline.models.slim import slim  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="models/csd_student")
    ap.add_argument("--teacher", default="models/teacher")
    ap.add_argument("--lr_side", type=int, default=96)
    args = ap.parse_args()
    if Path(args.student).is_dir() and Path(args.teacher).is_dir():
        student, teacher, what = models.load(args.student), models.load(args.teacher), f"{args.student} vs {args.teacher}"
    else:
        teacher = models.build("edsr", 4, n_resblocks=32, n_feats=256, res_scale=0.1)
        student, what = slim(teacher, 0.25), "EDSR 32x256 x4 vs its 0.25 slim (untrained)"
    shape = (1, 3, args.lr_side, args.lr_side)
    t_t, t_s = latency(teacher.eval(), shape, repeats=5), latency(student.eval(), shape, repeats=5)
    print(f"{what}; LR {args.lr_side}x{args.lr_side}, {torch.get_num_threads()} threads")
    print(f"latency teacher {t_t * 1e3:.1f} ms | student {t_s * 1e3:.1f} ms | ratio {t_s / t_t:.3f} (target <= 0.25 at w 0.25)")
    print(f"params teacher {count_params(teacher):,} | student {count_params(student):,}")


if __name__ == "__main__":
    main()
