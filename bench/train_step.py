"""Training throughput, side by side in one run, on the same model (MSRResNet nf 32 x 6) and data:
- the loop with the real loader and tracking vs the loop on pre-made tensors without tracking
  (what loading and MLflow cost; target <= 1.10);
- the loop against a plain PyTorch loop (Adam + L1 over a DataLoader of the same batches, no
  Accelerate, no EMA / checkpoint / tracking machinery; target: the loop >= 0.95 of its throughput).

    python bench/train_step.py   # needs prepare_sr's data/sr; on the GPU when there is one
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import models  # noqa: E402
from pipeline.data.loader import PatchBatches  # noqa: E402
from pipeline.data.shards import PairShards  # noqa: E402
from pipeline.params import PretrainTeacher, TrainConfig  # noqa: E402
from pipeline.objective import Objective  # noqa: E402
from pipeline.train import train  # noqa: E402


class Clock(Objective):
    """L1, plus the time at which each step's loss is computed (steady state excludes start-up)."""

    def __init__(self):
        self.stamps = []

    def loss(self, model, lr, hr, step):
        self.stamps.append(time.perf_counter())
        return super().loss(model, lr, hr, step)


class Premade(PatchBatches):
    """The same first batch every step: no decoding, no cropping."""

    def __getitem__(self, step):
        if not hasattr(self, "_batch"):
            self._batch = super().__getitem__(0)
        return self._batch


def timed(data_cls, tracking: bool, steps: int, ckpt: str) -> tuple[float, float]:
    os.environ["PIPELINE_TRACKING"] = "1" if tracking else "0"
    cfg = PretrainTeacher()
    cfg.model.kwargs = {"nf": 32, "nb": 6}
    cfg.train = TrainConfig(max_steps=steps, batch_size=16, lr_patch=24, lr=1e-3, val_every=10**9,
                            ckpt_every=10**9, log_every=50, num_workers=1)
    torch.manual_seed(0)
    model = models.build("msrresnet", 4, **cfg.model.kwargs)
    shards = PairShards("data/sr", 4)
    data = data_cls(shards, 16, 24, seed=0)
    clock = Clock()
    t0 = time.perf_counter()
    train(model, cfg.train, data, stage="bench_train_step", params=cfg, ckpt_dir=ckpt, objective=clock)
    total = (time.perf_counter() - t0) / steps
    steady = (clock.stamps[-1] - clock.stamps[10]) / (len(clock.stamps) - 11)
    return steady, total


def plain_loop(steps: int) -> float:
    """Steady-state seconds per step of a plain PyTorch loop on the same model, data and optimizer."""
    from pipeline.data.loader import make_loader

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = models.build("msrresnet", 4, nf=32, nb=6).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    stamps = []
    for lr, hr in make_loader(PatchBatches(PairShards("data/sr", 4), 16, 24, seed=0), 0, steps, num_workers=1):
        lr, hr = lr.to(device, non_blocking=True), hr.to(device, non_blocking=True)
        loss = torch.nn.functional.l1_loss(model(lr), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        stamps.append(time.perf_counter())
    if device == "cuda":
        torch.cuda.synchronize()
    return (stamps[-1] - stamps[10]) / (len(stamps) - 11)


def main(steps: int = 150):
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/bench.db")
        base, base_total = timed(Premade, False, steps, f"{tmp}/a")
        real, real_total = timed(PatchBatches, True, steps, f"{tmp}/b")
        plain = plain_loop(steps)
    print(f"steady state per step: pre-made tensors, no tracking {base * 1e3:.1f} ms | "
          f"real loader + MLflow {real * 1e3:.1f} ms | ratio {real / base:.3f} (target <= 1.10)")
    print(f"including start-up (MLflow import and store, loader workers) over {steps} steps: "
          f"{base_total * 1e3:.1f} vs {real_total * 1e3:.1f} ms per step | ratio {real_total / base_total:.3f}")
    print(f"throughput, the loop (real loader + MLflow) / a plain PyTorch loop: {plain / real:.3f} "
          f"({real * 1e3:.1f} vs {plain * 1e3:.1f} ms per step; target >= 0.95)")


if __name__ == "__main__":
    main()
