"""The paper profile end to end: `dvc repro` of `profiles/paper.yaml` at the papers' model widths (MSRResNet-64
teacher and ClassSR branches 36/52/64, EDSR 32x256 x4 for CSD and PCL, EDSR 32x256 x2 for GhostSR, E-RFDN
nf 50, VGG19 for CSD), with only step counts, batch sizes, workers and process counts shrunk by
`python -m pipeline.profiles --smoke`, on a generated layout of real photographs in the paper's folders:
data/raw/{DIV2K_train_HR, Flickr2K_HR (DF2K), DIV8K 1201/1301/1401 (Test2K/4K/8K), benchmark/Set5,
pretrained/edsr_x{2,4}.pt (random, in EDSR-PyTorch's layout), a VGG19 file in torchvision's layout}.

The layout is small (the images are a few hundred pixels, the test sets tiny, validation on the tiny Set5):
what is checked is that every stage of the researchers' profile runs and writes what it should."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from dag import ALL_STAGES, REPO, clone_of_this_checkout, sh
from photos import photo
from test_checkpoints import official_edsr_state

from pipeline import models
from pipeline.methods.csd import vgg19_features

pytestmark = pytest.mark.slow  # the paper profile's whole DAG


def save_png(path, img, size=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img)
    (im.resize(size, Image.BICUBIC) if size else im).save(path)


def paper_layout(root):
    """The folders profiles/paper.yaml reads, filled with real photographs and stand-in weights."""
    raw = root / "data/raw"
    save_png(raw / "DIV2K_train_HR/0001.png", photo("astronaut"))  # >= the 480 px crop of prepare_sr
    save_png(raw / "Flickr2K_HR/000001.png", photo("coffee"), (640, 480))
    for number, name, size in [(1201, "rocket", (256, 192)), (1301, "chelsea", (192, 128)), (1401, "coffee", (96, 64))]:
        save_png(raw / f"DIV8K/{number}.png", photo(name), size)  # Test2K x1/4, Test4K x1/2, Test8K as is
    for p in sorted((REPO / "assets/benchmarks/Set5").glob("*.png")):
        img = np.asarray(Image.open(p).convert("RGB"))
        h, w = img.shape[:2]
        save_png(raw / f"benchmark/Set5/{p.name}", np.ascontiguousarray(img[(h - 96) // 2:(h + 96) // 2, (w - 96) // 2:(w + 96) // 2]))
    torch.manual_seed(0)
    (raw / "pretrained").mkdir()
    for scale in (2, 4):  # EDSR-PyTorch's released EDSR 32x256 layout, random weights
        with torch.no_grad():
            edsr = models.build("edsr", scale, n_resblocks=32, n_feats=256, res_scale=0.1, rgb_range=255.0)
        torch.save(official_edsr_state(edsr), raw / f"pretrained/edsr_x{scale}.pt")
        del edsr
    from safetensors.torch import save_file

    save_file({f"features.{k}": v for k, v in vgg19_features().state_dict().items()}, raw / "pretrained/vgg19.safetensors")


def smoke_params(root):
    """The derived smoke profile, pointed at the generated layout (DF2K, the VGG19 file, the tiny Set5
    for validation instead of the full-size sample photos, the teacher's own class tertiles)."""
    from ruamel.yaml import YAML

    sh("python -m pipeline.profiles profiles/paper.yaml --smoke --batch 1 -o params.yaml", root)
    yaml = YAML()
    params = yaml.load((root / "params.yaml").read_text())
    params["prepare_sr"]["source"] = ["data/raw/DIV2K_train_HR", "data/raw/Flickr2K_HR"]
    params["distill_csd"]["vgg_weights"] = "data/raw/pretrained/vgg19.safetensors"
    params["prepare_test"]["sample"] = False
    # ClassSR's five rescales make 5x the patches for the paper-width teacher to classify (36 s of the smoke
    # here); one keeps every code path (the rescaled set is tested in test_data.py)
    params["prepare_classsr"]["rescales"] = [1.0]
    params["prepare_test"]["benchmarks"] = ["Set5"]  # the only benchmark this layout generates
    params["classify_patches"]["thresholds"] = []  # the official MSRResNet's 27.17 / 35.15 dB do not fit a 1-step teacher
    for section in ("ghost", "compose_classsr"):  # bf16 autocast on a CPU without bf16 units: ~10x slower
        params[section]["train"]["mixed_precision"] = "bf16" if torch.cuda.is_available() else "no"
    for section in params.values():
        for block in [section.get("train")] + [section.get(p) for p in ("classifier", "joint")]:
            if isinstance(block, dict) and "max_steps" in block:
                block["val_set"] = "data/test/Set5"
    params["evaluate"]["pareto_set"] = params["evaluate"]["crops_set"] = "Set5"
    # ONNX export of the EDSR 32x256 variants: ~8 s and 170 MB each, ~1 GB through DVC's cache; the
    # export is tested at every architecture (tests/test_export.py) and at paper width by hand (README)
    params["evaluate"]["onnx"] = False
    with open(root / "params.yaml", "w") as f:
        yaml.dump(params, f)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = clone_of_this_checkout(tmp_path_factory.mktemp("paper") / "proj")
    paper_layout(root)
    smoke_params(root)
    # an EDSR 32x256 forward on the usual 128x128 latency probe takes ~15 s on 2 CPU cores, timed 7x a model
    os.environ["PIPELINE_LATENCY_SIDE"] = "16"
    try:
        return root, sh("dvc repro", root)
    finally:
        del os.environ["PIPELINE_LATENCY_SIDE"]


def test_paper_profile_runs_end_to_end_at_the_papers_widths(paper_run):
    root, out = paper_run
    for stage in ALL_STAGES:
        assert f"Running stage '{stage}'" in out, stage
    assert json.loads((root / "data/sr/info.json").read_text())["num_images"] == 2  # DIV2K + Flickr2K
    for name, number, width in [("Test2K", 1201, 64), ("Test4K", 1301, 96), ("Test8K", 1401, 96)]:
        assert Image.open(root / f"data/test/{name}/HR/{number}.png").width == width  # x1/4, x1/2, as is
    assert models.read_config(root / "models/teacher")["kwargs"] == {"nf": 64, "nb": 16}
    assert [b["nf"] for b in models.read_config(root / "models/classsr")["kwargs"]["branches"]] == [36, 52, 64]
    variants = json.loads((root / "metrics/evaluate.json").read_text())["variants"]
    expected_params = {"teacher": 1_517_571, "classsr@1": 3_062_060, "ghost (x2)": 21_847_619,
                       "edsr_x2 (x2)": 40_729_603, "csd_student": 2_699_267, "csd_control": 2_699_267, "student_l1": 2_699_267,
                       "edsr_x4": 43_089_923, "pcl_student": 43_089_923, "pcl_control": 43_089_923, "rfdn": 433_448}
    for name, params in expected_params.items():
        assert variants[name]["params"] == params, name
        assert {"Set5_psnr", "Test2K_psnr_rgb", "Test4K_psnr", "Test8K_psnr_rgb"} <= set(variants[name]), name
    assert "Test8K_flops_percent" in variants["classsr@0.5"]
    assert "Running stage" not in sh("dvc repro", root)
