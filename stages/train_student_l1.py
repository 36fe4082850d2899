"""Stage train_student_l1: the papers' baseline for the distilled students: the teacher's architecture
at the student's width (CSD's width rule), trained from scratch with L1 only."""
from pipeline import models
from pipeline.models.slim import student_kwargs
from pipeline.params import load_section
from pipeline.recipes import train_l1
from pipeline.stage import run


def main():
    cfg = load_section("train_student_l1")
    teacher = models.read_config(cfg.teacher)
    model = models.build(teacher["arch"], teacher["scale"], **student_kwargs(teacher, cfg.width))
    train_l1("train_student_l1", cfg, model, cfg.train, "models/student_l1", "metrics/train_student_l1.json",
             extra={"width": cfg.width})


if __name__ == "__main__":
    run(main)
