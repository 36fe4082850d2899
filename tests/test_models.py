"""Architectures: official parameter counts, the model format, and the official E-RFDN weights."""
from pathlib import Path

import pytest
import torch

from photos import photo
from pipeline import models
from pipeline.metrics import count_params

COUNTS = [
    ("fsrcnn", 4, {"d": 16}, 10_755), ("fsrcnn", 4, {"d": 36}, 17_635), ("fsrcnn", 4, {"d": 56}, 24_515),
    ("msrresnet", 4, {"nf": 36}, 481_683), ("msrresnet", 4, {"nf": 52}, 1_002_771), ("msrresnet", 4, {"nf": 64}, 1_517_571),
    ("carn_m", 4, {"nf": 36}, 94_851), ("carn_m", 4, {"nf": 52}, 195_651), ("carn_m", 4, {"nf": 64}, 294_939),
    ("rcan", 4, {"nf": 64}, 15_592_379), ("rcan", 4, {"nf": 36}, 4_940_707), ("rcan", 4, {"nf": 50}, 9_521_827),
    ("edsr", 2, {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, 40_729_603),
    ("edsr", 4, {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, 43_089_923),
    ("rfdn", 4, {"nf": 50, "num_blocks": 4, "attention": "esa"}, 433_448),
    ("rfdn", 2, {}, 534_036), ("rfdn", 3, {}, 540_531), ("rfdn", 4, {}, 549_624),
    ("rfdn", 2, {"nf": 52, "attention": "cca"}, 625_962),
]


@pytest.mark.parametrize("arch, scale, kwargs, expected", COUNTS, ids=lambda v: str(v))
def test_parameter_counts_equal_official(arch, scale, kwargs, expected):
    assert count_params(models.build(arch, scale, **kwargs)) == expected


@pytest.mark.parametrize("arch", ["fsrcnn", "msrresnet", "carn_m", "rfdn"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_is_scale_times_input(arch, scale):
    out = models.build(arch, scale)(torch.rand(1, 3, 20, 17))
    assert out.shape == (1, 3, 20 * scale, 17 * scale)


def test_rfdn_blocks_follow_reference():
    from pipeline.models.rfdn import ESA, RFDB

    assert count_params(RFDB(48, "esa")) == 87_528 and count_params(ESA(48)) == 6_600
    assert count_params(RFDB(50, "esa")) == 94_450 and count_params(ESA(50)) == 6_650
    slopes = {m.negative_slope for m in models.build("rfdn").modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.05}


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = models.build("carn_m", 4, nf=16)
    model.train()(torch.rand(2, 3, 8, 8))  # move the BatchNorm running stats away from their init
    model.eval()
    models.save(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = models.load(tmp_path / "m").eval()
    assert loaded.config == {"arch": "carn_m", "scale": 4, "kwargs": {"nf": 16}}
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(model(x), loaded(x))


WEIGHTS = Path(__file__).resolve().parents[1] / "assets/weights/e-rfdn-aim2020-x4.safetensors"  # carried by the repo


def test_official_erfdn_reproduces_published_psnr():
    from pipeline.data.images import bicubic_downscale, mod_crop
    from pipeline.evaluate import score
    from pipeline.upscale import upscale

    model = models.import_official("erfdn", WEIGHTS).eval()
    assert count_params(model) == 433_448
    for name, expected in [("chelsea", 32.46), ("coffee", 29.59), ("astronaut", 30.32)]:
        hr = mod_crop(photo(name), 4)
        sr = upscale(model, bicubic_downscale(hr, 4)).image
        assert abs(score(sr, hr, 4)["psnr"] - expected) <= 0.01, name
