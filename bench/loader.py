"""Loader throughput (patches/s) next to what FSRCNN-56 consumes in training on this machine.

    python bench/loader.py [--shards data/sr]   # default: prepare_sr's output (run `dvc repro prepare_sr`)
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.data.loader import PatchBatches, make_loader  # noqa: E402
from pipeline.data.shards import PairShards  # noqa: E402
from pipeline.models import build  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="data/sr")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr_patch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    shards = PairShards(args.shards, 4)
    batches = PatchBatches(shards, args.batch, args.lr_patch, seed=0)
    for workers in (0, 1, 2):
        loader = make_loader(batches, 0, args.steps, workers)
        t0 = time.perf_counter()
        for _ in loader:
            pass
        dt = time.perf_counter() - t0
        print(f"loader, {workers} workers: {args.steps * args.batch / dt:8.0f} patches/s")

    model = build("fsrcnn", 4, d=56)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    lr, hr = batches[0]
    for i in range(args.steps // 3 + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = torch.nn.functional.l1_loss(model(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    print(f"FSRCNN-56 training consumes  {args.steps // 3 * args.batch / dt:8.0f} patches/s "
          f"(batch {args.batch}, LR patch {args.lr_patch}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
