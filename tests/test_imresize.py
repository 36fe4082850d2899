"""MATLAB-exact bicubic: parity with BasicSR 1.4.2's imresize on real photographs, full images."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from photos import photo
from pipeline.resize import imresize

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from make_fixtures import RESIZE_CASES, dequantize  # noqa: E402

FIXTURES = np.load(Path(__file__).parent / "fixtures" / "imresize_basicsr.npz")


@pytest.mark.parametrize("i", range(len(RESIZE_CASES)))
def test_numpy_matches_basicsr_everywhere(i):
    name, box, scale = RESIZE_CASES[i]
    img = photo(name, box).astype(np.float32) / 255.0
    ours = imresize(img, scale)
    ref = dequantize(FIXTURES[f"case{i}"])
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-4  # borders included


@pytest.mark.parametrize("i", range(len(RESIZE_CASES)))
def test_torch_batched_matches_basicsr(i):
    name, box, scale = RESIZE_CASES[i]
    img = torch.from_numpy(photo(name, box).astype(np.float32) / 255.0).permute(2, 0, 1)
    batch = torch.stack([img, img.flip(-1)])  # NCHW; the second image checks per-sample independence
    out = imresize(batch, scale)
    ref = torch.from_numpy(dequantize(FIXTURES[f"case{i}"])).permute(2, 0, 1).float()
    assert out.shape == (2, *ref.shape)
    assert (out[0] - ref).abs().max() <= 1e-4
    assert (out[1] - imresize(img.flip(-1), scale)).abs().max() <= 1e-6


def test_output_size_is_ceil_and_not_rounded():
    img = np.random.default_rng(0).random((37, 53, 3), dtype=np.float32)
    out = imresize(img, 0.3)
    assert out.shape == (12, 16, 3)
    assert not np.allclose(out * 255, np.round(out * 255))


def test_interpolate_antialias_is_not_matlab():
    """The reason this module exists: torch's antialiased bicubic differs at the borders."""
    img = photo("chelsea").astype(np.float32) / 255.0
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    theirs = torch.nn.functional.interpolate(t, size=(75, 113), mode="bicubic", antialias=True, align_corners=False)
    assert (theirs[0] - imresize(t[0], 0.25)).abs().max() > 1e-3


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="float"):
        imresize(np.zeros((8, 8, 3), np.uint8), 0.5)
    with pytest.raises(ValueError, match="scale"):
        imresize(np.zeros((8, 8, 3), np.float32), 0)
