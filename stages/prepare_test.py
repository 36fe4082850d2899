"""Stage prepare_test: whole-image test sets (HR + LR PNGs): held-out sample photos, every folder of
images under benchmark_root (or the named ones), and Test2K/4K/8K from DIV8K. LR images a download
already has (``LR_bicubic/X4``, ``LRbicx4``, DIV2K's ``*_LR_bicubic/X4``) are used as they are; the
others are made with MATLAB-exact bicubic."""
from pipeline.data.prepare import test_sets, write_test_set
from pipeline.params import PrepareTest, load_section
from pipeline.files import atomic_dir, write_json
from pipeline.stage import run
from pipeline.tracking import stage_run

OUT, METRICS = "data/test", "metrics/prepare_test.json"


def main():
    cfg = load_section("prepare_test", PrepareTest)
    with stage_run("prepare_test", cfg) as tracker:
        sets = test_sets(cfg)
        metrics = {}
        with atomic_dir(OUT) as tmp:
            for name, (refs, downscale, given) in sets.items():
                info = write_test_set(refs, downscale, cfg.scales, tmp / name, cfg.num_workers, given)
                metrics[name] = {"num_images": info["num_images"], "num_skipped": info["num_skipped"]}
                print(f"prepare_test: {name}: {info['num_images']} images, LR "
                      + (f"from {info['lr_given']}" if info["lr_given"] else "MATLAB bicubic"))
        write_json(METRICS, metrics)
        tracker.log_metrics({f"{k}.{m}": v for k, d in metrics.items() for m, v in d.items()})


if __name__ == "__main__":
    run(main)
