"""The training patch stream: an endless, seeded, resumable sequence of augmented LR/HR batches.

Optimizer step ``k`` trains on a global batch of ``batch_size x processes x grad_accum`` samples, and
sample ``i`` of it depends only on ``(seed, k, i)``: which sub-image, where the patch is cropped, the flip
and rotation. Each process takes its own slice of every micro-batch. So

- a run resumed at step k continues with exactly the batches an uninterrupted run would have seen, on
  any number of loader workers;
- N processes (on one machine or several) train on exactly the samples one process with N times the
  batch sees, and ``grad_accum`` 2 x batch 8 on exactly batch 16's: the distributed and accumulated
  runs compute the single-process step on the whole batch, up to float rounding.

Counting is in iterations (steps), never epochs.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.cores import worker_count


def augment(lr: np.ndarray, hr: np.ndarray, rng: np.random.Generator):
    """Random horizontal flip, vertical flip and 90-degree rotation, applied identically to both."""
    hflip, vflip, rot = rng.random(3) < 0.5
    if hflip:
        lr, hr = lr[:, ::-1], hr[:, ::-1]
    if vflip:
        lr, hr = lr[::-1], hr[::-1]
    if rot:
        lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
    return lr, hr


def random_patch(lr: np.ndarray, hr: np.ndarray, lr_patch: int, scale: int, rng: np.random.Generator):
    h, w = lr.shape[:2]
    if h < lr_patch or w < lr_patch:
        raise ValueError(f"LR sub-image {w}x{h} is smaller than lr_patch {lr_patch}")
    top, left = int(rng.integers(0, h - lr_patch + 1)), int(rng.integers(0, w - lr_patch + 1))
    # compact copies first: the sources are views into whole stored images, so flipping and rotating
    # the small patch afterwards stays in cache
    lr = np.ascontiguousarray(lr[top:top + lr_patch, left:left + lr_patch])
    hr = np.ascontiguousarray(hr[top * scale:(top + lr_patch) * scale, left * scale:(left + lr_patch) * scale])
    return lr, hr


def _to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)


class PatchBatches(Dataset):
    """Index = micro-step (optimizer step x grad_accum + micro-batch); item = this process's (lr, hr)
    share of it, ``batch_size`` samples as float NCHW in [0, 1]."""

    def __init__(self, shards, batch_size: int, lr_patch: int, seed: int, indices=None,
                 augment_data: bool = True, all_patches_until: int = 0):
        """``indices`` restricts sampling to a subset (e.g. one ClassSR class) from step
        ``all_patches_until`` on; earlier steps draw from every patch (a warm-up)."""
        self.shards, self.batch_size, self.lr_patch = shards, batch_size, lr_patch
        self.seed, self.augment = seed, augment_data
        self.rank, self.world, self.accum = 0, 1, 1
        self.all_indices = np.arange(len(shards))
        self.indices = self.all_indices if indices is None else np.asarray(indices)
        self.all_patches_until = all_patches_until
        if len(self.indices) == 0:
            raise ValueError("the training set is empty")

    def __len__(self):
        return 2**62  # endless; the sampler decides which steps are drawn

    def split(self, rank: int, world: int, accum: int) -> "PatchBatches":
        """Make this the share of process ``rank`` of ``world``, with ``accum`` micro-batches a step."""
        if not 0 <= rank < world or accum < 1:
            raise ValueError(f"rank {rank} of {world} processes, grad_accum {accum}")
        self.rank, self.world, self.accum = rank, world, accum
        return self

    def sample_ids(self, micro: int) -> range:
        """The positions in its step's global batch of micro-step ``micro``'s samples on this process:
        micro-batches in order, each split across the processes by rank."""
        part = micro % self.accum
        first = (part * self.world + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def __getitem__(self, micro: int):
        step = int(micro) // self.accum
        pool = self.all_indices if step < self.all_patches_until else self.indices
        lrs, hrs = [], []
        for i in self.sample_ids(int(micro)):
            rng = np.random.default_rng([self.seed, step, i])
            lr, hr = self.shards.pair(pool[rng.integers(0, len(pool))])
            lr, hr = random_patch(lr, hr, self.lr_patch, self.shards.scale, rng)
            if self.augment:
                lr, hr = augment(lr, hr, rng)
            lrs.append(np.ascontiguousarray(lr))
            hrs.append(np.ascontiguousarray(hr))
        return _to_tensor(lrs), _to_tensor(hrs)


def make_loader(batches: PatchBatches, start_step: int, max_steps: int, num_workers: int) -> DataLoader:
    """Batches for steps [start_step, max_steps) in order, prefetched by ``num_workers`` processes (at
    most this process's cores: :func:`pipeline.cores.worker_count`; the batches are the same)."""
    num_workers = worker_count(num_workers)
    # its own generator: a DataLoader draws its workers' base seed from torch's global generator
    # otherwise, which a method's own noise (GhostSR's Gumbel) also draws from, so a resumed run's noise
    # would be one draw off the uninterrupted run's (the batches depend on neither)
    return DataLoader(batches, batch_size=None, sampler=range(start_step, max_steps), num_workers=num_workers,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None,
                      generator=torch.Generator().manual_seed(0))
