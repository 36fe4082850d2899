"""Step time with the real loader and tracking vs pre-made tensors and no tracking (target <= 1.10).

    python bench/train_step.py   # needs prepare_sr's data/sr and prepare_test's data/test/sample
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


def main(steps: int = 150):
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/bench.db")
        base, base_total = timed(Premade, False, steps, f"{tmp}/a")
        real, real_total = timed(PatchBatches, True, steps, f"{tmp}/b")
    print(f"steady state per step: pre-made tensors, no tracking {base * 1e3:.1f} ms | "
          f"real loader + MLflow {real * 1e3:.1f} ms | ratio {real / base:.3f} (target <= 1.10)")
    print(f"including start-up (MLflow import and store, loader workers) over {steps} steps: "
          f"{base_total * 1e3:.1f} vs {real_total * 1e3:.1f} ms per step | ratio {real_total / base_total:.3f}")


if __name__ == "__main__":
    main()
