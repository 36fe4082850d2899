"""Stage prepare_classsr: ClassSR's training set (rescaled HR, 128/64 crops, threshold 48) as Arrow shards."""
from pipeline.data.shards import ExtractSpec, write_shards
from pipeline.data.sources import resolve
from pipeline.params import PrepareClassSR, load_section
from pipeline.files import write_json
from pipeline.stage import run
from pipeline.tracking import stage_run

OUT, METRICS = "data/classsr", "metrics/prepare_classsr.json"


def main():
    cfg = load_section("prepare_classsr", PrepareClassSR)
    with stage_run("prepare_classsr", cfg) as tracker:
        refs = resolve(cfg.source, "train", cfg.hub_split, cfg.hub_image_column)
        spec = ExtractSpec([cfg.scale], cfg.crop_size, cfg.step, cfg.thresh_size, rescales=cfg.rescales)
        info = write_shards(refs, spec, OUT, cfg.shard_mb, cfg.num_workers, cfg.source)
        metrics = {k: info[k] for k in ("num_images", "num_skipped", "num_subimages")}
        write_json(METRICS, metrics)
        tracker.log_metrics(metrics)


if __name__ == "__main__":
    run(main)
