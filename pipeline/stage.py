"""What every stage entry point shares: a fixed seed, its share of the machine's cores, clean errors,
and an honest end when it is stopped."""
from __future__ import annotations

import os
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
    # Ignore repeats while the stage cleans up: DVC's death and DVC itself can both send one (see
    # stop_with_parent), and a second default-handled SIGTERM would kill it before its run is ended.
    signal.signal(signum, signal.SIG_IGN)
    raise Stopped(signum)


def stop_with_parent():
    """Under DVC (``DVC_STAGE`` set), on Linux: SIGTERM this process when its parent dies. DVC stopped by
    SIGTERM (``kill``, a scheduler) does not pass it on: its stage ran on, unrecorded, and its MLflow
    run ended FINISHED or stayed RUNNING. A torchrun rank likewise ends with its agent."""
    if not os.environ.get("DVC_STAGE") or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


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
    SIGINT (and, under DVC, the death of DVC: :func:`stop_with_parent`) end it with 128 + the signal's
    number after its MLflow run is marked KILLED."""
    from pipeline.cores import use_process_cores
    from pipeline.tracking import check_server, tracking_uri

    signal.signal(signal.SIGTERM, _stop)
    stop_with_parent()
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
