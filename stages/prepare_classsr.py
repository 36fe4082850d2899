"""Stage prepare_classsr: ClassSR's training set (HR rescaled by each of ``rescales``, 128/64 crops,
threshold 48, LR x1/4), as Arrow shards."""
from pipeline.data.shards import ExtractSpec, prepare_shards
from pipeline.files import write_json
from pipeline.params import load_section
from pipeline.stage import run
from pipeline.tracking import stage_run


def main():
    cfg = load_section("prepare_classsr")
    spec = ExtractSpec([cfg.scale], cfg.crop_size, cfg.step, cfg.thresh_size, rescales=cfg.rescales)
    with stage_run("prepare_classsr", cfg) as tracker:
        metrics = prepare_shards(cfg, spec, "data/classsr")
        write_json("metrics/prepare_classsr.json", metrics)
        tracker.log_metrics(metrics)


if __name__ == "__main__":
    run(main)
