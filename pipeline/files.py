"""Writing outputs so that a failed or killed run never leaves a half-written one: the one atomic
folder replacement, and JSON metrics written the same way."""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path


def replace_dir(tmp: Path, out: Path):
    """Put the finished folder ``tmp`` in place of ``out``: the old one stays intact until the new one
    is complete, and is removed after. Killed anywhere, one complete folder remains: ``out``, or (between
    the two renames) ``out.old`` beside the complete ``tmp`` (:func:`recover_dir` puts one back)."""
    old = out.with_name(out.name + ".old")
    if out.exists():  # without out, a left-over out.old may be the only complete copy: kept until tmp is in
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(out: Path, complete) -> str:
    """After a kill between :func:`replace_dir`'s two renames there is no ``out``: put the newest
    complete folder back in its place, ``out.tmp`` if ``complete(out.tmp)``, else ``out.old``. Returns
    which one ('' when ``out`` was there or nothing was left)."""
    if out.exists():
        return ""
    for suffix in (".tmp", ".old"):
        candidate = out.with_name(out.name + suffix)
        if candidate.is_dir() and complete(candidate):
            candidate.rename(out)
            return candidate.name
    return ""


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
    replace_dir(tmp, out)


def write_json(path, data: dict):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
