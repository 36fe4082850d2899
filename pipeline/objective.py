"""What a method plugs into the training loop (:func:`pipeline.train.train`): its loss, the extra modules
it trains or freezes, what the optimizer updates, and which network is validated and delivered.

Kept apart from the loop so that a method (``pipeline/methods/``) and the stages that only run a
method's inference do not depend on the loop's code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Objective:
    """L1 between SR and HR, times ``rgb_range`` (the official loss scale of a 0-255 run; 1 for BasicSR's
    [0, 1] runs, ``train.rgb_range`` must agree); a method overrides what differs.

    - ``modules()`` / ``optimizers()``: extra parts (e.g. a discriminator and its optimizer) that the loop
      prepares with Accelerate and saves in the checkpoint; ``prepared(**parts)`` then hands the
      prepared ones back, by the same names.
    - ``parameters(model)``: what the model's optimizer updates (default: every parameter); the rest
      is frozen for the run.
    - ``before_step(...)``: runs once per optimizer step before the model's loss (e.g. a discriminator
      update); returns values to log.
    - ``deployed(model)``: the network that is validated and delivered (e.g. CSD's slim student).
    """

    rgb_range = 1.0  # loss scale: the official loss of a 0-255 run is 255 x the [0, 1] L1 (pipeline.train.adam)

    def __init__(self, rgb_range: float = 1.0):
        self.rgb_range = rgb_range

    def modules(self) -> dict[str, nn.Module]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def prepared(self, **parts):
        """The prepared ``modules()`` and ``optimizers()``, by name."""

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(model.parameters())

    def before_step(self, accelerator, model, lr_img, hr_img, step: int) -> dict:
        return {}

    def loss(self, model, lr_img, hr_img, step: int) -> tuple[torch.Tensor, dict]:
        l1 = F.l1_loss(model(lr_img), hr_img)
        return self.rgb_range * l1, {"l1": l1.detach()}

    def deployed(self, model: nn.Module) -> nn.Module:
        return model
