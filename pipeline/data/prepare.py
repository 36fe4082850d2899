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


def _downscale(img: np.ndarray, factor: float) -> np.ndarray:
    from pipeline.resize import imresize

    return to_uint8(imresize(to_float(img), factor))


# ClassSR's test sets (README, issue #18; the author in issue #20): DIV8K 1201-1300 downsampled x1/4 is
# Test2K's HR, 1301-1400 x1/2 Test4K's, 1401-1500 as they are Test8K's (MATLAB bicubic). A factor, not a
# target long side: the two agree only for 8192-px images, and DIV8K's sizes vary.
TEST_XK = {"Test2K": (1201, 1300, 1 / 4), "Test4K": (1301, 1400, 1 / 2), "Test8K": (1401, 1500, None)}


def test_sets(cfg) -> dict[str, tuple[list[ImageRef], float | None]]:
    """name -> (image refs, factor to downsample the HR by, or None)."""
    sets = {}
    if cfg.sample:
        sets["sample"] = (sample_refs("test"), None)
    if cfg.benchmark_root:
        for name in cfg.benchmarks:
            folder = Path(cfg.benchmark_root) / name
            if folder.is_dir():
                sets[name] = (folder_refs(folder), None)
    if cfg.div8k:
        for name, (first, last, factor) in TEST_XK.items():
            sets[name] = (_div8k_refs(cfg.div8k, first, last), factor)
    return sets


def _write_test_image(args):
    ref, out, scales, downscale = args
    try:
        img = ref.load()
    except ImageError as e:
        return str(e)
    if downscale:
        img = _downscale(img, downscale)
    multiple = int(np.lcm.reduce(scales))
    hr = mod_crop(img, multiple)
    if min(hr.shape[:2]) < 4 * multiple:
        return f"{ref.name}: {img.shape[1]}x{img.shape[0]} is too small for scales {scales}; skipped"
    write_png(out / "HR" / f"{ref.name}.png", hr)
    for s in scales:
        write_png(out / f"LR_bicubic/X{s}" / f"{ref.name}.png", bicubic_downscale(hr, s))
    return None


def write_test_set(refs, downscale, scales, out: Path, num_workers: int) -> dict:
    """HR (downsampled by ``downscale`` first when given, then mod-cropped to the scales) and
    MATLAB-bicubic LR PNGs, as the benchmarks are distributed."""
    (out / "HR").mkdir(parents=True)
    for s in scales:
        (out / f"LR_bicubic/X{s}").mkdir(parents=True)
    jobs = [(r, out, scales, downscale) for r in refs]
    notes = [n for n in parallel_map(_write_test_image, jobs, num_workers, out.name) if n]
    for n in notes:
        warnings.warn(n, stacklevel=1)
    info = {"num_images": len(refs) - len(notes), "num_skipped": len(notes), "skipped": notes, "scales": scales}
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return info
