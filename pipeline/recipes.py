"""The supervised L1 recipe of the teacher, the RFDN baseline and the L1 student: data -> train ->
score -> deliver, in the order a stage reads."""
from __future__ import annotations

from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.deliver import deliver
from pipeline.evaluate import bicubic_upscale, evaluate_pairs, test_pairs, Validator
from pipeline.train import official_initial_biases, train
from pipeline.cost import cost


def train_l1(stage: str, params, model, train_cfg, out: str, metrics_path: str, extra: dict | None = None):
    """Train ``model`` with L1 on prepare_sr's shards under ``train_cfg``, validated on its ``val_set``;
    save it to ``out`` with its scores, gain over bicubic and cost (plus ``extra``) as metrics.
    ``params`` is the stage's section (logged, and fingerprinted for resume)."""
    scale = model.config["scale"]
    if not train_cfg.init_from:  # from scratch: biases at the official init's scale (pipeline.train.adam)
        official_initial_biases(model, train_cfg)
    shards, pairs = PairShards("data/sr", scale), test_pairs(train_cfg.val_set, scale)
    batches = PatchBatches(shards, train_cfg.batch_size, train_cfg.lr_patch, train_cfg.seed)
    result = train(model, train_cfg, batches, stage=stage, params=params, ckpt_dir=f"checkpoints/{stage}",
                   data_info=shards.info, validate=Validator(pairs, scale), leave_run_open=True)
    if result.is_main:
        bicubic = evaluate_pairs(lambda lr: bicubic_upscale(lr, scale), pairs, scale)["psnr"]
        metrics = {**result.metrics, "bicubic_psnr": bicubic, "gain_over_bicubic_db": result.metrics["psnr"] - bicubic,
                   **cost(result.model, latency=False), **(extra or {})}  # evaluate times it
        deliver(stage, params, result.model, out, metrics_path, metrics, result.run_id)
    return result
