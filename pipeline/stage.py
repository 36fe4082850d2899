"""What every stage entry point shares: a fixed seed and clean errors."""
from __future__ import annotations

import sys

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

