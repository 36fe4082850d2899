"""Stage train_student_l1: the papers' baseline for the distilled students: the teacher's architecture
at the student's width, trained from scratch with L1 only."""
import math

from pipeline import models
from pipeline.models.slim import WIDTH_KWARG
from pipeline.params import TrainStudentL1, load_section
from pipeline.recipes import train_l1
from pipeline.stage import run


def main():
    cfg = load_section("train_student_l1", TrainStudentL1)
    tcfg = models.read_config(cfg.teacher)
    key = WIDTH_KWARG[tcfg["arch"]]
    kwargs = {**tcfg["kwargs"], key: math.floor(tcfg["kwargs"][key] * cfg.width + 1e-9)}
    model = models.build(tcfg["arch"], tcfg["scale"], **kwargs)
    train_l1("train_student_l1", model, tcfg["scale"], cfg, cfg.train, "models/student_l1",
             "metrics/train_student_l1.json", extra={"width": cfg.width})


if __name__ == "__main__":
    run(main)
