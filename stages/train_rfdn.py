"""Stage train_rfdn: RFDN (E-RFDN with ``attention: esa``), the hand-designed lightweight baseline that
the compressed models must beat, trained with L1 by the same loop and data as the teacher.
``train.init_from: official:erfdn:<path>`` fine-tunes the official AIM 2020 weights instead."""
from pipeline import models
from pipeline.params import load_section
from pipeline.recipes import train_l1
from pipeline.stage import run


def main():
    cfg = load_section("train_rfdn")
    model = models.init_model(cfg.model.arch, cfg.model.scale, cfg.model.kwargs, cfg.train.init_from)
    train_l1("train_rfdn", cfg, model, cfg.train, "models/rfdn", "metrics/train_rfdn.json")


if __name__ == "__main__":
    run(main)
