"""What every stage entry point shares: a fixed seed, its share of the machine's cores, clean errors,
and an honest end when it is stopped."""
from __future__ import annotations

import signal
import sys

from pipeline.data.images import ImageError
from pipeline.params import ParamError


class Stopped(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, ``kill``, ``dvc queue kill``) raised where the stage is, like
    Ctrl-C's KeyboardInterrupt, so open MLflow runs end KILLED and partial outputs are cleaned up."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _stop(signum, frame):
    signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once
    raise Stopped(signum)


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
    """Run a stage's ``main`` from a fixed seed on its share of the cores (:mod:`pipeline.cores`); user
    errors (bad params, bad input, unreachable tracking server) exit 2 with one clear line; SIGTERM and
    SIGINT end it with 128 + the signal's number after its MLflow run is marked KILLED."""
    import os

    from pipeline.cores import use_process_cores
    from pipeline.tracking import check_server, tracking_uri

    signal.signal(signal.SIGTERM, _stop)
    try:
        seed_everything()
        use_process_cores()
        if os.environ.get("PIPELINE_TRACKING", "1") != "0":
            check_server(tracking_uri())
        main()
    except (ParamError, ImageError, FileNotFoundError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"stopped by {signal.Signals(signum).name}", file=sys.stderr)
        sys.exit(128 + signum)
