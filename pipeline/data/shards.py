"""Sub-image extraction (BasicSR / ClassSR layout) into a few Arrow shards, and reading them back.

Each source image (each ClassSR rescaled copy) and its LR at every scale are stored **once**, and the
sub-image grid is a table of index rows; a sub-image is cropped on access. The crops are exactly those
of BasicSR's ``extract_subimages`` (HR crop/step/threshold; LR crops of the LR of the whole mod-cropped
image at top/s, left/s) and ClassSR's scripts, at ~1x the pixels instead of ~3.5x for overlapping
crops stored one by one (a DIV2K image: ~40 overlapping 480^2 sub-images = 3.3x its own pixels).

A shard folder holds ``info.json`` (what was made, from what), ``arrow/`` (a ``datasets``
``save_to_disk`` folder, one row per image: ``image`` name, ``height``/``width`` of the HR, ``hr`` and
``lr_x{s}`` as raw uint8 bytes) and ``grid.npy`` (int32 rows ``image row, top, left`` in HR pixels, one
per sub-image, in extraction order: the row order every per-patch file, e.g. ClassSR's classes, aligns
with). Reading is zero-copy from the memory-mapped Arrow files (pyarrow alone); only the crop is copied.
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
from pipeline.files import atomic_dir


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


def grid_rows(height: int, width: int, spec: ExtractSpec) -> list[tuple[int, int]]:
    """(top, left) of every sub-image of an HR image, as BasicSR's extract_subimages walks it."""
    return [(top, left) for top in window_starts(height, spec.crop_size, spec.step, spec.thresh_size)
            for left in window_starts(width, spec.crop_size, spec.step, spec.thresh_size)]


def extract_images(img: np.ndarray, name: str, spec: ExtractSpec) -> tuple[list[dict], list[str]]:
    """Rows of one source image: each rescaled copy, mod-cropped, with its LR at every scale; and
    warnings (e.g. too small)."""
    rows, notes = [], []
    multiple = math.lcm(*spec.scales)
    for vname, hr_full in _variants(img, name, spec.rescales):
        hr_full = np.ascontiguousarray(mod_crop(hr_full, multiple))
        h, w = hr_full.shape[:2]
        if h < spec.crop_size or w < spec.crop_size:
            notes.append(f"{vname}: {w}x{h} is smaller than crop_size {spec.crop_size}; skipped")
            continue
        rows.append({"image": vname, "height": h, "width": w, "hr": hr_full.tobytes(),
                     **{f"lr_x{s}": bicubic_downscale(hr_full, s).tobytes() for s in spec.scales}})
    return rows, notes


def _extract_one(args):
    ref, spec = args
    try:
        img = ref.load()
    except ImageError as e:
        return ref.name, [], [str(e)]
    rows, notes = extract_images(img, ref.name, spec)
    return ref.name, rows, notes


def _row_generator(refs, spec, num_workers, notes_file, fingerprint):
    """Rows of every image, prepared in worker processes; skip notes go to ``notes_file``.

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

    # large_binary: one DIV8K image is ~200 MB, past 32-bit offsets within a few rows
    features = datasets.Features({"image": datasets.Value("string"), "height": datasets.Value("int32"),
                                  "width": datasets.Value("int32"), "hr": datasets.Value("large_binary"),
                                  **{f"lr_x{s}": datasets.Value("large_binary") for s in spec.scales}})
    fingerprint = json.dumps([[r.name, r.path, list(r.hub)] for r in refs] + [vars(spec)], sort_keys=True)
    with atomic_dir(out_dir) as tmp:
        notes_file = tmp / "skipped.txt"
        notes_file.touch()
        try:
            ds = datasets.Dataset.from_generator(
                _row_generator, features=features, cache_dir=str(tmp / "cache"),
                gen_kwargs={"refs": refs, "spec": spec, "num_workers": num_workers, "notes_file": str(notes_file),
                            "fingerprint": fingerprint}, writer_batch_size=8)  # rows are whole images
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
        sizes = ds.select_columns(["height", "width"])[:]
        grid = np.array([(i, t, l) for i, (h, w) in enumerate(zip(sizes["height"], sizes["width"]))
                         for t, l in grid_rows(h, w, spec)], dtype=np.int32).reshape(-1, 3)
        np.save(tmp / "grid.npy", grid)
        del ds
        shutil.rmtree(tmp / "cache")
        info = {"source": source, "num_images": len(refs), "num_skipped": len(skipped),
                "skipped": skipped, "scales": spec.scales, "crop_size": spec.crop_size,
                "step": spec.step, "thresh_size": spec.thresh_size, "rescales": spec.rescales}
        info["num_stored_images"] = len(sizes["height"])
        info["num_subimages"] = len(grid)
        (tmp / "info.json").write_text(json.dumps(info, indent=1))
    return info


def prepare_shards(cfg, spec: ExtractSpec, out: str) -> dict:
    """What a prepare stage makes: the sub-images of ``cfg.source`` (``cfg``: its params section) by
    ``spec`` into ``out``; their counts (the stage's metrics)."""
    refs = resolve(cfg.source, "train", cfg.hub_split, cfg.hub_image_column)
    info = write_shards(refs, spec, out, cfg.shard_mb, cfg.num_workers, cfg.source)
    return {k: info[k] for k in ("num_images", "num_skipped", "num_subimages")}


class PairShards:
    """Random access to the aligned (LR, HR) uint8 sub-image pairs of a shard folder at one scale."""

    def __init__(self, folder, scale: int):
        folder = Path(folder)
        if not (folder / "info.json").is_file() or not (folder / "grid.npy").is_file():
            raise FileNotFoundError(f"{folder}: not a shard folder (no info.json / grid.npy); run its prepare stage first")
        self.info = json.loads((folder / "info.json").read_text())
        if scale not in self.info["scales"]:
            raise ValueError(f"{folder}: has scales {self.info['scales']}, not {scale}")
        self.folder, self.scale = folder, scale
        self.hr_side = self.info["crop_size"]
        self.lr_side = self.hr_side // scale
        self.grid = np.load(folder / "grid.npy")
        table = saved_table(folder / "arrow")
        self.sizes = np.stack([_ints(table.column("height")), _ints(table.column("width"))], 1)
        # one (LR, HR) pair of read-only array views per stored image, made once
        self._images = [(lr.reshape(h // scale, w // scale, 3), hr.reshape(h, w, 3)) for (h, w), lr, hr in zip(
            self.sizes.tolist(), _rows(table.column(f"lr_x{scale}")), _rows(table.column("hr")))]

    def __reduce__(self):  # a spawned loader worker maps the files again instead of receiving a copy
        return PairShards, (self.folder, self.scale)

    def __len__(self):
        return len(self.grid)

    def image(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole stored (LR, HR) of image ``row``: read-only views of the memory-mapped file."""
        return self._images[row]

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sub-image ``i`` as read-only views of the mapped file (the loader copies only its patch)."""
        row, top, left = self.grid[int(i)].tolist()
        lr, hr = self._images[row]
        t, l, c = top // self.scale, left // self.scale, self.lr_side
        return lr[t:t + c, l:l + c], hr[top:top + self.hr_side, left:left + self.hr_side]


def saved_table(folder: Path):
    """The table of a ``datasets`` ``save_to_disk`` folder (Arrow IPC stream files listed in its
    state.json), memory-mapped with pyarrow alone: zero-copy, as ``datasets.load_from_disk``, without
    importing ``datasets`` (~1 s of every training process) where only the file is read."""
    import pyarrow as pa

    state = json.loads((folder / "state.json").read_text())
    if state.get("_indices_data_files"):
        raise ValueError(f"{folder}: an indices mapping; the shards are written without one")
    tables = [pa.ipc.open_stream(pa.memory_map(str(folder / f["filename"]))).read_all()
              for f in state["_data_files"]]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _ints(column) -> np.ndarray:
    """An int32 column (no nulls) as numpy, read from its buffers: pyarrow's ``to_numpy`` imports pandas."""
    return np.concatenate([np.frombuffer(chunk.buffers()[1], np.int32)[chunk.offset:chunk.offset + len(chunk)]
                           for chunk in column.chunks])


def _rows(column) -> list[np.ndarray]:
    """Each row of a pyarrow large_binary column as a uint8 numpy view of the memory-mapped buffer (no
    copy, no pyarrow scalar)."""
    out = []
    for chunk in column.chunks:
        _, offsets, data = chunk.buffers()
        data = np.frombuffer(data, np.uint8)
        bounds = np.frombuffer(offsets, np.int64)[chunk.offset:chunk.offset + len(chunk) + 1].tolist()
        out += [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return out
