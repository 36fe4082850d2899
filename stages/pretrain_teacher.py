"""Stage pretrain_teacher: train the teacher SR network with L1 on prepare_sr's shards."""
from pipeline import models
from pipeline.params import load_section
from pipeline.recipes import train_l1
from pipeline.stage import run


def main():
    cfg = load_section("pretrain_teacher")
    model = models.init_model(cfg.model.arch, cfg.model.scale, cfg.model.kwargs, cfg.train.init_from)
    train_l1("pretrain_teacher", cfg, model, cfg.train, "models/teacher", "metrics/pretrain_teacher.json")


if __name__ == "__main__":
    run(main)
