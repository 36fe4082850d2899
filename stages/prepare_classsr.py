"""Stage prepare_classsr: ClassSR's training set (HR rescaled by each of ``rescales``, 128/64 crops,
threshold 48, LR x1/4), as Arrow shards."""
from pipeline.data.shards import ExtractSpec, prepare_shards
from pipeline.params import load_section
from pipeline.stage import run


def main():
    cfg = load_section("prepare_classsr")
    spec = ExtractSpec([cfg.scale], cfg.crop_size, cfg.step, cfg.thresh_size, rescales=cfg.rescales)
    prepare_shards("prepare_classsr", cfg, spec, "data/classsr", "metrics/prepare_classsr.json")


if __name__ == "__main__":
    run(main)
