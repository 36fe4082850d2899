"""What every stage entry point shares: a fixed seed, its share of the machine's cores, clean errors,
and an honest end when it is stopped."""
from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

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


_SHELLS = {"sh", "dash", "bash", "zsh", "fish", "ksh"}
_following = []


def stop_with_parent():
    """Under DVC (``DVC_STAGE`` set), on Linux: SIGTERM this process when the process that started it
    dies. DVC stopped by SIGTERM (``kill``, a scheduler) does not pass it on: its stage ran on,
    unrecorded, and its MLflow run ended FINISHED or stayed RUNNING. DVC runs the command through
    ``$SHELL -c`` (``/bin/sh`` where it is unset), and dash does not exec a lone command, so the
    process followed is the nearest ancestor that is not a shell: DVC, or a torchrun agent for a rank."""
    if _following or not os.environ.get("DVC_STAGE") or not sys.platform.startswith("linux"):
        return
    pid = os.getppid()
    while pid > 1 and _command_of(pid) in _SHELLS:
        pid = _parent_of(pid)
    if pid <= 1:
        return  # already orphaned: nothing left to follow
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGTERM)
        return
    except (OSError, AttributeError) as e:  # no pidfd: an older kernel or Python, or a seccomp filter
        warnings.warn(f"pidfd_open is unavailable here ({e}): following process {pid} by polling every "
                      f"{POLL_S:g} s instead", RuntimeWarning, stacklevel=2)
        handle = None
    _following.append(pid)

    def wait_for_its_end():
        if handle is not None:
            select.select([handle], [], [])  # a pidfd turns readable when its process has ended
        else:
            while _alive(pid):
                time.sleep(POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_for_its_end, name="stop-with-parent", daemon=True).start()


POLL_S = 2.0


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie counts as ended: its parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent_of(pid: int) -> int:
    try:  # the command name in field 2 may hold spaces and parentheses: split after its last ')'
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 1


def seed_everything(seed: int = 0):
    """Seed Python, numpy and torch, so that models a stage builds before training (which reseeds
    from ``train.seed``) start from the same weights on every run: a rerun reproduces the outputs.
    torch only when the stage imported it (a data stage does not: 2 s saved); imported later, it starts
    from its own fixed default seed."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def keep_freed_memory():
    """Keep freed memory in the process's heap (glibc): by default glibc returns large freed blocks to
    the OS and trims the heap's top, so every CPU training step faults its activations' pages in again
    (the default's teacher at batch 8: 20,000 page faults and a quarter of its step). Linux only."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free memory at the heap's top
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks under glibc's maximum, 32 MiB, come from the heap
    except (OSError, AttributeError):  # another libc (musl): its allocator, as it is
        pass


def run(main):
    """Run a stage's ``main`` from a fixed seed on its share of the cores (:mod:`pipeline.cores`); user
    errors (bad params, bad input, unreachable tracking server) exit 2 with one clear line; SIGTERM and
    SIGINT (and, under DVC, the death of DVC: :func:`stop_with_parent`) end it with 128 + the signal's
    number after its MLflow run is marked KILLED."""
    from pipeline.cores import jobs_sharing, machine_cores, use_process_cores
    from pipeline.tracking import check_server, end_open_runs, tracking_uri

    signal.signal(signal.SIGTERM, _stop)
    stop_with_parent()
    try:
        seed_everything()
        threads = use_process_cores()
        if jobs_sharing() > 1:
            print(f"cores: {threads} of {machine_cores()} ({jobs_sharing()} jobs share this machine)", flush=True)
        keep_freed_memory()
        if os.environ.get("PIPELINE_TRACKING", "1") != "0":
            check_server(tracking_uri())
        main()
        end_open_runs("FINISHED")
    except (ParamError, ImageError, FileNotFoundError, ConnectionError) as e:
        end_open_runs("FAILED")
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        end_open_runs("KILLED")
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"stopped by {signal.Signals(signum).name}", file=sys.stderr)
        sys.exit(128 + signum)
    except BaseException:
        end_open_runs("FAILED")
        raise
