"""The data-preparation recipes behind the prepare_* stages."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from pipeline.data.images import ImageError, bicubic_downscale, mod_crop, to_float, to_uint8, write_png
from pipeline.data.sources import ImageRef, folder_refs, sample_refs
from pipeline.data.workers import parallel_map


def _div8k_refs(folder, first: int, last: int) -> list[ImageRef]:
    refs = [r for r in folder_refs(folder) if r.name.isdigit() and first <= int(r.name) <= last]
    if not refs:
        raise ImageError(f"{folder}: no DIV8K images numbered {first}-{last} (e.g. {first:04d}.png)")
    return refs


def _to_long_side(img: np.ndarray, long_side: int) -> np.ndarray:
    from pipeline.resize import imresize

    scale = long_side / max(img.shape[:2])
    return img if scale >= 1 else to_uint8(imresize(to_float(img), scale))


# ClassSR's test sets (README, issue #18/#20): DIV8K 1201-1500, HR at 2K / 4K / 8K.
TEST_XK = {"Test2K": (1201, 1300, 2048), "Test4K": (1301, 1400, 4096), "Test8K": (1401, 1500, None)}


def test_sets(cfg) -> dict[str, tuple[list[ImageRef], int | None]]:
    """name -> (image refs, long side to downsample the HR to or None)."""
    sets = {}
    if cfg.sample:
        sets["sample"] = (sample_refs("test"), None)
    if cfg.benchmark_root:
        for name in cfg.benchmarks:
            folder = Path(cfg.benchmark_root) / name
            if folder.is_dir():
                sets[name] = (folder_refs(folder), None)
    if cfg.div8k:
        for name, (first, last, side) in TEST_XK.items():
            sets[name] = (_div8k_refs(cfg.div8k, first, last), side)
    return sets


def _write_test_image(args):
    ref, out, scales, long_side = args
    try:
        img = ref.load()
    except ImageError as e:
        return str(e)
    if long_side:
        img = _to_long_side(img, long_side)
    multiple = int(np.lcm.reduce(scales))
    hr = mod_crop(img, multiple)
    if min(hr.shape[:2]) < 4 * multiple:
        return f"{ref.name}: {img.shape[1]}x{img.shape[0]} is too small for scales {scales}; skipped"
    write_png(out / "HR" / f"{ref.name}.png", hr)
    for s in scales:
        write_png(out / f"LR_bicubic/X{s}" / f"{ref.name}.png", bicubic_downscale(hr, s))
    return None


def write_test_set(refs, long_side, scales, out: Path, num_workers: int) -> dict:
    """HR (mod-cropped to the scales) and MATLAB-bicubic LR PNGs, as the benchmarks are distributed."""
    (out / "HR").mkdir(parents=True)
    for s in scales:
        (out / f"LR_bicubic/X{s}").mkdir(parents=True)
    jobs = [(r, out, scales, long_side) for r in refs]
    notes = [n for n in parallel_map(_write_test_image, jobs, num_workers, out.name) if n]
    for n in notes:
        warnings.warn(n, stacklevel=1)
    info = {"num_images": len(refs) - len(notes), "num_skipped": len(notes), "skipped": notes, "scales": scales}
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return info
