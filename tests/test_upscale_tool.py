"""`sr-upscale` as a tool: a published checkpoint, a folder or glob of images, PSNR/SSIM against --gt as
BasicSR's test.py prints them, clear errors before any work; and the x8 self-ensemble."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from photos import photo
from pipeline import models
from pipeline.data.images import bicubic_downscale, read_image, write_png
from pipeline.evaluate import score
from pipeline.upscale import main, upscale


@pytest.fixture
def folders(tmp_path):
    """LR/ named like DIV2K's (``chelseax4.png``), HR/ by the plain name."""
    (tmp_path / "LR").mkdir()
    (tmp_path / "HR").mkdir()
    for i, name in enumerate(["chelsea", "coffee"]):
        hr = photo(name, (0, 0, 64, 48 + 8 * i))
        write_png(tmp_path / "HR" / f"{name}.png", hr)
        write_png(tmp_path / "LR" / f"{name}x4.png", bicubic_downscale(hr, 4))
    return tmp_path


def test_folder_with_gt_prints_basicsr_scores_from_a_checkpoint_file(folders, capsys):
    from test_checkpoints import official_edsr_state

    torch.manual_seed(0)
    torch.save(official_edsr_state(models.build("edsr", 4, n_resblocks=1, n_feats=8, rgb_range=255.0)),
               folders / "edsr_x4.pt")
    main([str(folders / "edsr_x4.pt"), str(folders / "LR"), str(folders / "out"), "--gt", str(folders / "HR")])
    printed = capsys.readouterr().out
    model = models.load(folders / "edsr_x4.pt").eval()
    psnrs = []
    for name in ("chelsea", "coffee"):
        sr = read_image(folders / f"out/{name}x4.png")
        assert np.array_equal(sr, upscale(model, read_image(folders / f"LR/{name}x4.png")).image)
        psnrs.append(score(sr, read_image(folders / f"HR/{name}.png"), 4)["psnr"])
        assert f"{name}x4: PSNR {psnrs[-1]:.4f} dB" in printed
    assert f"mean over 2 images: PSNR {np.mean(psnrs):.4f} dB" in printed


def test_glob_input_and_errors_before_any_work(folders):
    models.save(models.build("msrresnet", 4, nf=8, nb=1), folders / "plain")
    main([str(folders / "plain"), str(folders / "LR/c*.png"), str(folders / "globbed")])
    assert sorted(p.name for p in (folders / "globbed").iterdir()) == ["chelseax4.png", "coffeex4.png"]
    (folders / "HR/coffee.png").unlink()
    with pytest.raises(SystemExit, match="no HR image named coffeex4 or coffee"):
        main([str(folders / "plain"), str(folders / "LR"), str(folders / "o2"), "--gt", str(folders / "HR")])
    assert not (folders / "o2").exists()  # nothing written before the check
    with pytest.raises(SystemExit, match="no image matches it"):
        main([str(folders / "plain"), str(folders / "nothing*.png"), str(folders / "o3")])
    with pytest.raises(SystemExit):  # argparse: --half needs CUDA
        main([str(folders / "plain"), str(folders / "LR"), str(folders / "o4"), "--half", "--device", "cpu"])


@pytest.mark.slow
def test_console_script_is_installed():
    out = subprocess.run([str(Path(sys.executable).parent / "sr-upscale"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--gt" in out.stdout and "--self-ensemble" in out.stdout


def test_self_ensemble_averages_the_eight_transforms():
    """A model that is not rotation-equivariant: the ensemble equals the mean of the 8 mapped-back passes."""
    torch.manual_seed(1)
    model = models.build("msrresnet", 2, nf=8, nb=1).eval()
    lr = photo("chelsea", (0, 0, 24, 20))
    x = torch.from_numpy(lr).permute(2, 0, 1).float() / 255
    outs = []
    with torch.no_grad():
        for flip in (False, True):
            for k in range(4):
                t = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
                y = torch.rot90(model(t[None])[0], -k, dims=(-2, -1))
                outs.append(y.flip(-1) if flip else y)
    expected = (torch.stack(outs).mean(0).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    got = upscale(model, lr, self_ensemble=True).image
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # float summation order
    assert not np.array_equal(got, upscale(model, lr).image)
