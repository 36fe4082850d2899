"""Batch-level losses over the global batch: what a process needs of the other processes' samples.

The official CSD and PCL runs use ``nn.DataParallel`` / ``P.data_parallel``: their losses see the
outputs of the whole batch. Under DDP each process holds 1/N of it, and DDP averages the gradients of
the processes' losses. A term that mixes samples (CSD's distances to shared negatives, PCL's
discriminator loss over every real and fake logit, BatchNorm's batch statistics) is therefore computed
here from sums and gathers over the processes, with collectives whose backward sums the gradients over
the processes too. With that rule, N processes of batch B compute one process's loss on the N·B batch,
value and gradients (tested: tests/test_distributed_losses.py):

- a per-sample mean (L1, InfoNCE) is computed on the process's own samples: DDP's average of the N
  means is the mean over the N·B samples;
- a batch-level loss is computed whole on every process from :func:`all_sum` / :func:`all_gather`:
  each process's share of its gradient arrives N times (once from each process's copy of the loss),
  and DDP's average divides by N.

With one process (or no process group) every function here is the identity.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(this process's rank, the number of processes); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)  # every process's copy of the loss reached its share through the sum
        return grad


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the processes; its gradient reaches each process's ``x`` from them all."""
    return _AllSum.apply(x) if world()[1] > 1 else x


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        rank, size = world()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = rank, len(x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # gloo has no reduce-scatter: sum all, keep this process's rows
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """The processes' ``x`` (each of the same shape) concatenated along dim 0 in rank order: the global
    batch, as the loader lays it out (pipeline.data.loader); differentiable like :func:`all_sum`."""
    return _AllGather.apply(x) if world()[1] > 1 else x


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` with training-mode statistics over the global batch (SyncBatchNorm's semantics, which
    torch implements for GPUs only): N processes equal one process on the N·B batch, the official
    single-GPU run. One process, or eval mode: ``bn(x)`` itself."""
    if world()[1] == 1 or not bn.training:
        return bn(x)
    count = all_sum(x.new_tensor([x.numel() / x.shape[1]]))
    mean = all_sum(x.sum((0, 2, 3))) / count
    centred = x - mean[None, :, None, None]
    var = all_sum((centred * centred).sum((0, 2, 3))) / count  # two passes, as torch's own statistics
    if bn.track_running_stats:
        with torch.no_grad():
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked + 1)
            bn.running_mean.lerp_(mean.detach(), m)
            bn.running_var.lerp_(var.detach() * count / (count - 1), m)
            bn.num_batches_tracked += 1
    out = centred * torch.rsqrt(var + bn.eps)[None, :, None, None]
    return out * bn.weight[None, :, None, None] + bn.bias[None, :, None, None] if bn.affine else out


def global_means(values: dict[str, float]) -> dict[str, float]:
    """The mean of each logged number over the processes (the loop logs the global batch's loss, not
    rank 0's share); the same keys on every process."""
    if world()[1] == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, (t / world()[1]).tolist()))



def make_accelerator(timeout_s: int = 1800, mixed_precision: str = "no"):
    """The Accelerator of a stage: the process group's timeout from the params (``train.timeout_s``:
    a collective that waits longer fails the job, on gloo and NCCL alike; NCCL's own default is 10
    min); DeepSpeed, FSDP and the like refused (the loop needs a whole model on every rank)."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision,
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))])
    kind = accelerator.distributed_type.value
    if kind in ("DEEPSPEED", "FSDP", "MEGATRON_LM", "XLA"):
        raise ValueError(f"Accelerate runs this stage with {kind}: not supported, the training loop needs a whole "
                         f"model on every rank (validation, EMA, its own optimizer step); use DDP (MULTI_GPU)")
    return accelerator
