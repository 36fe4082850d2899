"""Split an image into overlapping patches and merge their outputs back: the one tiling routine used
by ClassSR inference and any large-image inference.

Outputs are merged a batch at a time into an on-device :class:`Canvas` (a sum and a count, added with
one ``index_add_`` per batch), so memory stays at the size of the output image however many patches
there are (a Test8K image has ~40,000 ClassSR patches: keeping every SR patch would need ~8 GB)."""
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
    patches: torch.Tensor  # (P, C, patch, patch), on the image's device
    boxes: torch.Tensor  # (P, 2) top, left of each patch (input pixels), on the image's device
    height: int  # covered input region (an image smaller than the patch is padded, then cropped back)
    width: int
    grid: tuple[int, int]  # rows and columns spanned by the patches (>= height, width when padded)


def split(img: torch.Tensor, patch: int = 32, stride: int = 28, cover_all: bool = True) -> Tiles:
    """``img``: (C, H, W) -> all patches in row-major order. A side shorter than ``patch`` is padded
    by edge replication to one patch; the canvas crops the output back to the image."""
    _, h, w = img.shape
    if h < patch or w < patch:
        img = torch.nn.functional.pad(img[None], (0, max(0, patch - w), 0, max(0, patch - h)), mode="replicate")[0]
    tops, lefts = positions(img.shape[1], patch, stride, cover_all), positions(img.shape[2], patch, stride, cover_all)
    patches = torch.stack([img[:, t:t + patch, l:l + patch] for t in tops for l in lefts])
    boxes = torch.tensor([(t, l) for t in tops for l in lefts], dtype=torch.long, device=img.device)
    grid = (tops[-1] + patch, lefts[-1] + patch)
    return Tiles(patches, boxes, min(grid[0], h), min(grid[1], w), grid)


class Canvas:
    """The overlap-average of SR patches, accumulated a batch at a time on the patches' device."""

    def __init__(self, tiles: Tiles, scale: int, channels: int, like: torch.Tensor):
        self.tiles, self.scale = tiles, scale
        self.rows, self.cols = tiles.grid[0] * scale, tiles.grid[1] * scale
        self.sum = like.new_zeros(channels * self.rows * self.cols)
        self.count = like.new_zeros(self.rows * self.cols)

    def _pixels(self, boxes: torch.Tensor, side: int) -> torch.Tensor:
        """(B, side, side) flat canvas index of every output pixel of the patches at ``boxes``."""
        r = torch.arange(side, device=boxes.device)
        rows = boxes[:, 0, None] * self.scale + r  # (B, side)
        cols = boxes[:, 1, None] * self.scale + r
        return rows[:, :, None] * self.cols + cols[:, None, :]

    def add(self, outputs: torch.Tensor, index: torch.Tensor):
        """Add ``outputs`` (B, C, p*scale, p*scale): the SR of the patches ``index`` of the tiles."""
        pixels = self._pixels(self.tiles.boxes[index], outputs.shape[-1])  # (B, q, q)
        plane = self.rows * self.cols
        channel = torch.arange(outputs.shape[1], device=pixels.device)[None, :, None, None] * plane
        self.sum.index_add_(0, (pixels[:, None] + channel).flatten(), outputs.to(self.sum.dtype).flatten())
        self.count.index_add_(0, pixels.flatten(), self.count.new_ones(pixels.numel()))

    def image(self) -> torch.Tensor:
        """(C, H*scale, W*scale): the covered region, every pixel the mean of the patches covering it."""
        out = (self.sum.view(-1, self.rows, self.cols) / self.count.view(1, self.rows, self.cols))
        return out[:, :self.tiles.height * self.scale, :self.tiles.width * self.scale]


def merge(outputs: torch.Tensor, tiles: Tiles, scale: int) -> torch.Tensor:
    """Average the SR ``outputs`` (P, C, p*scale, p*scale) of every patch of ``tiles`` into an image."""
    canvas = Canvas(tiles, scale, outputs.shape[1], outputs)
    canvas.add(outputs, torch.arange(len(outputs), device=outputs.device))
    return canvas.image()


def run_tiled(fn, img: torch.Tensor, scale: int, patch: int, stride: int, batch: int = 64,
              cover_all: bool = True) -> torch.Tensor:
    """Apply ``fn`` (a batch of LR patches -> SR patches) over overlapping tiles of ``img`` (C, H, W),
    merging each batch's outputs as it comes."""
    tiles = split(img, patch, stride, cover_all)
    canvas = None
    for i in range(0, len(tiles.patches), batch):
        out = fn(tiles.patches[i:i + batch])
        if canvas is None:
            canvas = Canvas(tiles, scale, out.shape[1], out)
        canvas.add(out, torch.arange(i, i + len(out), device=out.device))
    return canvas.image()
