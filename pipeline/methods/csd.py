"""CSD (Wang et al., "Towards Compact Single Image Super-Resolution via Contrastive Self-distillation",
IJCAI 2021): contrastive self-distillation with channel splitting.

- Channel splitting (CSSR-Net, the student sharing the teacher's weights) is an architecture
  operation: :mod:`pipeline.models.slim` (``forward_at_width``, ``slim``, the width rule), also used by
  the L1 student baseline, which must not depend on CSD's loss.
- The contrastive loss: CL = sum_j lambda_j * d(T_j, S_j) / (sum_k d(N_kj, S_j) + 1e-7) in a frozen
  embedding: ``vgg19`` (the paper: VGG19 relu1_1..relu5_1, ImageNet weights in torchvision's format,
  fed 0-255 unnormalised as CSD does) or ``teacher`` (download-free: the frozen pretrained teacher's own
  intermediate features on [0, 1] images).
- :class:`CSDObjective`: the training objective, on the official loss scale (L1 x rgb_range); its
  deployed network is the slim student.

Over several processes the negatives and the distances are the global batch's, as CSD's DataParallel
loss sees them (:mod:`pipeline.distributed`): ``neg_num`` may exceed a process's share of the batch.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distributed import all_gather, all_sum
from pipeline.models.slim import forward_at_width, slim
from pipeline.objective import Objective


VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
VGG19_SLICES = [(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)]  # ends at relu1_1 ... relu5_1
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"  # torchvision's ImageNet weights


def vgg19_features() -> nn.Sequential:
    layers, c = [], 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


def load_vgg19_state(path: str, param_name: str) -> dict:
    """torchvision-format VGG19 weights from ``path`` (.safetensors or .pth, never unpickled), or
    downloaded into the torch cache when ``path`` is empty and the network is reachable."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{param_name}: VGG19 weights file '{path}' not found")
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        return torch.load(p, map_location="cpu", weights_only=True)
    try:
        return torch.hub.load_state_dict_from_url(VGG19_URL, map_location="cpu", progress=True)
    except Exception as e:
        raise FileNotFoundError(f"{param_name}: no VGG19 weights file given and the download failed ({e}); "
                                f"set {param_name} to a local torchvision vgg19 state dict, or use the "
                                "download-free embedding 'teacher'") from e


class FeatureStages(nn.Module):
    """A frozen network cut into consecutive stages; forward returns each stage's output."""

    def __init__(self, stages: list[nn.Module], input_scale: float = 1.0):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.input_scale = input_scale
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    def forward(self, x):
        feats, h = [], x * self.input_scale
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


def vgg19_embedding(path: str, param_name: str) -> FeatureStages:
    features = vgg19_features()
    state = load_vgg19_state(path, param_name)
    features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    return FeatureStages([features[a:b] for a, b in VGG19_SLICES], input_scale=255.0)


def teacher_embedding(teacher: nn.Module, num_stages: int = 3) -> FeatureStages:
    """The frozen teacher's head and its first ``num_stages - 1`` residual blocks, one stage each, each
    block at half the resolution of the stage before (a 2x2 average pool ahead of it).

    Shaped like VGG's relu1_1 ... relu5_1 (one stage per resolution, each pooled by 2): the embedding
    runs at HR size on the student, the teacher and every negative, and the teacher's blocks were
    trained on LR-scale features. At full resolution the two blocks made CSD's step 2.4x its control's
    (``bench/csd_step.py``, the whole HR 64 patch, batch 8, 8 negatives, 2 threads); pooled, 1.6x."""
    t = copy.deepcopy(teacher)
    if hasattr(t, "conv_first"):  # MSRResNet
        head = nn.Sequential(t.conv_first, nn.LeakyReLU(0.1))
    elif hasattr(t, "head") and hasattr(t, "sub_mean"):  # EDSR, RCAN
        head = nn.Sequential(t.sub_mean, t.head)
    else:
        raise ValueError(f"teacher embedding: no feature extractor known for {type(t).__name__}; use vgg19")
    blocks = [b for b in t.body.children() if not isinstance(b, nn.Conv2d)]
    if len(blocks) < num_stages - 1:
        raise ValueError(f"teacher embedding: {num_stages} stages need {num_stages - 1} residual blocks, "
                         f"the teacher has {len(blocks)}")
    return FeatureStages([head] + [nn.Sequential(nn.AvgPool2d(2), b) for b in blocks[:num_stages - 1]])


def distance_sum(s: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """CSD's d_sn times S's element count: sum_k sum |N_k - S| over S's elements, each negative N_k
    broadcast over S's batch (a sum, so that the processes' shares add up: :mod:`pipeline.distributed`).

    As one L1 ``cdist`` between the flattened samples and negatives (the same value and gradient as
    autograd through the per-negative formula: tested), 1.6x faster on the CPU than a loop over the
    negatives and without a graph per negative."""
    return torch.cdist(s.flatten(1), negatives.flatten(1), p=1).sum()


class ContrastiveLoss(nn.Module):
    def __init__(self, embedding: FeatureStages, weights: list[float]):
        super().__init__()
        if len(weights) != len(embedding.stages):
            raise ValueError(f"contrastive loss: {len(weights)} weights for {len(embedding.stages)} feature stages")
        self.embedding, self.weights = embedding, weights

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """CL of the global batch: ``student`` and ``teacher`` are this process's samples, ``negatives``
        the global batch's (the same on every process). Each distance is a mean over the global batch,
        summed over the processes (:mod:`pipeline.distributed`), as CSD's DataParallel loss sees it."""
        fs = self.embedding(student)
        with torch.no_grad():
            ft = self.embedding(teacher.detach())
            fn = self.embedding(negatives.detach())
        loss = student.new_zeros(())
        for w, s, t, n in zip(self.weights, fs, ft, fn):
            count = all_sum(s.new_tensor(float(s.numel())))
            d_ts = all_sum((t - s).abs().sum()) / count
            # sum over negatives of the mean distance (CSD: negatives shared by the whole batch)
            d_sn = all_sum(distance_sum(s, n)) / count
            loss = loss + w * d_ts / (d_sn + 1e-7)
        return loss


def same_window(crop: int, generator: torch.Generator, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same random ``crop`` x ``crop`` window of each batch of images (all of one size); all of each
    when ``crop`` is 0 or not smaller than them."""
    h, w = images[0].shape[-2:]
    if crop <= 0 or crop >= min(h, w):
        return images
    top = int(torch.randint(h - crop + 1, (1,), generator=generator))
    left = int(torch.randint(w - crop + 1, (1,), generator=generator))
    return tuple(x[..., top:top + crop, left:left + crop] for x in images)


class CSDObjective(Objective):
    """rgb_range (L1(S) + t_lambda L1(T)) + contra_lambda CL(S; T, negatives): teacher (width 1) and student
    (width w, the same weights) train together; the deliverable is the slim student.

    ``embed_crop`` > 0 (a departure, for CPU budgets; CSD embeds the whole HR patch): the contrastive loss
    sees one random ``embed_crop``^2 window of each HR-size output, the same window of S, T and the
    negatives, at full resolution; the L1 terms see the whole patch.

    The official code trains on 0-255 images, so its L1 terms are rgb_range (255) times ours on [0, 1]
    while CL, a ratio of distances in an embedding fed the same 0-255 images, is unchanged: scaling our
    L1 by rgb_range gives the official loss (its balance, and the weights' gradients); the biases' step
    is matched by the optimizer (lr / rgb_range: :func:`pipeline.train.adam`, ``train.rgb_range``).
    ``contra_lambda`` 0 is the paper's own control (its "J-T1" rows): the embedding is then not run."""

    def __init__(self, width: float, contrastive: ContrastiveLoss, scale: int, neg_num: int, t_lambda: float,
                 contra_lambda: float, rgb_range: float = 255.0, embed_crop: int = 0):
        self.width, self.contrastive, self.scale, self.neg_num = width, contrastive, scale, neg_num
        self.t_lambda, self.contra_lambda, self.rgb_range = t_lambda, contra_lambda, rgb_range
        self.embed_crop = embed_crop

    def total(self, student_sr, teacher_sr, hr_img, negatives, generator: torch.Generator | None = None):
        """The loss of one batch from its outputs (all on [0, 1]), and the logged terms; ``generator``
        draws the embedding's window (``embed_crop``)."""
        l1_s, l1_t = F.l1_loss(student_sr, hr_img), F.l1_loss(teacher_sr, hr_img)
        loss = self.rgb_range * (l1_s + self.t_lambda * l1_t)
        if not self.contra_lambda:
            return loss, {"l1": l1_s.detach(), "l1_teacher": l1_t.detach()}
        windows = same_window(self.embed_crop, generator or torch.Generator(), student_sr, teacher_sr, negatives)
        cl = self.contrastive(*windows)
        loss = loss + self.contra_lambda * cl
        return loss, {"l1": l1_s.detach(), "l1_teacher": l1_t.detach(), "contrastive": cl.detach()}

    def loss(self, model, lr_img, hr_img, step):
        net = getattr(model, "module", model)  # the shared weights, unwrapped from DDP
        self.contrastive.to(lr_img.device)
        teacher_sr = model(lr_img)
        student_sr = forward_at_width(net, lr_img, self.width)
        # negatives: the first neg_num LR images of the global batch, permuted, bicubic-upsampled (CSD's
        # DataParallel loss sees the whole batch); the same on every process
        g = torch.Generator().manual_seed(step)
        idx = torch.randperm(self.neg_num, generator=g).to(lr_img.device)
        with torch.no_grad():
            batch_lr = all_gather(lr_img)
        if len(batch_lr) < self.neg_num:
            raise ValueError(f"CSD: neg_num {self.neg_num} negatives from a global batch of {len(batch_lr)}")
        negatives = F.interpolate(batch_lr[idx], scale_factor=self.scale, mode="bicubic")  # unclamped, as CSD
        return self.total(student_sr, teacher_sr, hr_img, negatives, g)

    def deployed(self, model):
        return slim(getattr(model, "module", model), self.width).to(next(model.parameters()).device).eval()
