"""Architectures, built by name, saved as ``model.safetensors`` + ``config.json``.

    model = build("msrresnet", scale=4, nf=64, nb=16)
    save(model, "models/teacher"); model = load("models/teacher")

Every model takes and returns RGB in [0, 1] (models trained on 0-255 carry ``img_range``/``rgb_range``).
"""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from pipeline.files import atomic_dir
from pipeline.models.carn import CARNM
from pipeline.models.classsr import ClassSR
from pipeline.models.edsr import EDSR
from pipeline.models.fsrcnn import FSRCNN
from pipeline.models.ghost import ghost_modules, ghostify
from pipeline.models.msrresnet import MSRResNet
from pipeline.models.rcan import RCAN
from pipeline.models.rfdn import RFDN
from pipeline.models.rlfn import RLFN
from pipeline.models.bsrn import BSRN

ARCHS = {"fsrcnn": FSRCNN, "msrresnet": MSRResNet, "carn_m": CARNM, "rcan": RCAN, "edsr": EDSR, "rfdn": RFDN, "rlfn": RLFN,
         "bsrn": BSRN}


def _classsr(scale: int, branch_arch: str, branches: list[dict], branch_archs: list[str] | None = None) -> nn.Module:
    """ClassSR over ``branches`` (constructor kwargs, cheapest first) of ``branch_arch``; ``branch_archs``
    names each branch's architecture when they differ (e.g. a composed Ghost hard branch)."""
    archs = branch_archs or [branch_arch] * len(branches)
    return ClassSR([build(arch, scale, **kw) for arch, kw in zip(archs, branches)])


def _ghost(scale: int, source: dict, ratio: float, plan: dict, shifts: dict, d: int = 1, mode: str = "gumbel",
           per_channel: bool = False) -> nn.Module:
    """A GhostSR model in its deployment form: the source architecture with its Ghost plan and fixed
    shifts (``ratio`` is recorded, the plan holds the structure)."""
    model = ghostify(build(source["arch"], scale, **source["kwargs"]), plan, d, mode, per_channel)
    for name, m in zip(plan, ghost_modules(model)):
        m.fixed = [tuple(o) for o in shifts[name]]
    return model


COMPOSITE = {"classsr": _classsr, "ghost": _ghost}  # built from other architectures


def build(name: str, scale: int = 4, **kwargs) -> nn.Module:
    if name not in ARCHS and name not in COMPOSITE:
        raise ValueError(f"unknown architecture '{name}'; allowed: {', '.join(sorted(ARCHS | COMPOSITE))}")
    model = (ARCHS.get(name) or COMPOSITE[name])(scale=scale, **kwargs)
    model.config = {"arch": name, "scale": scale, "kwargs": kwargs}  # what save() writes beside the weights
    return model


def save(model: nn.Module, folder) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` (replaced atomically)."""
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(model.config, indent=1, sort_keys=True))
    return Path(folder)


def read_config(folder, layout: str | None = None) -> dict:
    """``{arch, scale, kwargs}`` of a saved model folder, or of a published checkpoint file (from its
    tensor shapes; ``layout`` names the checkpoint's layout when its tensor names are not enough)."""
    if is_checkpoint(folder):
        from pipeline.models.checkpoints import convert

        arch, scale, kwargs, _ = convert(folder, layout)
        return {"arch": arch, "scale": scale, "kwargs": kwargs}
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a saved model (no config.json) nor a .pt/.pth/.safetensors checkpoint")
    return json.loads(path.read_text())


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")  # one published state dict in a file


def is_checkpoint(path) -> bool:
    return Path(path).suffix in CHECKPOINT_SUFFIXES


def load(folder, device="cpu", layout: str | None = None) -> nn.Module:
    """A saved model folder, or a published checkpoint file (``.pt`` / ``.pth`` / ``.safetensors``, layout detected from
    its tensor names unless ``layout`` names it: :mod:`pipeline.models.checkpoints`)."""
    from safetensors.torch import load_file

    if is_checkpoint(folder):
        return load_checkpoint(folder, layout).to(device)
    cfg = read_config(folder)
    model = build(cfg["arch"], cfg["scale"], **cfg["kwargs"])
    model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))  # safetensors refuses 'cpu:0'
    return model.to(device)


def load_checkpoint(path, layout: str | None = None) -> nn.Module:
    """Our model holding a published checkpoint's weights (``.pt`` / ``.pth``, read with
    ``weights_only=True``); unknown, missing or mis-shaped tensors are refused by name."""
    from pipeline.models.checkpoints import check_fits, convert

    arch, scale, kwargs, state = convert(path, layout)
    model = build(arch, scale, **kwargs)
    check_fits(state, model.state_dict(), f"{path} as {arch} {kwargs} x{scale}")
    model.load_state_dict(state, strict=True)
    return model


def import_official(name: str, path) -> nn.Module:
    """Our model with an official checkpoint (safetensors, official tensor names) loaded strictly.

    ``erfdn``: njulj/RFDN's AIM-2020 E-RFDN x4 (nf 50, 4 blocks, ESA, trained on 0-255 input).
    """
    from safetensors.torch import load_file

    if name != "erfdn":
        raise ValueError(f"no official import for '{name}'; available: erfdn")
    model = build("rfdn", scale=4, nf=50, num_blocks=4, attention="esa", img_range=255.0)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model


def init_model(spec_arch: str, scale: int, kwargs: dict, init_from: str = "") -> nn.Module:
    """Build from params, then take weights from a saved model or ``official:erfdn:<path>`` if given."""
    if init_from.startswith("official:"):
        _, name, path = init_from.split(":", 2)
        return import_official(name, path)
    model = build(spec_arch, scale, **kwargs)
    if init_from:
        src = load(init_from)
        missing = model.load_state_dict(src.state_dict(), strict=False)
        if missing.missing_keys or missing.unexpected_keys:
            raise ValueError(f"init_from {init_from}: weights do not fit {spec_arch} {kwargs} "
                             f"(missing {missing.missing_keys[:3]}, unexpected {missing.unexpected_keys[:3]})")
    return model
