"""CSD's training step against its control and the L1 student, side by side in one run (the issue's
target: CSD's step <= 3x the L1 student's), and what the teacher embedding's pooling and the default's
32x32 embedding window (``distill_csd.embed_crop``) save.

    python bench/csd_step.py [--teacher models/teacher] [--steps 15]

Each row is the median over ``--rounds`` rounds (the rows interleaved, so the machine's drift hits them
alike) of the mean of ``--steps`` optimizer steps on one fixed random batch at the default's shapes:
batch 8, 8 negatives, CSD and its control on HR 64 patches, the L1 student on its HR 96 (and on HR 64,
the same pixels as CSD). Without models/teacher: an untrained MSRResNet nf 32 x 6 (the default's).
"""
import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import models  # noqa: E402
from pipeline.methods.csd import ContrastiveLoss, CSDObjective, FeatureStages, teacher_embedding  # noqa: E402
from pipeline.models.slim import slim  # noqa: E402
from pipeline.objective import Objective  # noqa: E402
from pipeline.stage import keep_freed_memory  # noqa: E402

WIDTH, BATCH, NEG_NUM, WEIGHTS, RGB_RANGE = 0.25, 8, 8, [0.25, 0.5, 1.0], 255.0


def unpooled(embedding: FeatureStages) -> FeatureStages:
    """The same stages without the 2x2 pools: every block at full HR size (the embedding before)."""
    return FeatureStages([s[-1] if isinstance(s, nn.Sequential) and isinstance(s[0], nn.AvgPool2d) else s
                          for s in embedding.stages])


def seconds_per_step(objective, model, opt, lr, hr, steps: int) -> float:
    model.train()
    t0 = time.perf_counter()
    for i in range(steps):
        loss, _ = objective.loss(model, lr, hr, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="models/teacher")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    keep_freed_memory()  # as every stage does
    if Path(args.teacher).is_dir():
        teacher, what = models.load(args.teacher), args.teacher
    else:
        torch.manual_seed(0)
        teacher, what = models.build("msrresnet", 4, nf=32, nb=6), "untrained MSRResNet nf 32 x 6"
    torch.manual_seed(0)
    lr64, hr64 = torch.rand(BATCH, 3, 16, 16), torch.rand(BATCH, 3, 64, 64)
    lr96, hr96 = torch.rand(BATCH, 3, 24, 24), torch.rand(BATCH, 3, 96, 96)
    pooled = teacher_embedding(teacher, len(WEIGHTS))

    def csd(embedding, contra_lambda, embed_crop=0):
        return CSDObjective(WIDTH, ContrastiveLoss(embedding, WEIGHTS), 4, NEG_NUM, 1.0, contra_lambda, RGB_RANGE,
                            embed_crop)

    rows = {
        "CSD (pooled, 32x32 window), HR 64": (csd(pooled, 200, 32), copy.deepcopy(teacher), lr64, hr64),
        "CSD (pooled embedding), HR 64": (csd(pooled, 200), copy.deepcopy(teacher), lr64, hr64),
        "CSD (unpooled embedding), HR 64": (csd(unpooled(pooled), 200), copy.deepcopy(teacher), lr64, hr64),
        "control (contra_lambda 0), HR 64": (csd(pooled, 0), copy.deepcopy(teacher), lr64, hr64),
        "L1 student, HR 96 (its default)": (Objective(RGB_RANGE), slim(teacher, WIDTH), lr96, hr96),
        "L1 student, HR 64": (Objective(RGB_RANGE), slim(teacher, WIDTH), lr64, hr64),
    }
    print(f"{what}; width {WIDTH}, {NEG_NUM} negatives, batch {BATCH}, {torch.get_num_threads()} threads")
    rows = {name: (objective, model, torch.optim.Adam(model.parameters(), 1e-4), lr, hr)
            for name, (objective, model, lr, hr) in rows.items()}
    for row in rows.values():
        seconds_per_step(*row, 2)  # warm-up
    rounds = [{name: seconds_per_step(*row, args.steps) for name, row in rows.items()} for _ in range(args.rounds)]
    times = {name: statistics.median(r[name] for r in rounds) for name in rows}
    base = times["L1 student, HR 96 (its default)"]
    for name, t in times.items():
        print(f"{name:36s} {t * 1e3:7.1f} ms   {t / base:5.2f}x the L1 student's step (target for CSD: <= 3)")


if __name__ == "__main__":
    main()
