"""ClassSR (Kong et al., CVPR 2021): a Class-Module routes each 32x32 LR patch to one of three SR
branches of increasing cost. Training blends the branches by the class probabilities; inference picks
one branch per patch (patch-wise inference with a FLOPs budget: pipeline.upscale; the training objective
and losses: pipeline.methods.classsr)."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.common import scale_init


class Classifier(nn.Module):
    """ClassSR's Class-Module (60,035 params): strided 4x4 conv, 1x1 convs, global average, linear."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.1, inplace=True)  # noqa: E731
        self.CondNet = nn.Sequential(nn.Conv2d(3, 128, 4, 4), act(), nn.Conv2d(128, 128, 1), act(),
                                     nn.Conv2d(128, 128, 1), act(), nn.Conv2d(128, 128, 1), act(),
                                     nn.Conv2d(128, 32, 1))
        self.fc = nn.Linear(32, num_classes)
        scale_init([self.CondNet], 0.1)  # only CondNet is initialised this way in the official code

    def forward(self, x):
        return self.fc(self.CondNet(x).mean(dim=(2, 3)))


class ClassSR(nn.Module):
    """``branches`` ordered simple -> medium -> hard (cheapest first)."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.classifier = Classifier(len(branches))
        self.branches = nn.ModuleList(branches)

    def forward(self, x, return_probs: bool = False, return_branches: bool = False):
        """Training form: the probability-weighted sum of every branch's output; optionally also the
        probabilities, and each branch's own output."""
        probs = torch.softmax(self.classifier(x), dim=1)
        srs = [branch(x) for branch in self.branches]
        sr = sum(probs[:, i, None, None, None] * s for i, s in enumerate(srs))
        if return_branches:
            return sr, probs, srs
        return (sr, probs) if return_probs else sr
