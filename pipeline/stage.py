"""Small helpers every stage entry point shares: clean parameter errors, metrics files, atomic folders."""
from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from pipeline.data.images import ImageError
from pipeline.params import ParamError


def seed_everything(seed: int = 0):
    """Seed Python, numpy and torch, so that models a stage builds before training (which reseeds
    from ``train.seed``) start from the same weights on every run: a rerun reproduces the outputs."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(main):
    """Run a stage's ``main`` from a fixed seed; user errors (bad params, bad input, unreachable
    tracking server) exit 2 with one clear line."""
    import os

    from pipeline.tracking import check_server, tracking_uri

    seed_everything()
    try:
        if os.environ.get("PIPELINE_TRACKING", "1") != "0":
            check_server(tracking_uri())
        main()
    except (ParamError, ImageError, FileNotFoundError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def write_json(path, data: dict):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


@contextmanager
def atomic_dir(out):
    """Yield a fresh temporary sibling of ``out``; it replaces ``out`` only if the block succeeds."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
