"""Stage prepare_sr: HR sub-images (BasicSR crop/step) with aligned MATLAB-bicubic LR, as Arrow shards."""
from pipeline.data.shards import ExtractSpec, prepare_shards
from pipeline.params import load_section
from pipeline.stage import run


def main():
    cfg = load_section("prepare_sr")
    spec = ExtractSpec(cfg.scales, cfg.crop_size, cfg.step, cfg.thresh_size)
    prepare_shards("prepare_sr", cfg, spec, "data/sr", "metrics/prepare_sr.json")


if __name__ == "__main__":
    run(main)
