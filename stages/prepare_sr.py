"""Stage prepare_sr: HR sub-images (BasicSR crop/step) with aligned MATLAB-bicubic LR, as Arrow shards."""
from pipeline.data.shards import ExtractSpec, prepare_shards
from pipeline.files import write_json
from pipeline.params import load_section
from pipeline.stage import run
from pipeline.tracking import stage_run


def main():
    cfg = load_section("prepare_sr")
    spec = ExtractSpec(cfg.scales, cfg.crop_size, cfg.step, cfg.thresh_size)
    with stage_run("prepare_sr", cfg) as tracker:
        metrics = prepare_shards(cfg, spec, "data/sr")
        write_json("metrics/prepare_sr.json", metrics)
        tracker.log_metrics(metrics)


if __name__ == "__main__":
    run(main)
