"""Writing outputs so that a failed or killed run never leaves a half-written one: the one atomic
folder replacement, and JSON metrics written the same way."""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path


def replace_dir(tmp: Path, out: Path):
    """Put the finished folder ``tmp`` in place of ``out``: the old one stays intact until the new one
    is complete, and is removed after."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


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
