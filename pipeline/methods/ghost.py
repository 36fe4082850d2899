"""GhostSR (Nie et al., TMLR 2022) as a method: turn a pretrained network's residual-block convs into
Ghost modules, fine-tune the shifts with an annealed temperature, export the deployment form.

- :func:`convert`: the intrinsic filters of each layer are chosen by k-means over its pretrained
  filters (the member nearest each centroid is kept, with its pretrained weights); each remaining
  channel becomes a ghost of an intrinsic channel. Outputs keep the source's channel order, so the
  converted network starts close to the source (exactly equal at ratio 1).
- :class:`AnnealedGhost`: the training objective (L1) with the Gumbel temperature decayed
  exponentially from ``tau_start`` to ``tau_end``.
- :func:`export`: the deployment form (:func:`pipeline.models.ghost.reparameterize`) with the
  ``config.json`` that rebuilds it (``models.build('ghost', ...)``).

The layer itself (GhostConv, shifts, reparameterize) is an architecture: :mod:`pipeline.models.ghost`.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from pipeline import models
from pipeline.models.ghost import LAYER_RULES, ghost_layers, ghost_modules, ghostify, reparameterize
from pipeline.objective import Objective


def kmeans(points: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; returns for each cluster the index of the point nearest
    its centroid (k distinct indices)."""
    g = torch.Generator().manual_seed(seed)
    x = points.double()
    n = len(x)
    if k >= n:
        return torch.arange(n)
    c = x.new_empty(k, x.shape[1])
    c[0] = x[torch.randint(n, (1,), generator=g)]
    nearest = torch.cdist(x, c[:1]).squeeze(1) ** 2  # squared distance to the nearest centre so far
    for j in range(1, k):
        weights = nearest / nearest.sum() if nearest.sum() > 0 else torch.ones(n)
        c[j] = x[torch.multinomial(weights, 1, generator=g)]
        nearest = torch.minimum(nearest, torch.cdist(x, c[j:j + 1]).squeeze(1) ** 2)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k)[:, None]
        new = torch.where(counts > 0, torch.zeros_like(c).index_add_(0, assign, x) / counts.clamp_min(1), c)
        if torch.allclose(new, c):
            break
        c = new
    # nearest member per cluster; an empty cluster takes the nearest unused point
    order = torch.argsort(torch.cdist(c, x), dim=1).tolist()
    chosen: list[int] = []
    for j in range(k):
        chosen.append(next(i for i in order[j] if i not in chosen))
    return torch.tensor(chosen)


@torch.no_grad()
def plan_layer(conv: nn.Conv2d, ratio: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """k-means over the pretrained filters: intrinsic output positions, and each ghost's source."""
    oup = conv.out_channels
    n_intr = math.ceil(oup * ratio)
    filters = conv.weight.detach().flatten(1)
    intrinsic = kmeans(filters, n_intr, seed=seed).tolist()
    ghost_pos = sorted(set(range(oup)) - set(intrinsic))
    if not ghost_pos:
        return intrinsic, []
    # Pair each ghost with an intrinsic filter close to its own pretrained filter (a minimum-cost matching;
    # below ratio 0.5 each intrinsic serves up to ceil(ghosts / intrinsics) ghosts, GhostSR's x1.repeat).
    from scipy.optimize import linear_sum_assignment

    reps = math.ceil(len(ghost_pos) / len(intrinsic))
    cost = torch.cdist(filters[ghost_pos].double(), filters[intrinsic].double()).repeat(1, reps).numpy()
    rows, cols = linear_sum_assignment(cost)
    src = [int(c) % len(intrinsic) for _, c in sorted(zip(rows, cols))]
    if reps > 1:
        return intrinsic, src
    # One ghost per intrinsic: list the paired intrinsics first, so ghost g shifts intrinsic feature g and
    # the ghosts come from a contiguous slice (no gather, as GhostSR's concat[x, shift(x)]).
    paired = [intrinsic[c] for c in src]
    intrinsic = paired + [i for i in intrinsic if i not in paired]
    return intrinsic, list(range(len(ghost_pos)))


def convert(model: nn.Module, ratio: float = 0.5, layers: list[str] | None = None, d: int = 1,
            mode: str = "gumbel", per_channel: bool = False, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose ``layers`` (conv names, or one rule of :func:`ghost_layers`; default: the
    body convs of every residual block, as GhostSR's EDSR) are GhostConvs initialised from their
    pretrained weights, shifts at the identity.

    Raises when no layer can be converted (e.g. FSRCNN or CARN-M have no residual-block convs)."""
    model = copy.deepcopy(model)
    if not layers:
        layers = ghost_layers(model)
    elif len(layers) == 1 and layers[0] in LAYER_RULES:
        layers = ghost_layers(model, layers[0])
    if not layers:
        raise ValueError(f"ghost: {type(model).__name__} has no residual-block convs to convert; name the convs "
                         "to convert in the params' `layers`")
    plan, weights = {}, {}
    for name in layers:
        conv = model.get_submodule(name)
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"ghost: {name} is not a Conv2d")
        intrinsic, src = plan_layer(conv, ratio, seed)
        plan[name] = {"intrinsic": intrinsic, "ghost_src": src}
        weights[name] = (conv.weight[intrinsic], None if conv.bias is None else conv.bias[intrinsic])
    ghostify(model, plan, d, mode, per_channel)
    with torch.no_grad():
        for name, ghost in zip(plan, ghost_modules(model)):
            weight, bias = weights[name]
            ghost.primary.weight.copy_(weight)
            if bias is not None:
                ghost.primary.bias.copy_(bias)
            ghost.set_identity_shift()  # start as "ghost = its cluster's intrinsic feature"
    return model


class AnnealedGhost(Objective):
    """L1, with the Gumbel temperature decayed exponentially from tau_start to tau_end over the run, and
    (mode 'ste') the released noise factor 0.97^(epoch-1), an epoch being ``noise_epoch_steps`` steps;
    0 keeps the released training script's factor 1 (it never advances the modules' epoch)."""

    def __init__(self, tau_start: float, tau_end: float, max_steps: int, noise_epoch_steps: int = 0,
                 rgb_range: float = 1.0):
        super().__init__(rgb_range)
        self.tau_start, self.tau_end, self.max_steps = tau_start, tau_end, max_steps
        self.noise_epoch_steps = noise_epoch_steps

    def before_step(self, accelerator, model, lr_img, hr_img, step):
        frac = step / max(self.max_steps - 1, 1)
        tau = self.tau_start * (self.tau_end / self.tau_start) ** frac
        noise_scale = 0.97 ** (step // self.noise_epoch_steps) if self.noise_epoch_steps else 1.0
        for m in ghost_modules(model):
            m.tau, m.noise_scale = tau, noise_scale
        return {"tau": tau}


def export(model: nn.Module, source_config: dict, ratio: float, d: int, mode: str, per_channel: bool) -> nn.Module:
    """The deployment form of a fine-tuned Ghost network, built from the config that records it (its
    source architecture, plan and fixed shifts) and holding its reparameterized weights."""
    shifts = {n: [list(o) for o in m.offsets()] for n, m in zip(model.ghost_plan, ghost_modules(model))}
    config = {"arch": "ghost", "scale": source_config["scale"], "kwargs": {
        "source": {"arch": source_config["arch"], "kwargs": source_config["kwargs"]}, "ratio": ratio, "d": d,
        "mode": mode, "per_channel": per_channel, "plan": model.ghost_plan, "shifts": shifts}}
    exported = models.build("ghost", config["scale"], **config["kwargs"])
    exported.load_state_dict(reparameterize(copy.deepcopy(model)).state_dict())
    return exported.eval()


def fine_tune(source: nn.Module, cfg, batches, stage: str, data_info: dict, validate):
    """GhostSR on ``source`` (a saved model, with its config) under ``cfg`` (a GhostMethod params section):
    convert, fine-tune with annealed shifts on ``batches``, export. Returns (exported model, TrainResult)."""
    from pipeline.train import train

    model = convert(source, cfg.ratio, cfg.layers or None, d=cfg.d, mode=cfg.mode, per_channel=cfg.per_channel,
                    seed=cfg.kmeans_seed)
    objective = AnnealedGhost(cfg.tau_start, cfg.tau_end, cfg.train.max_steps, cfg.noise_epoch_steps,
                              cfg.train.rgb_range)
    result = train(model, cfg.train, batches, objective, stage=stage, params=cfg, ckpt_dir=f"checkpoints/{stage}",
                   data_info=data_info, validate=validate, leave_run_open=True)
    return export(result.model, source.config, cfg.ratio, cfg.d, cfg.mode, cfg.per_channel), result
