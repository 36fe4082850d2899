"""Reading images as RGB uint8, with clear errors that name the file."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


class ImageError(ValueError):
    """An input image cannot be used; the message names the file."""


def to_rgb_uint8(img: Image.Image, name: str) -> np.ndarray:
    """Convert any PIL mode to RGB uint8: gray is replicated, alpha dropped, 16-bit scaled to 8-bit."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode != "F" else max(1.0, float(arr.max()))
        gray = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        warnings.warn(f"{name}: {mode} (16-bit/float) image scaled to 8-bit RGB", stacklevel=3)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        warnings.warn(f"{name}: alpha channel dropped", stacklevel=3)
    if mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def read_image(path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; raises ImageError naming the file when unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb_uint8(img, str(path))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot read image ({e})") from e


def write_png(path, img: np.ndarray):
    Image.fromarray(img).save(path, compress_level=3)


def list_images(folder) -> list[Path]:
    """Image files of a folder, sorted; errors on a missing or empty folder and on duplicate stems."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise ImageError(f"duplicate image name '{f.stem}': {seen[f.stem]} and {f}; outputs are keyed by name")
        seen[f.stem] = f
    return files


def mod_crop(img: np.ndarray, multiple: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % multiple, : w - w % multiple]


def to_float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding, as a saved PNG (MATLAB's im2uint8)."""
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR of a uint8 HR image: MATLAB bicubic x1/scale, rounded to uint8."""
    from pipeline.resize import imresize

    return to_uint8(imresize(to_float(hr), 1.0 / scale))
