"""Split an image into overlapping patches and merge their outputs back: the one tiling routine used
by ClassSR inference and any large-image inference."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def positions(length: int, patch: int, stride: int, cover_all: bool = True) -> list[int]:
    """Patch starts along one axis. ``cover_all`` adds a last patch flush with the far edge (the whole
    image is covered); ``False`` is ClassSR's own grid, which drops the remainder."""
    if length < patch:
        raise ValueError(f"image side {length} is smaller than the patch {patch}")
    starts = list(range(0, length - patch + 1, stride))
    if cover_all and starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


@dataclass
class Tiles:
    patches: torch.Tensor  # (P, C, patch, patch)
    boxes: list[tuple[int, int]]  # top, left of each patch (input pixels)
    height: int  # covered input region (an image smaller than the patch is padded, then cropped back)
    width: int
    grid: tuple[int, int]  # rows and columns spanned by the patches (>= height, width when padded)


def split(img: torch.Tensor, patch: int = 32, stride: int = 28, cover_all: bool = True) -> Tiles:
    """``img``: (C, H, W) -> all patches in row-major order. A side shorter than ``patch`` is padded
    by edge replication to one patch; :func:`merge` crops the output back to the image."""
    _, h, w = img.shape
    if h < patch or w < patch:
        img = torch.nn.functional.pad(img[None], (0, max(0, patch - w), 0, max(0, patch - h)), mode="replicate")[0]
    tops, lefts = positions(img.shape[1], patch, stride, cover_all), positions(img.shape[2], patch, stride, cover_all)
    boxes = [(t, l) for t in tops for l in lefts]
    patches = torch.stack([img[:, t:t + patch, l:l + patch] for t, l in boxes])
    grid = (tops[-1] + patch, lefts[-1] + patch)
    return Tiles(patches, boxes, min(grid[0], h), min(grid[1], w), grid)


def merge(outputs: torch.Tensor, tiles: Tiles, scale: int) -> torch.Tensor:
    """Average overlapping ``outputs`` (P, C, patch*scale, patch*scale) into a (C, H*scale, W*scale)
    image of the covered region; every output pixel is the mean of the patches covering it."""
    p = outputs.shape[-1]
    gh, gw = tiles.grid
    canvas = outputs.new_zeros(outputs.shape[1], gh * scale, gw * scale)
    count = outputs.new_zeros(1, gh * scale, gw * scale)
    for out, (t, l) in zip(outputs, tiles.boxes):
        canvas[:, t * scale:t * scale + p, l * scale:l * scale + p] += out
        count[:, t * scale:t * scale + p, l * scale:l * scale + p] += 1
    return (canvas / count)[:, :tiles.height * scale, :tiles.width * scale]


def run_tiled(fn, img: torch.Tensor, scale: int, patch: int, stride: int, batch: int = 64,
              cover_all: bool = True) -> torch.Tensor:
    """Apply ``fn`` (a batch of LR patches -> SR patches) over overlapping tiles of ``img`` (C, H, W)."""
    tiles = split(img, patch, stride, cover_all)
    outs = torch.cat([fn(tiles.patches[i:i + batch]) for i in range(0, len(tiles.patches), batch)])
    return merge(outs, tiles, scale)
