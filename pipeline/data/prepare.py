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


# Where the benchmark downloads keep their HR images, inside a set's folder (EDSR-PyTorch's benchmark.tar:
# HR/; BasicSR's Set5/Set14: GTmod12/); otherwise the images lie in the set's folder itself.
HR_DIRS = ("HR", "GTmod12")


def hr_folder(folder: Path) -> Path:
    return next((folder / d for d in HR_DIRS if (folder / d).is_dir()), folder)


def is_image_folder(folder: Path) -> bool:
    from pipeline.data.images import IMAGE_EXTENSIONS

    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in hr_folder(folder).iterdir() if p.is_file())


def benchmark_folders(root, names: list[str]) -> dict[str, Path]:
    """Set name -> folder: the named folders under ``root`` ([] names: every folder of images there). A
    DIV2K-style ``X_HR`` folder is the set ``X``; its ``X_LR_bicubic`` sibling holds LR, not a set."""
    root = Path(root)
    folders = [root / n for n in names] if names else sorted(p for p in root.iterdir() if p.is_dir())
    return {f.name.removesuffix("_HR"): f for f in folders if is_image_folder(f)}


def given_lr_folders(folder: Path, scales: list[int]) -> dict[int, Path]:
    """The LR folders a download already has for ``scales``: ``LR_bicubic/X4`` (EDSR-PyTorch), ``LRbicx4``
    (BasicSR), or a DIV2K-style sibling ``<name>_LR_bicubic/X4`` of ``<name>_HR``."""
    found = {}
    for s in scales:
        candidates = [folder / f"LR_bicubic/X{s}", folder / f"LR_bicubic/x{s}", folder / f"LRbicx{s}"]
        if folder.name.endswith("_HR"):
            candidates.append(folder.parent / (folder.name.removesuffix("_HR") + "_LR_bicubic") / f"X{s}")
        lr = next((c for c in candidates if c.is_dir()), None)
        if lr is not None:
            found[s] = lr
    return found


def given_lr_file(lr_dir: Path, stem: str, scale: int) -> Path:
    """The LR image of HR ``stem``: the same stem, or with DIV2K's / EDSR-PyTorch's ``x4`` suffix."""
    from pipeline.data.images import IMAGE_EXTENSIONS

    for name in (stem, f"{stem}x{scale}"):
        for p in sorted(lr_dir.glob(f"{name}.*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                return p
    raise ImageError(f"{lr_dir}: no LR image for '{stem}' ({stem}.png or {stem}x{scale}.png); the folder is used "
                     "for every image of its set, so it must hold them all (or remove it to regenerate the LR)")


def test_sets(cfg) -> dict[str, tuple[list[ImageRef], float | None, dict[int, dict[str, Path]]]]:
    """name -> (image refs, factor to downsample the HR by or None, {scale: {stem: given LR file}}).
    Every given LR file is found here, before any work."""
    sets = {}
    if cfg.sample:
        sets["sample"] = (sample_refs("test"), None, {})
    if cfg.benchmark_root:
        for name, folder in benchmark_folders(cfg.benchmark_root, cfg.benchmarks).items():
            refs = folder_refs(hr_folder(folder))
            given = {s: {r.name: given_lr_file(d, r.name, s) for r in refs}
                     for s, d in given_lr_folders(folder, cfg.scales).items()}
            sets[name] = (refs, None, given)
    if cfg.div8k:
        for name, (first, last, factor) in TEST_XK.items():
            sets[name] = (_div8k_refs(cfg.div8k, first, last), factor, {})
    return sets


def _given_lr(path: Path, hr: np.ndarray, scale: int) -> np.ndarray:
    """A given LR image, cut to the mod-cropped HR's size / scale (its download may have cropped the HR
    to a smaller multiple); refused by name when smaller."""
    from pipeline.data.images import read_image

    lr = read_image(path)
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    if lr.shape[0] < h or lr.shape[1] < w:
        raise ImageError(f"{path}: LR {lr.shape[1]}x{lr.shape[0]} is smaller than its HR / {scale} ({w}x{h})")
    return np.ascontiguousarray(lr[:h, :w])


def _write_test_image(args):
    ref, out, scales, downscale, given = args
    try:
        img = ref.load()
        if downscale:
            img = _downscale(img, downscale)
        multiple = int(np.lcm.reduce(scales))
        hr = mod_crop(img, multiple)
        if min(hr.shape[:2]) < 4 * multiple:
            return f"{ref.name}: {img.shape[1]}x{img.shape[0]} is too small for scales {scales}; skipped"
        lrs = {s: _given_lr(given[s], hr, s) if s in given else bicubic_downscale(hr, s) for s in scales}
    except ImageError as e:
        return str(e)
    write_png(out / "HR" / f"{ref.name}.png", hr)
    for s, lr in lrs.items():
        write_png(out / f"LR_bicubic/X{s}" / f"{ref.name}.png", lr)
    return None


def write_test_set(refs, downscale, scales, out: Path, num_workers: int, given: dict | None = None) -> dict:
    """HR (downsampled by ``downscale`` first when given, then mod-cropped to the scales) and LR PNGs, as
    the benchmarks are distributed: the ``given`` LR files ({scale: {stem: path}}, a download's own) where
    there are some, else MATLAB bicubic."""
    given = given or {}
    (out / "HR").mkdir(parents=True)
    for s in scales:
        (out / f"LR_bicubic/X{s}").mkdir(parents=True)
    jobs = [(r, out, scales, downscale, {s: files[r.name] for s, files in given.items()}) for r in refs]
    notes = [n for n in parallel_map(_write_test_image, jobs, num_workers, out.name) if n]
    for n in notes:
        warnings.warn(n, stacklevel=1)
    info = {"num_images": len(refs) - len(notes), "num_skipped": len(notes), "skipped": notes, "scales": scales,
            "lr_given": {f"X{s}": str(next(iter(files.values())).parent) for s, files in given.items() if files}}
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return info
