"""Sub-image extraction (BasicSR / ClassSR layout) into a few Arrow shards, and reading them back.

A shard folder holds ``info.json`` (what was made, from what) and ``arrow/`` (a ``datasets``
``save_to_disk`` folder). Each row is one aligned HR/LR sub-image pair: ``image`` (source name),
``top``/``left`` (HR pixel position), ``hr`` and ``lr_x{s}`` as raw uint8 bytes (decoded with
``np.frombuffer``: ~0.1 ms per item, far below a training step). LR sub-images are crops of the LR of
the whole (mod-cropped) image, exactly as BasicSR's extract_subimages does on its LR folders.
"""
from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.images import ImageError, bicubic_downscale, mod_crop, to_float, to_uint8
from pipeline.data.sources import ImageRef, resolve
from pipeline.data.workers import parallel_map
from pipeline.files import atomic_dir, write_json
from pipeline.tracking import stage_run


def window_starts(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """Top-left positions along one axis; a last window is added when the remainder exceeds ``thresh``."""
    starts = list(range(0, length - crop + 1, step))
    if starts and length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


@dataclass
class ExtractSpec:
    scales: list[int]
    crop_size: int
    step: int
    thresh_size: int
    rescales: list[float] = field(default_factory=lambda: [1.0])  # ClassSR's augmentation


def _variants(img: np.ndarray, name: str, rescales) -> list[tuple[str, np.ndarray]]:
    from pipeline.resize import imresize

    out = []
    for r in rescales:
        if r == 1.0:
            out.append((name if len(rescales) == 1 else f"1.0_{name}", img))
        else:  # ClassSR's data_augmentation.py: MATLAB resize, saved as PNG (rounded)
            out.append((f"{r}_{name}", to_uint8(imresize(to_float(img), r))))
    return out


def extract_pairs(img: np.ndarray, name: str, spec: ExtractSpec) -> tuple[list[dict], list[str]]:
    """Rows of aligned sub-images of one HR image, and warnings (e.g. too small)."""
    rows, notes = [], []
    multiple = math.lcm(*spec.scales)
    for vname, hr_full in _variants(img, name, spec.rescales):
        hr_full = mod_crop(hr_full, multiple)
        h, w = hr_full.shape[:2]
        if h < spec.crop_size or w < spec.crop_size:
            notes.append(f"{vname}: {w}x{h} is smaller than crop_size {spec.crop_size}; skipped")
            continue
        lrs = {s: bicubic_downscale(hr_full, s) for s in spec.scales}
        for top in window_starts(h, spec.crop_size, spec.step, spec.thresh_size):
            for left in window_starts(w, spec.crop_size, spec.step, spec.thresh_size):
                row = {"image": vname, "top": top, "left": left,
                       "hr": hr_full[top:top + spec.crop_size, left:left + spec.crop_size].tobytes()}
                for s, lr in lrs.items():
                    c = spec.crop_size // s
                    row[f"lr_x{s}"] = np.ascontiguousarray(lr[top // s:top // s + c, left // s:left // s + c]).tobytes()
                rows.append(row)
    return rows, notes


def _extract_one(args):
    ref, spec = args
    try:
        img = ref.load()
    except ImageError as e:
        return ref.name, [], [str(e)]
    rows, notes = extract_pairs(img, ref.name, spec)
    return ref.name, rows, notes


def _row_generator(refs, spec, num_workers, notes_file, fingerprint):
    """Rows of every image, extracted in worker processes; skip notes go to ``notes_file``.

    ``fingerprint`` only keys datasets' generator cache (it would otherwise serve stale rows).
    """
    with open(notes_file, "a") as log:
        for _, rows, notes in parallel_map(_extract_one, [(r, spec) for r in refs], num_workers, "sub-images"):
            for note in notes:
                warnings.warn(note, stacklevel=1)
                log.write(note.replace("\n", " ") + "\n")
            yield from rows


def write_shards(refs: list[ImageRef], spec: ExtractSpec, out_dir, shard_mb: int, num_workers: int,
                 source: str) -> dict:
    """Extract every image's sub-images into ``out_dir`` atomically; returns the info written."""
    import datasets

    features = datasets.Features({"image": datasets.Value("string"), "top": datasets.Value("int32"),
                                  "left": datasets.Value("int32"), "hr": datasets.Value("binary"),
                                  **{f"lr_x{s}": datasets.Value("binary") for s in spec.scales}})
    fingerprint = json.dumps([[r.name, r.path, list(r.hub)] for r in refs] + [vars(spec)], sort_keys=True)
    with atomic_dir(out_dir) as tmp:
        notes_file = tmp / "skipped.txt"
        notes_file.touch()
        try:
            ds = datasets.Dataset.from_generator(
                _row_generator, features=features, cache_dir=str(tmp / "cache"),
                gen_kwargs={"refs": refs, "spec": spec, "num_workers": num_workers, "notes_file": str(notes_file),
                            "fingerprint": fingerprint})
        except ValueError as e:  # datasets refuses an empty split
            if "corresponds to no data" not in str(e):
                raise
            ds = []
        skipped = notes_file.read_text().splitlines()
        notes_file.unlink()
        if len(ds) == 0:
            raise ImageError(f"no sub-images were extracted from source '{source}' "
                             f"({len(skipped)} images skipped: {skipped[:3]})")
        ds.save_to_disk(str(tmp / "arrow"), max_shard_size=f"{shard_mb}MB")
        del ds
        shutil.rmtree(tmp / "cache")
        info = {"source": source, "num_images": len(refs), "num_skipped": len(skipped),
                "skipped": skipped, "scales": spec.scales, "crop_size": spec.crop_size,
                "step": spec.step, "thresh_size": spec.thresh_size, "rescales": spec.rescales}
        info["num_subimages"] = len(datasets.load_from_disk(str(tmp / "arrow")))
        (tmp / "info.json").write_text(json.dumps(info, indent=1))
    return info


def prepare_shards(stage: str, cfg, spec: ExtractSpec, out: str, metrics_path: str) -> dict:
    """A prepare stage: the sub-images of ``cfg.source`` (``cfg``: its params section) by ``spec`` into
    ``out``, and their counts as metrics (file and MLflow)."""
    with stage_run(stage, cfg) as tracker:
        refs = resolve(cfg.source, "train", cfg.hub_split, cfg.hub_image_column)
        info = write_shards(refs, spec, out, cfg.shard_mb, cfg.num_workers, cfg.source)
        metrics = {k: info[k] for k in ("num_images", "num_skipped", "num_subimages")}
        write_json(metrics_path, metrics)
        tracker.log_metrics(metrics)
    return info


class PairShards:
    """Random access to the aligned (LR, HR) uint8 pairs of a shard folder at one scale."""

    def __init__(self, folder, scale: int):
        import datasets

        folder = Path(folder)
        if not (folder / "info.json").is_file():
            raise FileNotFoundError(f"{folder}: not a shard folder (no info.json); run its prepare stage first")
        self.info = json.loads((folder / "info.json").read_text())
        if scale not in self.info["scales"]:
            raise ValueError(f"{folder}: has scales {self.info['scales']}, not {scale}")
        self.scale = scale
        self.hr_side = self.info["crop_size"]
        self.lr_side = self.hr_side // scale
        ds = datasets.load_from_disk(str(folder / "arrow"))
        self.table = ds.select_columns(["hr", f"lr_x{scale}"]).data  # pyarrow: memory-mapped, no copies
        self.names = ds.select_columns(["image"])["image"]
        self._hr, self._lr = self.table.column("hr"), self.table.column(f"lr_x{scale}")

    def __len__(self):
        return self.table.num_rows

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        hr = np.frombuffer(self._hr[int(i)].as_py(), np.uint8).reshape(self.hr_side, self.hr_side, 3)
        lr = np.frombuffer(self._lr[int(i)].as_py(), np.uint8).reshape(self.lr_side, self.lr_side, 3)
        return lr, hr
