"""Where HR images come from: the embedded sample, a local folder, or a Hugging Face Hub dataset.

A source is resolved to a list of :class:`ImageRef` (picklable, so worker processes can load them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.images import ImageError, list_images, read_image, to_rgb_uint8

# The natural photographs that scikit-image ships. Held-out test photos are the three on which the
# official E-RFDN weights were measured (assets/weights/README.md); the rest train.
SAMPLE_TRAIN = ["rocket.jpg", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "motorcycle_left.png",
                "motorcycle_right.png", "brick.png", "grass.png", "gravel.png", "camera.png", "moon.png"]
SAMPLE_TEST = ["chelsea.png", "coffee.png", "astronaut.png"]


@dataclass(frozen=True)
class ImageRef:
    name: str
    path: str = ""  # a file
    hub: tuple = ()  # (dataset id, split, column, row index)

    def load(self) -> np.ndarray:
        if self.path:
            return read_image(self.path)
        return _load_hub_image(*self.hub)


def sample_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def sample_refs(split: str) -> list[ImageRef]:
    files = SAMPLE_TRAIN if split == "train" else SAMPLE_TEST
    root = sample_dir()
    return [ImageRef(Path(f).stem, str(root / f)) for f in files]


def folder_refs(folder) -> list[ImageRef]:
    return [ImageRef(p.stem, str(p)) for p in list_images(folder)]


def _hub_dataset(dataset_id: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # offline, unknown id, loading script, ...
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or "offline" in str(e).lower() or "connect" in str(e).lower()
        hint = ("no network access to the Hugging Face Hub: download the images and set the source to their "
                "local folder instead") if offline else "check the dataset id and split"
        raise ImageError(f"source 'hub:{dataset_id}' (split '{split}') could not be loaded: {e}. {hint}") from e


def _load_hub_image(dataset_id: str, split: str, column: str, index: int) -> np.ndarray:
    item = _hub_dataset(dataset_id, split)[int(index)][column]
    return to_rgb_uint8(item, f"hub:{dataset_id}[{index}]")


def hub_refs(dataset_id: str, split: str, column: str) -> list[ImageRef]:
    ds = _hub_dataset(dataset_id, split)
    if column not in ds.column_names:
        raise ImageError(f"hub:{dataset_id}: no column '{column}'; columns are {ds.column_names}")
    return [ImageRef(f"{i:06d}", hub=(dataset_id, split, column, i)) for i in range(len(ds))]


def folders_refs(folders: list[str]) -> list[ImageRef]:
    """The images of several folders (DF2K: DIV2K + Flickr2K); a name found in two of them is an error
    naming both files (sub-images and patch classes are keyed by image name)."""
    refs, seen = [], {}
    for folder in folders:
        for ref in folder_refs(folder):
            if ref.name in seen:
                raise ImageError(f"image name '{ref.name}' is in two source folders: {seen[ref.name]} and {ref.path}; "
                                 "rename one (sub-images are keyed by image name)")
            seen[ref.name] = ref.path
            refs.append(ref)
    return refs


def resolve(source: str | list[str], split: str = "train", hub_split: str = "train", hub_column: str = "image"):
    if isinstance(source, list):
        return folders_refs(source)
    if source == "sample":
        return sample_refs(split)
    if source.startswith("hub:"):
        return hub_refs(source[4:], hub_split, hub_column)
    return folder_refs(source)
