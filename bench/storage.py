"""Shard storage and loader speed, the layout before (every overlapping sub-image stored as raw pixels)
against the current one (each image and its LR once, the sub-images as index rows, cropped on access),
side by side on the same DIV2K-size images; and the data-prep rate per core.

    python bench/storage.py [--images 2]

Prints, per prepare stage (the paper profile's specs): bytes on disk per 2040x1356 image, old and new,
against the pixels that must be stored (each HR, each ClassSR rescaled copy and each LR once); the
loader's patches/s on both layouts (the same pairs, checked equal); images/s of the prepare stage on
one core.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.data.images import write_png  # noqa: E402
from pipeline.data.loader import PatchBatches  # noqa: E402
from pipeline.data.shards import ExtractSpec, PairShards, extract_images, grid_rows, write_shards  # noqa: E402
from pipeline.data.sources import folder_refs  # noqa: E402

SPECS = {"prepare_sr": ExtractSpec([2, 3, 4], 480, 240, 0),  # BasicSR extract_subimages
         "prepare_classsr": ExtractSpec([4], 128, 64, 48, rescales=[1.0, 0.9, 0.8, 0.7, 0.6])}  # ClassSR


def div2k_like(n: int) -> list[np.ndarray]:
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    return [np.asarray(Image.fromarray(photos[i % len(photos)]).resize((2040, 1356), Image.BICUBIC)) for i in range(n)]


def old_layout(refs, spec: ExtractSpec, out: Path) -> int:
    """The layout before: one Arrow row per sub-image, its HR and LR crops as raw bytes."""
    import datasets

    def rows():
        for ref in refs:
            for image in extract_images(ref.load(), ref.name, spec)[0]:
                h, w = image["height"], image["width"]
                hr = np.frombuffer(image["hr"], np.uint8).reshape(h, w, 3)
                lrs = {s: np.frombuffer(image[f"lr_x{s}"], np.uint8).reshape(h // s, w // s, 3) for s in spec.scales}
                for top, left in grid_rows(h, w, spec):
                    c = spec.crop_size
                    yield {"hr": hr[top:top + c, left:left + c].tobytes(),
                           **{f"lr_x{s}": np.ascontiguousarray(lr[top // s:top // s + c // s, left // s:left // s + c // s]
                                                               ).tobytes() for s, lr in lrs.items()}}

    ds = datasets.Dataset.from_generator(rows, cache_dir=str(out / "cache"))
    ds.save_to_disk(str(out / "arrow"))
    return len(ds)


class OldPairs:
    def __init__(self, folder: Path, spec: ExtractSpec, scale: int):
        import datasets

        self.table = datasets.load_from_disk(str(folder / "arrow")).data
        self.hr, self.lr = self.table.column("hr"), self.table.column(f"lr_x{scale}")
        self.scale, self.c = scale, spec.crop_size

    def __len__(self):
        return self.table.num_rows

    def pair(self, i):
        c = self.c // self.scale
        return (np.frombuffer(self.lr[int(i)].as_py(), np.uint8).reshape(c, c, 3),
                np.frombuffer(self.hr[int(i)].as_py(), np.uint8).reshape(self.c, self.c, 3))


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "cache" not in p.parts)


def patches_per_s(shards, steps=40, batch=16, lr_patch=32) -> float:
    batches = PatchBatches(shards, batch, lr_patch, seed=0)
    t0 = time.perf_counter()
    for k in range(steps):
        batches[k]
    return steps * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "hr").mkdir()
        for i, img in enumerate(div2k_like(args.images)):
            write_png(tmp / "hr" / f"{i + 1:04d}.png", img)
        refs = folder_refs(tmp / "hr")
        print(f"{args.images} images of 2040x1356 (DIV2K size), one core")
        for stage, spec in SPECS.items():
            t0 = time.perf_counter()
            info = write_shards(refs, spec, tmp / f"{stage}_new", 2000, 1, str(tmp / "hr"))
            rate = args.images / (time.perf_counter() - t0)
            n_old = old_layout(refs, spec, tmp / f"{stage}_old")
            new, old = disk_bytes(tmp / f"{stage}_new"), disk_bytes(tmp / f"{stage}_old")
            needed = sum(3 * h * w * (1 + sum(1 / s**2 for s in spec.scales)) for h, w in PairShards(
                tmp / f"{stage}_new", spec.scales[-1]).sizes)
            assert n_old == info["num_subimages"]
            print(f"{stage}: {info['num_subimages']} sub-images; MB per image: old {old / args.images / 1e6:.1f}, "
                  f"new {new / args.images / 1e6:.1f} (old/new {old / new:.2f}x); new / pixels to store "
                  f"{new / needed:.3f} (target <= 1.2); prep {rate:.2f} images/s per core")
            s = spec.scales[-1]
            new_pairs, old_pairs = PairShards(tmp / f"{stage}_new", s), OldPairs(tmp / f"{stage}_old", spec, s)
            for i in (0, len(new_pairs) // 2, len(new_pairs) - 1):
                assert all(np.array_equal(a, b) for a, b in zip(new_pairs.pair(i), old_pairs.pair(i)))
            rates = [(patches_per_s(old_pairs), patches_per_s(new_pairs)) for _ in range(7)]
            o, n = max(r[0] for r in rates), max(r[1] for r in rates)
            print(f"  loader (x{s}, LR patch 32, in-process, best of 7, interleaved): old {o:,.0f}, new {n:,.0f} patches/s "
                  f"(new/old {n / o:.2f}); same pairs")


if __name__ == "__main__":
    main()
