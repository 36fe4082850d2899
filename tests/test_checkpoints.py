"""Published checkpoints in: EDSR-PyTorch's layout imports exactly, unknown tensors and pickled objects
are refused by name, and ``models.load`` takes a checkpoint file."""
import pytest
import torch

from pipeline import models
from pipeline.models import load_checkpoint as import_checkpoint
from pipeline.models.checkpoints import read_state_dict



def official_edsr_state(model) -> dict:
    """Our 0-255 EDSR's weights under EDSR-PyTorch's tensor names (its model/edsr.py + common.py)."""
    out = {}
    for name, t in model.state_dict().items():
        name = name.replace("head.", "head.0.", 1) if name.startswith("head.") else name
        name = name.replace(".conv1.", ".body.0.").replace(".conv2.", ".body.2.")
        out[name] = t.clone()
    return out


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_pytorch_checkpoint_imports_exactly_on_the_0_1_scale(tmp_path, scale):
    torch.manual_seed(scale)
    official = models.build("edsr", scale, n_resblocks=2, n_feats=16, rgb_range=255.0).eval()  # 0-255 in, out
    with torch.no_grad():
        for name, p in official.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 2.0)  # biases matter on the 0-255 scale
    torch.save(official_edsr_state(official), tmp_path / "edsr.pt")
    ours = models.load(tmp_path / "edsr.pt").eval()
    assert ours.config == {"arch": "edsr", "scale": scale, "kwargs": {"n_resblocks": 2, "n_feats": 16, "res_scale": 1.0}}
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.allclose(ours(x), official(x * 255) / 255, atol=1e-5)


def test_edsr_32x256_is_recognised_with_res_scale_point_one(tmp_path):
    edsr = models.build("edsr", 4, n_resblocks=32, n_feats=256, res_scale=0.1, rgb_range=255.0)
    torch.save(official_edsr_state(edsr), tmp_path / "edsr_x4.pt")
    assert models.read_config(tmp_path / "edsr_x4.pt") == {
        "arch": "edsr", "scale": 4, "kwargs": {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}}


def test_unknown_tensor_wrong_shape_and_pickled_objects_are_refused(tmp_path):
    official = models.build("edsr", 2, n_resblocks=1, n_feats=8, rgb_range=255.0)
    state = official_edsr_state(official)
    torch.save({**state, "body.0.extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match="body.0.extra.weight"):
        import_checkpoint(tmp_path / "extra.pt")
    torch.save({**state, "tail.1.weight": torch.zeros(3, 7, 3, 3)}, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match="'tail.1.weight' has shape"):
        import_checkpoint(tmp_path / "shape.pt")
    torch.save({"params": official}, tmp_path / "pickled.pth")  # a whole module: needs full unpickling
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(tmp_path / "pickled.pth")
    torch.save({"net": [1, 2]}, tmp_path / "list.pt")
    with pytest.raises(ValueError, match="dict of tensors"):
        read_state_dict(tmp_path / "list.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unknown checkpoint layout"):
        import_checkpoint(tmp_path / "other.pt")


def test_a_checkpoint_file_has_a_config_like_a_saved_model(tmp_path):
    """train_student_l1 reads its teacher's architecture from a published checkpoint (the paper profile)."""
    edsr = models.build("edsr", 4, n_resblocks=2, n_feats=16, rgb_range=255.0)
    torch.save(official_edsr_state(edsr), tmp_path / "edsr.pt")
    assert models.read_config(tmp_path / "edsr.pt") == models.load(tmp_path / "edsr.pt").config
