"""A tiny project folder (shards, test images, params) for running stages end to end in seconds."""
from pathlib import Path

import yaml
from PIL import Image

from photos import photo
from pipeline.data.prepare import write_test_set
from pipeline.data.shards import ExtractSpec, write_shards
from pipeline.data.sources import ImageRef, folder_refs

TINY_TRAIN = {
    "max_steps": 6, "batch_size": 2, "lr_patch": 12, "lr": 1e-3, "val_every": 3, "ckpt_every": 2,
    "log_every": 2, "seed": 1, "num_workers": 0, "num_processes": 1,
    "schedule": {"kind": "cosine_restart", "eta_min": 1e-6},
}


def make_tiny_project(root: Path, train=None, model=None) -> Path:
    hr = root / "raw"
    hr.mkdir(parents=True)
    for name, box in [("rocket", (100, 100, 96, 120)), ("coffee", (0, 0, 96, 96))]:
        Image.fromarray(photo(name, box)).save(hr / f"{name}.png")
    write_shards(folder_refs(hr), ExtractSpec([4], 48, 24, 0), root / "data/sr", 10, 1, "tiny")
    test = root / "test_raw"
    test.mkdir()
    Image.fromarray(photo("chelsea", (100, 150, 48, 64))).save(test / "chelsea.png")
    write_test_set([ImageRef("chelsea", str(test / "chelsea.png"))], None, [4], root / "data/test/sample", 1)
    params = {"pretrain_teacher": {"model": model or {"arch": "msrresnet", "kwargs": {"nf": 8, "nb": 1}, "scale": 4},
                                   "train": {**TINY_TRAIN, **(train or {})}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root
