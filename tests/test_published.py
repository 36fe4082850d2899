"""Published efficient-SR networks as baselines: RLFN (NTIRE 2022 runtime winner) and BSRN (NTIRE 2022
model-complexity winner), written from their papers and the official code's facts; their official x4
weights are carried in assets/weights/ and reproduce the papers' Set5 numbers with our protocol."""
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import models
from pipeline.metrics import count_params

ASSETS = Path(__file__).resolve().parents[1] / "assets"
RLFN_X4, BSRN_X4 = ASSETS / "weights/rlfn-x4.safetensors", ASSETS / "weights/bsrn-x4.safetensors"
SHARED = Path(__file__).resolve().parents[2] / "shared/weights"  # the x2 files: our machines only


@pytest.mark.parametrize("arch, scale, params", [("rlfn", 4, 543_740), ("bsrn", 4, 352_400),
                                                 ("rlfn", 2, 526_856), ("bsrn", 2, 331_628)])
def test_parameter_counts_are_the_official_ones(arch, scale, params):
    """x4: the papers' counts; x2: the counts of the official x2 files."""
    model = models.build(arch, scale)
    assert count_params(model) == params
    assert model(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20 * scale, 20 * scale)


@pytest.mark.parametrize("path, arch, kwargs", [
    (RLFN_X4, "rlfn", {"nf": 52, "num_blocks": 6, "esa_channels": 16, "img_range": 255.0}),
    (BSRN_X4, "bsrn", {"nf": 64, "num_blocks": 8})])
def test_official_x4_checkpoints_load_strictly_by_their_tensor_names(path, arch, kwargs):
    from pipeline.models.checkpoints import convert

    assert convert(path)[:3] == (arch, 4, kwargs)
    model = models.load(path)
    assert model.config == {"arch": arch, "scale": 4, "kwargs": kwargs}


@pytest.mark.parametrize("name, scale, params", [("rlfn_x2.pth", 2, 526_856), ("bsrn_x2.pth", 2, 331_628),
                                                 ("rlfn_x4.pth", 4, 543_740), ("bsrn_x4.pth", 4, 352_400)])
def test_the_official_pth_files_load_as_released(name, scale, params):
    """The release files themselves (RLFN: a plain state dict; BSRN: BasicSR's {'params': ...})."""
    if not (SHARED / name).is_file():
        pytest.skip("the official .pth files are in ../shared/weights on the project's machines only")
    model = models.load(SHARED / name)
    assert model.config["scale"] == scale and count_params(model) == params


def set5_pairs():
    from pipeline.data.images import bicubic_downscale, mod_crop, read_image

    for p in sorted((ASSETS / "benchmarks/Set5").glob("*.png")):
        hr = mod_crop(read_image(p), 4)
        yield hr, bicubic_downscale(hr, 4)


@pytest.mark.parametrize("path, psnr, ssim", [(RLFN_X4, 32.24, 0.8952), (BSRN_X4, 32.35, 0.8966)])
def test_official_weights_reproduce_the_papers_set5_numbers(path, psnr, ssim):
    """MATLAB-bicubic LR, Y channel, crop 4 (the papers' protocol): within 0.01 dB of the paper. RLFN's
    weights take 0-255: fed [0, 1] by mistake they score 27.67 dB, below bicubic."""
    from pipeline.evaluate import score
    from pipeline.upscale import upscale

    model = models.load(path).eval()
    scores = [score(upscale(model, lr).image, hr, 4) for hr, lr in set5_pairs()]
    assert abs(np.mean([s["psnr"] for s in scores]) - psnr) <= 0.01
    assert abs(np.mean([s["ssim"] for s in scores]) - ssim) <= 0.0005


@pytest.mark.parametrize("name", ["rlfn-x4.safetensors", "rlfn_x4.pth"])
def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path, name):
    cut = tmp_path / name
    cut.write_bytes(RLFN_X4.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=name):
        models.load(cut)


def test_sr_upscale_runs_both_official_files(tmp_path):
    from PIL import Image

    from pipeline.upscale import main

    lr = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    Image.fromarray(lr).save(tmp_path / "in.png")
    for path in (RLFN_X4, BSRN_X4):
        out = tmp_path / f"{path.stem}.png"
        main([str(path), str(tmp_path / "in.png"), str(out)])
        assert Image.open(out).size == (80, 96)


def test_ghost_converts_rlfn_by_the_conv3x3_rule_and_exports_to_onnx(tmp_path):
    """GhostSR's conversion beyond EDSR (the paper converts IMDN and CARN too): every plain 3x3 conv with
    as many outputs as inputs. The deployed network runs, and ONNX Runtime computes it as exactly as
    PyTorch does: before its fine-tune a converted RLFN amplifies rounding (float32 PyTorch is ~1e-2 off
    float64 here, the plain RLFN 2e-6), so ONNX must be within 1e-4 of PyTorch or no further from the
    float64 result than twice PyTorch's own float32 error."""
    import onnxruntime as ort

    from pipeline.export import export_onnx, max_abs_error
    from pipeline.methods.ghost import convert, export
    from pipeline.models.ghost import ghost_layers

    rlfn = models.load(RLFN_X4).eval()
    layers = ghost_layers(rlfn, "conv3x3")
    assert "block_1.c1_r" in layers and "conv_2" in layers and "block_1.esa.conv2" not in layers
    assert "conv_1" not in layers and "upsampler.0" not in layers  # 3 -> 52 and 52 -> 48: not square
    assert max_abs_error(rlfn, export_onnx(rlfn, tmp_path / "rlfn"), lr_side=40) <= 1e-4
    deployed = export(convert(rlfn, 0.5, layers), rlfn.config, 0.5, 1, "gumbel", False).eval()
    assert count_params(deployed) < count_params(rlfn)
    files = export_onnx(deployed, tmp_path / "ghost_rlfn")
    x = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y32, y64 = deployed(x).double(), deployed.double()(x.double())
    assert y32.shape == (2, 3, 160, 144) and torch.isfinite(y32).all()
    session = ort.InferenceSession(str(files["model"]), providers=["CPUExecutionProvider"])
    y_ort = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]).double()
    torch_error = (y32 - y64).abs().max().item()
    assert (y_ort - y32).abs().max().item() <= 1e-4 or (y_ort - y64).abs().max().item() <= 2 * torch_error


def test_recipes_put_pcl_and_ghost_on_the_published_networks(repo, tmp_path, monkeypatch):
    """profiles/published.yaml: PCL fine-tunes the released RLFN (one step here: the loss reaches its
    weights through its 0-255 wrapper), GhostSR converts it by the conv3x3 rule."""
    from pipeline.methods.ghost import convert
    from pipeline.methods.pcl import PCLObjective
    from pipeline.params import load_section
    from pipeline.profiles import derive

    monkeypatch.chdir(repo)  # the recipes name the carried files relative to the project
    for name in ("rlfn_pcl", "bsrn_pcl", "rlfn_ghost"):
        (tmp_path / f"{name}.yaml").write_text(derive(repo / "profiles/paper.yaml", repo / "profiles/published.yaml", name))
    pcl = load_section("distill_pcl", path=tmp_path / "rlfn_pcl.yaml")
    assert pcl.init_from == "assets/weights/rlfn-x4.safetensors"
    model = models.load(pcl.init_from).train()
    objective = PCLObjective(pcl, 4)
    lr, hr = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 96, 96)
    loss, logged = objective.loss(model, lr, hr, step=0)
    loss.backward()
    assert torch.isfinite(loss) and "contrastive" in logged and model.block_1.c1_r.weight.grad.abs().sum() > 0
    ghost = load_section("ghost", path=tmp_path / "rlfn_ghost.yaml")
    from pipeline.models.ghost import ghost_layers

    source = models.load(ghost.source)
    converted = convert(source, ghost.ratio, ghost.layers)
    assert ghost.layers == ["conv3x3"] and list(converted.ghost_plan) == ghost_layers(source, "conv3x3")
    assert len(converted.ghost_plan) == 6 * 4 + 1  # each RLFB's three body convs and ESA's conv3, conv_2


def test_a_reference_of_another_scale_or_a_bad_file_stops_evaluate_naming_it(tmp_path):
    from pipeline.params import ParamError, Reference
    from pipeline.report import reference_model

    x2 = tmp_path / "rlfn-x2.safetensors"
    from safetensors.torch import save_file

    save_file(models.build("rlfn", 2).state_dict(), str(x2))
    with pytest.raises(ParamError, match="evaluate.references.RLFN: .*rlfn-x2.safetensors is a x2 model, evaluate.scale is 4"):
        reference_model("RLFN", Reference(str(x2)), 4)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ParamError, match="evaluate.references.junk: .*junk.safetensors"):
        reference_model("junk", Reference(str(junk)), 4)
    assert reference_model("BSRN", Reference(str(BSRN_X4)), 4).config["arch"] == "bsrn"


@pytest.mark.parametrize("arch", ["rlfn", "bsrn"])
def test_the_baseline_stage_section_builds_and_trains_them(tmp_path, arch):
    """train_rfdn's section takes any architecture by name: RLFN and BSRN train like RFDN (one step)."""
    import yaml

    from pipeline.params import TrainRFDN, load_section

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"train_rfdn": {"model": {"arch": arch, "kwargs": {"nf": 16, "num_blocks": 2}}}}))
    cfg = load_section("train_rfdn", TrainRFDN, p)
    model = models.init_model(cfg.model.arch, cfg.model.scale, cfg.model.kwargs)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64)
    before = torch.nn.functional.l1_loss(model(lr), hr)
    before.backward()
    opt.step()
    assert torch.nn.functional.l1_loss(model(lr), hr) < before
