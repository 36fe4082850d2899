"""ClassSR's patch classes (its divide script): the teacher's PSNR of each training patch, split by two
thresholds into simple / medium / hard."""
from __future__ import annotations

import numpy as np


def tertile_thresholds(psnrs: np.ndarray) -> tuple[float, float]:
    """PSNR thresholds that split patches into equal thirds (as ClassSR's 27.17 / 35.15 dB did)."""
    lo, hi = np.quantile(np.asarray(psnrs, np.float64), [1 / 3, 2 / 3])
    return float(lo), float(hi)


def classify_psnr(psnrs: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 = simple (PSNR >= high), 1 = medium, 2 = hard (PSNR < low); ClassSR's divide script."""
    psnrs = np.asarray(psnrs)
    return np.where(psnrs >= high, 0, np.where(psnrs >= low, 1, 2)).astype(np.int64)


def rank_indices(n: int, rank: int, world: int) -> list[int]:
    """Rank ``rank``'s contiguous share of ``range(n)``, padded with repeats of the last item to
    ceil(n / world), so every rank scores the same count and the gathered list, cut to ``n``, is in
    order."""
    per = -(-n // world)
    own = list(range(rank * per, min((rank + 1) * per, n)))
    return own + [n - 1] * (per - len(own))
