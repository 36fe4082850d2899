"""Recipes shared by several stages.

- :func:`train_l1`: the plain supervised recipe of the L1-trained stages (teacher, RFDN baseline, L1
  student): L1 on prepare_sr's shards, validation on the held-out photos, the model saved, its quality
  and cost written as DVC metrics.
- :func:`ghost_fine_tune`: GhostSR on any model (the ghost stage: the teacher; the composition stage:
  a ClassSR branch): k-means conversion, fine-tune with annealed Gumbel shifts, fixed-shift export.
"""
from __future__ import annotations

import copy
from pathlib import Path

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import bicubic_upscale, evaluate_pairs, test_pairs, validator
from pipeline.ghost import convert, exported_config, finalize, ghost_modules
from pipeline.metrics import count_macs, count_params, latency
from pipeline.stage import write_json
from pipeline.train import Objective, train

DATA, VAL = "data/sr", "data/test/sample"


def train_l1(stage: str, model, scale: int, cfg, train_cfg, out: str, metrics_path: str, extra: dict | None = None):
    """Train ``model`` (built by the caller) under ``train_cfg``; ``cfg`` is the stage's params section
    (logged and fingerprinted for resume); ``extra`` adds fixed entries to the metrics."""
    pairs = test_pairs(VAL, scale)
    bicubic = evaluate_pairs(lambda lr: bicubic_upscale(lr, scale), pairs, scale)

    def finish(net, val, tracker):
        models.save(net, out)
        metrics = {"psnr": val["psnr"], "ssim": val["ssim"], "bicubic_psnr": bicubic["psnr"],
                   "gain_over_bicubic_db": val["psnr"] - bicubic["psnr"], "params": count_params(net),
                   "flops_per_patch": 2 * count_macs(net, (1, 3, 32, 32)),
                   "cpu_latency_s": latency(net, (1, 3, 128, 128)), **(extra or {})}
        write_json(metrics_path, metrics)
        tracker.log_metrics(metrics)
        tracker.log_artifact(Path(out) / "config.json", "model")

    shards = PairShards(DATA, scale)
    batches = PatchBatches(shards, train_cfg.batch_size, train_cfg.lr_patch, train_cfg.seed)
    return train(model, train_cfg, batches, stage=stage, params=cfg, ckpt_dir=f"checkpoints/{stage}",
                 validate=validator(pairs, scale), data_info=shards.info, finish=finish)


class AnnealedGhost(Objective):
    """L1, with the Gumbel temperature decayed exponentially from tau_start to tau_end."""

    def __init__(self, cfg):
        self.cfg = cfg

    def before_step(self, accelerator, model, lr, hr, step):
        frac = step / max(self.cfg.train.max_steps - 1, 1)
        tau = self.cfg.tau_start * (self.cfg.tau_end / self.cfg.tau_start) ** frac
        for m in ghost_modules(model):
            m.tau = tau
        return {"tau": tau}


def ghost_fine_tune(stage: str, source, cfg, batches, data_info: dict, validate, finish):
    """Convert ``source`` (a saved model, with its config) by ``cfg`` (a GhostMethod section), fine-tune
    it on ``batches``, then call ``finish(exported, tracker)`` with the finalized model, whose config
    rebuilds it."""
    model = convert(copy.deepcopy(source), cfg.ratio, d=cfg.d, mode=cfg.mode, per_channel=cfg.per_channel,
                    seed=cfg.kmeans_seed)
    model.config = {"arch": "ghost", "scale": source.config["scale"], "kwargs": {}}

    def done(net, val, tracker):
        net.ghost_plan = model.ghost_plan
        config = exported_config(net, source.config, cfg.ratio, cfg.d, cfg.mode, cfg.per_channel)
        net = finalize(net)
        net.config = config
        finish(net, tracker)

    return train(model, cfg.train, batches, stage=stage, params=cfg, ckpt_dir=f"checkpoints/{stage}",
                 objective=AnnealedGhost(cfg), validate=validate, data_info=data_info, finish=done)
