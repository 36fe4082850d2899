"""ClassSR (Kong et al., CVPR 2021) as a method: the training side.

- :func:`assemble`: the three trained branches and a fresh Class-Module in one model; :func:`with_branch`
  swaps one branch (e.g. for its Ghost version).
- :class:`ClassSRObjective`: w1 L1 + w2 class loss + w3 average loss on the probability-weighted sum of
  the branches, plus the optional routing loss (not in ClassSR) toward the cheapest branch that is good
  enough for each patch; phase ``classifier`` trains the Class-Module only (branches frozen).

The PSNR classes of the training patches (ClassSR's divide script) are data preparation:
:mod:`pipeline.data.classes`. Inference (patch-wise, each branch once on the batch of its patches, with a FLOPs budget) is part of
the one LR->SR entry point, :func:`pipeline.upscale.upscale`: every stage validates through it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import models
from pipeline.models.common import scale_init
from pipeline.objective import Objective


def assemble(branch_folders: list[str], classifier_init_scale: float = 0.1, seed: int = 0) -> nn.Module:
    """A ClassSR model holding the trained branches (cheapest first) and a fresh Class-Module, seeded and
    initialised as Kaiming x ``classifier_init_scale`` (ClassSR: 0.1)."""
    configs = [models.read_config(f) for f in branch_folders]
    torch.manual_seed(seed)
    model = models.build("classsr", configs[0]["scale"], branch_arch=configs[0]["arch"],
                         branches=[c["kwargs"] for c in configs])
    scale_init([model.classifier.CondNet], classifier_init_scale)
    for branch, folder in zip(model.branches, branch_folders):
        branch.load_state_dict(models.load(folder).state_dict())
    return model


def with_branch(classsr: nn.Module, index: int, branch: nn.Module) -> nn.Module:
    """A copy of ``classsr`` whose branch ``index`` is ``branch`` (any saved architecture)."""
    branches = [branch if i == index else b for i, b in enumerate(classsr.branches)]
    composed = models.build("classsr", classsr.config["scale"], branch_arch=classsr.config["kwargs"]["branch_arch"],
                            branch_archs=[b.config["arch"] for b in branches],
                            branches=[b.config["kwargs"] for b in branches])
    state = {f"classifier.{k}": v for k, v in classsr.classifier.state_dict().items()}
    for i, b in enumerate(branches):
        state.update({f"branches.{i}.{k}": v for k, v in b.state_dict().items()})
    composed.load_state_dict(state)
    return composed


def class_loss(probs: torch.Tensor) -> torch.Tensor:
    """ClassSR's Class-Loss as in the code: mean over samples of (M-1) - sum_{i<j} |p_i - p_j|."""
    m = probs.shape[1]
    diffs = sum((probs[:, i] - probs[:, j]).abs() for i in range(m) for j in range(i + 1, m))
    return (m - 1 - diffs).mean()


def average_loss(probs: torch.Tensor) -> torch.Tensor:
    """ClassSR's Average-Loss with the code's normaliser: sum_c |sum_i p_ic - n/M| / ((n/M) * 4)."""
    n, m = probs.shape
    target = n / m
    return (probs.sum(dim=0) - target).abs().sum() / (target * 4)


@torch.no_grad()
def cheapest_adequate_branch(srs: list[torch.Tensor], hr: torch.Tensor, tolerance_db: float) -> torch.Tensor:
    """Per patch, the first (cheapest) branch whose PSNR is within ``tolerance_db`` of the best one's."""
    mse = torch.stack([(s.clamp(0, 1) - hr).pow(2).flatten(1).mean(1) for s in srs], 1).clamp_min(1e-10)
    psnr = -10 * torch.log10(mse)
    good = psnr >= psnr.max(1, keepdim=True).values - tolerance_db
    return good.float().argmax(1)


class ClassSRObjective(Objective):
    """ClassSR's loss; ``phase='classifier'`` optimises the Class-Module only (fix_SR_module)."""

    def __init__(self, loss_weights: list[float], routing_weight: float = 0.0, routing_tolerance_db: float = 0.1,
                 phase: str = "joint"):
        self.w, self.routing, self.tolerance, self.phase = loss_weights, routing_weight, routing_tolerance_db, phase

    def parameters(self, model):
        return list(model.classifier.parameters()) if self.phase == "classifier" else list(model.parameters())

    def loss(self, model, lr_img, hr_img, step):
        sr, probs, srs = model(lr_img, return_branches=True)
        l1, lc, la = F.l1_loss(sr, hr_img), class_loss(probs), average_loss(probs)
        loss = self.w[0] * l1 + self.w[1] * lc + self.w[2] * la
        logs = {"l1": l1.detach(), "class_loss": lc.detach(), "average_loss": la.detach()}
        if self.routing > 0:
            target = cheapest_adequate_branch(srs, hr_img, self.tolerance)
            routing = F.nll_loss(torch.log(probs + 1e-8), target)
            loss = loss + self.routing * routing
            logs["routing_loss"] = routing.detach()
        return loss, logs
