"""The training patch stream: an endless, seeded, resumable sequence of augmented LR/HR batches.

Batch number ``k`` of rank ``r`` depends only on ``(seed, r, k)``: which sub-images, where the patch is
cropped, and the flip / rotation. So a run resumed at step k continues with exactly the batches an
uninterrupted run would have seen, on any number of loader workers, and ranks never repeat each
other's stream. Counting is in iterations (steps), never epochs.
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
    """Index = global step; item = that step's (lr, hr) batch for this rank, as float NCHW in [0, 1]."""

    def __init__(self, shards, batch_size: int, lr_patch: int, seed: int, rank: int = 0, indices=None,
                 augment_data: bool = True, all_patches_until: int = 0):
        """``indices`` restricts sampling to a subset (e.g. one ClassSR class) from step
        ``all_patches_until`` on; earlier steps draw from every patch (a warm-up)."""
        self.shards, self.batch_size, self.lr_patch = shards, batch_size, lr_patch
        self.seed, self.rank, self.augment = seed, rank, augment_data
        self.all_indices = np.arange(len(shards))
        self.indices = self.all_indices if indices is None else np.asarray(indices)
        self.all_patches_until = all_patches_until
        if len(self.indices) == 0:
            raise ValueError("the training set is empty")

    def __len__(self):
        return 2**62  # endless; the sampler decides which steps are drawn

    def __getitem__(self, step: int):
        rng = np.random.default_rng([self.seed, self.rank, int(step)])
        pool = self.all_indices if step < self.all_patches_until else self.indices
        picks = pool[rng.integers(0, len(pool), self.batch_size)]
        lrs, hrs = [], []
        for i in picks:
            lr, hr = self.shards.pair(i)
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
    return DataLoader(batches, batch_size=None, sampler=range(start_step, max_steps), num_workers=num_workers,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None)
