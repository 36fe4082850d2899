"""Stage prepare_sr: HR sub-images (BasicSR crop/step) with aligned MATLAB-bicubic LR, as Arrow shards."""
from pipeline.data.shards import ExtractSpec, write_shards
from pipeline.data.sources import resolve
from pipeline.params import PrepareSR, load_section
from pipeline.files import write_json
from pipeline.stage import run
from pipeline.tracking import stage_run

OUT, METRICS = "data/sr", "metrics/prepare_sr.json"


def main():
    cfg = load_section("prepare_sr", PrepareSR)
    with stage_run("prepare_sr", cfg) as tracker:
        refs = resolve(cfg.source, "train", cfg.hub_split, cfg.hub_image_column)
        spec = ExtractSpec(cfg.scales, cfg.crop_size, cfg.step, cfg.thresh_size)
        info = write_shards(refs, spec, OUT, cfg.shard_mb, cfg.num_workers, cfg.source)
        metrics = {k: info[k] for k in ("num_images", "num_skipped", "num_subimages")}
        write_json(METRICS, metrics)
        tracker.log_metrics(metrics)


if __name__ == "__main__":
    run(main)
