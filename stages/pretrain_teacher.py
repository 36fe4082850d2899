"""Stage pretrain_teacher: train the teacher SR network with L1 on prepare_sr's shards."""
from pathlib import Path

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import bicubic_upscale, evaluate_pairs, super_resolve, test_pairs
from pipeline.metrics import count_params
from pipeline.params import PretrainTeacher, load_section
from pipeline.stage import run, write_json
from pipeline.train import train

DATA, VAL, OUT = "data/sr", "data/test/sample", "models/teacher"
CKPT, METRICS = "checkpoints/pretrain_teacher", "metrics/pretrain_teacher.json"


def main():
    cfg = load_section("pretrain_teacher", PretrainTeacher)
    scale = cfg.model.scale
    shards = PairShards(DATA, scale)
    pairs = test_pairs(VAL, scale)
    model = models.init_model(cfg.model.arch, scale, cfg.model.kwargs, cfg.train.init_from)
    bicubic = evaluate_pairs(lambda lr: bicubic_upscale(lr, scale), pairs, scale)

    def validate(net):
        device = next(net.parameters()).device
        return evaluate_pairs(lambda lr: super_resolve(net, lr, device), pairs, scale)

    def finish(net, val, tracker):
        models.save(net, OUT)
        metrics = {"psnr": val["psnr"], "ssim": val["ssim"], "bicubic_psnr": bicubic["psnr"],
                   "gain_over_bicubic_db": val["psnr"] - bicubic["psnr"], "params": count_params(net)}
        write_json(METRICS, metrics)
        tracker.log_metrics(metrics)
        tracker.log_artifact(Path(OUT) / "config.json", "model")

    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    train(model, cfg.train, batches, stage="pretrain_teacher", params=cfg, ckpt_dir=CKPT,
          validate=validate, data_info=shards.info, finish=finish)


if __name__ == "__main__":
    run(main)
