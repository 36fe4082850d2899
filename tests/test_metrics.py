"""PSNR/SSIM parity with BasicSR 1.4.2 (fixtures generated from its psnr_ssim.py) and cost helpers."""
import json
from pathlib import Path

import pytest
import torch

from photos import degraded_pair
from pipeline import metrics

ROWS = json.loads((Path(__file__).parent / "fixtures" / "metrics_basicsr.json").read_text())


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['photo']}-{r['kind']}-c{r['crop_border']}-y{int(r['y_channel'])}")
def test_psnr_ssim_equal_basicsr(row):
    hr, deg = degraded_pair(row["photo"], row["kind"])
    assert abs(metrics.psnr(hr, deg, row["crop_border"], row["y_channel"]) - row["psnr"]) <= 1e-6
    assert abs(metrics.ssim(hr, deg, row["crop_border"], row["y_channel"]) - row["ssim"]) <= 1e-6


def test_psnr_identical_is_inf():
    hr, _ = degraded_pair("chelsea", "noise")
    assert metrics.psnr(hr, hr, 4) == float("inf")


def test_batched_torch_psnr_matches_numpy():
    pairs = [degraded_pair(n, "noise") for n in ["chelsea", "chelsea"]]
    hr = torch.stack([metrics.uint8_to_tensor(h)[0] for h, _ in pairs])
    deg = torch.stack([metrics.uint8_to_tensor(d)[0] for _, d in pairs])
    batched = metrics.psnr_batch(deg, hr, crop_border=4)
    ref = metrics.psnr(pairs[0][0], pairs[0][1], 4)
    assert torch.allclose(batched, torch.tensor([ref, ref], dtype=batched.dtype), atol=1e-3)


def test_macs_of_fsrcnn_match_classsr_accounting():
    from pipeline.models import build

    macs = metrics.count_macs(build("fsrcnn", 4, d=56), (1, 3, 32, 32))
    assert abs(2 * macs / 1e6 - 467.88) < 0.5  # ClassSR: 468M FLOPs per 32x32 patch, deconv on output grid
