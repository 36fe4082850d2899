"""Stage train_student_l1: the papers' baseline for the distilled students: the teacher's architecture
at the student's width, trained from scratch with L1 only."""
import math

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import evaluate_pairs, super_resolve, test_pairs
from pipeline.metrics import count_macs, count_params, latency
from pipeline.models.slim import WIDTH_KWARG
from pipeline.params import TrainStudentL1, load_section
from pipeline.stage import run, write_json
from pipeline.train import train

DATA, VAL, OUT, METRICS = "data/sr", "data/test/sample", "models/student_l1", "metrics/train_student_l1.json"


def main():
    cfg = load_section("train_student_l1", TrainStudentL1)
    tcfg = models.read_config(cfg.teacher)
    key = WIDTH_KWARG[tcfg["arch"]]
    kwargs = {**tcfg["kwargs"], key: math.floor(tcfg["kwargs"][key] * cfg.width + 1e-9)}
    scale = tcfg["scale"]
    model = models.build(tcfg["arch"], scale, **kwargs)
    pairs = test_pairs(VAL, scale)

    def validate(net):
        return evaluate_pairs(lambda lr: super_resolve(net, lr, next(net.parameters()).device), pairs, scale)

    def finish(net, val, tracker):
        models.save(net, OUT)
        metrics = {"psnr": val["psnr"], "ssim": val["ssim"], "width": cfg.width, "params": count_params(net),
                   "flops_per_patch": 2 * count_macs(net, (1, 3, 32, 32)), "cpu_latency_s": latency(net, (1, 3, 128, 128))}
        write_json(METRICS, metrics)
        tracker.log_metrics(metrics)

    shards = PairShards(DATA, scale)
    batches = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    train(model, cfg.train, batches, stage="train_student_l1", params=cfg, ckpt_dir="checkpoints/train_student_l1",
          validate=validate, data_info=shards.info, finish=finish)


if __name__ == "__main__":
    run(main)
