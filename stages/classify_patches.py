"""Stage classify_patches: the teacher scores every ClassSR training patch (RGB PSNR, crop = scale, as
ClassSR's divide script); patches split into simple / medium / hard by PSNR thresholds."""
import numpy as np
import torch

from pipeline import models
from pipeline.data.classes import classify_psnr, rank_indices, tertile_thresholds
from pipeline.data.shards import PairShards
from pipeline.files import atomic_dir, write_json
from pipeline.metrics import psnr_batch
from pipeline.params import CLASS_NAMES, load_section
from pipeline.stage import run
from pipeline.tracking import stage_run

DATA, TEACHER, OUT = "data/classsr", "models/teacher", "data/classes"
METRICS, PLOT = "metrics/classify_patches.json", "plots/classify_psnr_hist.csv"


@torch.no_grad()
def score_patches(model, shards, indices, batch_size, device) -> np.ndarray:
    from tqdm import tqdm

    out = []
    for i in tqdm(range(0, len(indices), batch_size), desc="teacher PSNR", unit="batch"):
        pairs = [shards.pair(j) for j in indices[i:i + batch_size]]
        lr = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float().div(255).to(device)
        hr = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2).float().div(255).to(device)
        out.append(psnr_batch(model(lr), hr, crop_border=shards.scale, y_channel=False).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def main():
    from pipeline.distributed import make_accelerator

    cfg = load_section("classify_patches")
    accelerator = make_accelerator(cfg.timeout_s)
    teacher = models.load(TEACHER, accelerator.device).eval()
    shards = PairShards(DATA, teacher.config["scale"])
    mine = rank_indices(len(shards), accelerator.process_index, accelerator.num_processes)
    local = torch.from_numpy(score_patches(teacher, shards, mine, cfg.batch_size, accelerator.device))
    # every rank holds the same count (all_gather needs it); rank order = patch order; drop the padding
    psnrs = accelerator.gather(local.to(accelerator.device)).cpu().numpy()[:len(shards)]
    if accelerator.is_main_process:
        write_classes(psnrs, cfg)
    # every rank leaves the process group together: a rank that exits while gloo still holds its
    # connection to the others aborts ("terminate called without an active exception")
    accelerator.wait_for_everyone()
    accelerator.end_training()


def write_classes(psnrs, cfg):
    low, high = cfg.thresholds or tertile_thresholds(psnrs)
    classes = classify_psnr(psnrs, low, high)
    with stage_run("classify_patches", cfg) as tracker, atomic_dir(OUT) as tmp:
        np.save(tmp / "psnr.npy", psnrs.astype(np.float32))
        np.save(tmp / "classes.npy", classes)
        counts = np.bincount(classes, minlength=3)
        metrics = {"threshold_low_db": low, "threshold_high_db": high, "num_patches": int(len(classes)),
                   **{f"count_{n}": int(c) for n, c in zip(CLASS_NAMES, counts)},
                   **{f"fraction_{n}": float(c / len(classes)) for n, c in zip(CLASS_NAMES, counts)}}
        write_json(METRICS, metrics)
        write_histogram(psnrs, low, high)
        tracker.log_metrics(metrics)
        tracker.log_artifact(PLOT.replace(".csv", ".png"), "plots")


def write_histogram(psnrs, low, high):
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, edges = np.histogram(psnrs, bins=40)
    Path(PLOT).parent.mkdir(exist_ok=True)
    rows = ["psnr_db,patches"] + [f"{(a + b) / 2:.3f},{c}" for a, b, c in zip(edges[:-1], edges[1:], counts)]
    Path(PLOT).write_text("\n".join(rows) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(psnrs, bins=40, color="#777")
    for t, name in [(low, "low"), (high, "high")]:
        ax.axvline(t, color="C3", ls="--")
        ax.text(t, ax.get_ylim()[1] * 0.9, f" {name} {t:.2f} dB", color="C3")
    ax.set_xlabel("teacher PSNR of the patch (RGB, dB)")
    ax.set_ylabel("patches")
    fig.tight_layout()
    fig.savefig(PLOT.replace(".csv", ".png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    run(main)
