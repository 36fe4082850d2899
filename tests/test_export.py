"""ONNX export: every kind of variant round-trips through ONNX Runtime within 1e-4 of PyTorch, at a size
other than the traced one (a size frozen into the graph would show), and ClassSR's patch-wise inference
runs unchanged on the exported classifier and branches."""
import numpy as np
import pytest
import torch

from pipeline import models
from pipeline.export import OrtClassSR, export_onnx, max_abs_error, ort_latency
from pipeline.models.ghost import OFFSETS, ghost_modules, reparameterize, shift, shift_padded
from pipeline.upscale import branch_flops, classsr_patchwise

TOL = 1e-4


def random_ghost(per_channel: bool):
    """A Ghost EDSR in its deployment form with shifts that are not the identity."""
    from pipeline.methods import ghost

    torch.manual_seed(0)
    g = ghost.convert(models.build("edsr", 4, n_resblocks=2, n_feats=16), ratio=0.5, per_channel=per_channel)
    for i, m in enumerate(ghost_modules(g)):
        with torch.no_grad():
            m.shift_logits.normal_(generator=torch.Generator().manual_seed(i))
    return reparameterize(g).eval()


def test_padded_shift_is_the_shift():
    x = torch.rand(2, 3, 7, 9)
    for dy, dx in OFFSETS + [(2, -2), (-2, 2)]:
        assert torch.equal(shift_padded(x, dy, dx), shift(x, dy, dx)), (dy, dx)


@pytest.mark.parametrize("kind", ["plain", "ghost", "ghost_per_channel", "slim", "erfdn"])
def test_export_round_trip_within_1e_4(tmp_path, kind, repo):
    from pipeline.models.slim import slim

    torch.manual_seed(1)
    if kind == "plain":
        model = models.build("msrresnet", 4, nf=16, nb=2)
    elif kind.startswith("ghost"):
        model = random_ghost(kind == "ghost_per_channel")
        assert any(o != (0, 0) for m in ghost_modules(model) for o in m.fixed)
    elif kind == "slim":
        model = slim(models.build("rcan", 4, n_resgroups=1, n_resblocks=2, nf=32), 0.5)
    else:
        model = models.import_official("erfdn", repo / "assets/weights/e-rfdn-aim2020-x4.safetensors")
    files = export_onnx(model.eval(), tmp_path / kind)
    assert list(files) == ["model"] and files["model"].stat().st_size > 1000
    assert max_abs_error(model, files, lr_side=40) < TOL
    assert max_abs_error(model, files, lr_side=19, batch=1) < TOL
    assert ort_latency(model, files, side=24) > 0


def test_classsr_exports_as_classifier_and_branches_and_runs_patchwise(tmp_path):
    torch.manual_seed(2)
    model = models.build("classsr", 4, branch_arch="fsrcnn", branches=[{"d": 8}, {"d": 12}, {"d": 16}]).eval()
    files = export_onnx(model, tmp_path / "classsr")
    assert sorted(files) == ["branch0", "branch1", "branch2", "classifier"]
    assert max_abs_error(model, files) < TOL
    lr = torch.rand(3, 60, 50)
    flops = branch_flops(model)
    ref, ref_classes = classsr_patchwise(model, lr, 4, 32, 28, 0.7, 8, flops)
    out, classes = classsr_patchwise(OrtClassSR(files), lr, 4, 32, 28, 0.7, 8, flops)
    assert np.array_equal(classes, ref_classes)
    assert (out - ref).abs().max() < TOL
    probe = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert ort_latency(model, files, 40, probe=probe, budget=0.7) > 0
