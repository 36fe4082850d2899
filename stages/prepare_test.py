"""Stage prepare_test: whole-image test sets (HR + MATLAB-bicubic LR PNGs): held-out sample photos,
benchmarks found under benchmark_root, and Test2K/4K/8K from DIV8K."""
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
            for name, (refs, downscale) in sets.items():
                info = write_test_set(refs, downscale, cfg.scales, tmp / name, cfg.num_workers)
                metrics[name] = {"num_images": info["num_images"], "num_skipped": info["num_skipped"]}
        write_json(METRICS, metrics)
        tracker.log_metrics({f"{k}.{m}": v for k, d in metrics.items() for m, v in d.items()})


if __name__ == "__main__":
    run(main)
