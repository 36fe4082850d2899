"""Sub-image shards, the training stream and bad inputs."""
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from photos import photo
from pipeline.data.images import ImageError, bicubic_downscale, list_images, mod_crop, read_image
from pipeline.data.loader import PatchBatches, make_loader
from pipeline.data.shards import ExtractSpec, PairShards, window_starts, write_shards
from pipeline.data.sources import ImageRef, folder_refs


def test_window_starts_follow_basicsr_threshold():
    assert window_starts(1000, 480, 240, 0) == [0, 240, 480, 520]  # remainder 40 > 0: last window added
    assert window_starts(720, 480, 240, 0) == [0, 240]
    assert window_starts(200, 128, 64, 48) == [0, 64]  # remainder 8 <= 48: dropped (ClassSR)
    assert window_starts(250, 128, 64, 48) == [0, 64, 122]


@pytest.fixture
def photo_folder(tmp_path):
    d = tmp_path / "hr"
    d.mkdir()
    for name, box in [("chelsea", None), ("coffee", (0, 0, 250, 301))]:
        Image.fromarray(photo(name, box)).save(d / f"{name}.png")
    return d


def test_shards_reload_with_counts_shapes_dtype_and_exact_lr(photo_folder, tmp_path):
    spec = ExtractSpec(scales=[2, 4], crop_size=96, step=48, thresh_size=0)
    info = write_shards(folder_refs(photo_folder), spec, tmp_path / "shards", 10, 1, str(photo_folder))
    expected = 0
    for name in ["chelsea", "coffee"]:
        h, w = mod_crop(read_image(photo_folder / f"{name}.png"), 4).shape[:2]
        expected += len(window_starts(h, 96, 48, 0)) * len(window_starts(w, 96, 48, 0))
    assert info["num_subimages"] == expected
    assert json.loads((tmp_path / "shards" / "info.json").read_text())["num_subimages"] == expected
    assert not (tmp_path / "shards.tmp").exists()

    import datasets

    images = datasets.load_from_disk(str(tmp_path / "shards" / "arrow"))["image"]
    assert images == ["chelsea", "coffee"]  # each image stored once; sub-images are index rows
    for s in (2, 4):
        shards = PairShards(tmp_path / "shards", s)
        assert len(shards) == expected
        for i in [0, 7, expected - 1]:
            lr, hr = shards.pair(i)
            assert lr.dtype == np.uint8 and hr.shape == (96, 96, 3) and lr.shape == (96 // s, 96 // s, 3)
            # each LR equals (the crop of) MATLAB-bicubic LR of its whole source HR, as BasicSR builds it
            row, top, left = shards.grid[i]
            full = mod_crop(read_image(photo_folder / f"{images[row]}.png"), 4)
            assert np.array_equal(hr, full[top:top + 96, left:left + 96])
            lr_full = bicubic_downscale(full, s)
            assert np.array_equal(lr, lr_full[top // s:top // s + 96 // s, left // s:left // s + 96 // s])


def test_classsr_rescaled_variants(photo_folder, tmp_path):
    spec = ExtractSpec(scales=[4], crop_size=128, step=64, thresh_size=48, rescales=[1.0, 0.6])
    write_shards(folder_refs(photo_folder), spec, tmp_path / "c", 10, 1, "x")
    import datasets

    names = set(datasets.load_from_disk(str(tmp_path / "c" / "arrow"))["image"])
    assert names == {"1.0_chelsea", "0.6_chelsea", "1.0_coffee", "0.6_coffee"}
    assert PairShards(tmp_path / "c", 4).pair(0)[0].shape == (32, 32, 3)


def test_loader_yields_aligned_seeded_pairs(photo_folder, tmp_path):
    write_shards(folder_refs(photo_folder), ExtractSpec([4], 96, 48, 0), tmp_path / "s", 10, 1, "x")
    shards = PairShards(tmp_path / "s", 4)
    batches = PatchBatches(shards, batch_size=4, lr_patch=12, seed=3)
    lr, hr = batches[5]
    assert lr.shape == (4, 3, 12, 12) and hr.shape == (4, 3, 48, 48)
    assert 0 <= lr.min() and lr.max() <= 1
    # aligned: downscaling the HR patch reproduces the LR patch up to the crop's border effects
    from pipeline.resize import imresize

    down = imresize(hr, 0.25)
    assert (down - lr)[..., 2:-2, 2:-2].abs().mean() < 0.01
    # the stream is a function of (seed, step): resumable and identical across worker counts
    again = list(make_loader(batches, 4, 7, num_workers=2))
    assert all(torch_equal(a, b) for a, b in zip(again[1], batches[5]))


def test_processes_and_accumulation_split_the_same_global_batch(photo_folder, tmp_path):
    """2 processes x batch 2, and grad_accum 2 x batch 2, see exactly batch 4's samples of each step."""
    import torch

    write_shards(folder_refs(photo_folder), ExtractSpec([4], 96, 48, 0), tmp_path / "s", 10, 1, "x")
    shards = PairShards(tmp_path / "s", 4)
    whole = PatchBatches(shards, 4, 12, seed=3)
    ranks = [PatchBatches(shards, 2, 12, seed=3).split(r, 2, 1) for r in (0, 1)]
    accumulated = PatchBatches(shards, 2, 12, seed=3).split(0, 1, 2)
    for step in (0, 7):
        lr, hr = whole[step]
        by_rank = [torch.cat(t) for t in zip(ranks[0][step], ranks[1][step])]
        by_micro = [torch.cat(t) for t in zip(accumulated[2 * step], accumulated[2 * step + 1])]
        assert torch_equal(by_rank[0], lr) and torch_equal(by_rank[1], hr)
        assert torch_equal(by_micro[0], lr) and torch_equal(by_micro[1], hr)
    assert not torch_equal(ranks[1][3][0], ranks[0][3][0])  # ranks never repeat each other
    with pytest.raises(ValueError, match="rank 2 of 2"):
        whole.split(2, 2, 1)


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


# ---- bad input --------------------------------------------------------------------------------------

def test_modes_are_converted_to_rgb_uint8(tmp_path):
    gray = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.dstack([photo("chelsea", (0, 0, 64, 64)), np.full((64, 64), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    g = read_image(tmp_path / "gray.png")
    assert g.shape == (64, 64, 3) and g.dtype == np.uint8 and np.array_equal(g[..., 1], gray)
    with pytest.warns(UserWarning, match="rgba.png: alpha channel dropped"):
        assert read_image(tmp_path / "rgba.png").shape == (64, 64, 3)
    with pytest.warns(UserWarning, match="deep.png.*16-bit"):
        assert np.array_equal(read_image(tmp_path / "deep.png")[..., 0], gray)


def test_corrupt_file_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError, match="broken.png"):
        read_image(tmp_path / "broken.png")


def test_corrupt_and_undersized_images_are_skipped_and_counted(photo_folder, tmp_path):
    (photo_folder / "broken.png").write_bytes(b"garbage")
    Image.fromarray(photo("chelsea", (0, 0, 40, 40))).save(photo_folder / "tiny.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = write_shards(folder_refs(photo_folder), ExtractSpec([4], 96, 48, 0), tmp_path / "s", 10, 1, "x")
    assert info["num_skipped"] == 2
    assert any("broken.png" in s for s in info["skipped"]) and any("tiny" in s and "smaller" in s for s in info["skipped"])
    assert any("broken.png" in str(w.message) for w in caught)


def test_empty_missing_and_duplicate_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(tmp_path / "empty")
    d = tmp_path / "dup"
    d.mkdir()
    for ext in ("png", "jpg"):
        Image.fromarray(photo("chelsea", (0, 0, 32, 32))).save(d / f"0001.{ext}")
    with pytest.raises(ImageError, match="duplicate image name '0001'"):
        list_images(d)


def test_failed_extraction_leaves_previous_output(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "info.json").write_text("{}")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    with pytest.raises(ImageError, match="no sub-images"):
        write_shards([ImageRef("x", str(bad / "x.png"))], ExtractSpec([4], 96, 48, 0), out, 10, 1, "bad")
    assert (out / "info.json").read_text() == "{}" and not (tmp_path / "s.tmp").exists()


def test_hub_source_offline_gives_clear_error(monkeypatch):
    from pipeline.data.sources import resolve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ImageError, match="hub:someone/div2k.*local folder"):
        resolve("hub:someone/div2k")


@pytest.mark.slow
def test_test2k_and_test4k_are_div8k_downsampled_by_a_quarter_and_a_half(tmp_path):
    """ClassSR's author (issue #20): Test2K = DIV8K 1201-1300 x1/4, Test4K = 1301-1400 x1/2 (not a long side
    of 2048 / 4096, which only an 8192-px image would give)."""
    from pipeline.data.prepare import TEST_XK, write_test_set

    class Synthetic(ImageRef):  # a DIV8K-size image without a 50 MB PNG on disk
        def load(self):
            y, x = np.mgrid[0:3240, 0:5760]
            return np.stack([(x // 7) % 256, (y // 5) % 256, (x + y) % 256], -1).astype(np.uint8)

    sizes = {}
    for name in ("Test2K", "Test4K"):
        first, _, factor = TEST_XK[name]
        write_test_set([Synthetic(str(first))], factor, [4], tmp_path / name, 1)
        sizes[name] = read_image(tmp_path / name / f"HR/{first}.png").shape[:2]
        assert read_image(tmp_path / name / f"LR_bicubic/X4/{first}.png").shape[:2] == tuple(s // 4 for s in sizes[name])
    assert sizes == {"Test2K": (808, 1440), "Test4K": (1620, 2880)}  # 3240x5760 / 4 and / 2, mod-cropped to 4
    assert TEST_XK["Test8K"][2] is None


def test_df2k_source_is_a_list_of_folders_with_unique_names(tmp_path, monkeypatch):
    """prepare_sr.source: [DIV2K_train_HR, Flickr2K_HR] reads both; a name in two folders is an error naming both."""
    from pipeline.data.sources import resolve
    from pipeline.params import ParamError, load_section

    for folder, names in [("DIV2K_train_HR", ["0001", "0002"]), ("Flickr2K_HR", ["000001"])]:
        (tmp_path / folder).mkdir()
        for n in names:
            Image.fromarray(photo("chelsea", (0, 0, 64, 64))).save(tmp_path / folder / f"{n}.png")
    refs = resolve([str(tmp_path / "DIV2K_train_HR"), str(tmp_path / "Flickr2K_HR")])
    assert [r.name for r in refs] == ["0001", "0002", "000001"]
    (tmp_path / "other").mkdir()
    Image.fromarray(photo("chelsea", (0, 0, 64, 64))).save(tmp_path / "other/0002.png")
    with pytest.raises(ImageError, match="'0002' is in two source folders.*DIV2K_train_HR/0002.png.*other/0002.png"):
        resolve([str(tmp_path / "DIV2K_train_HR"), str(tmp_path / "other")])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("prepare_sr:\n  source: [DIV2K_train_HR, Flickr2K_HR]\n")
    assert load_section("prepare_sr").source == ["DIV2K_train_HR", "Flickr2K_HR"]
    (tmp_path / "params.yaml").write_text("prepare_sr:\n  source: [DIV2K_train_HR, Flickr2K]\n")
    with pytest.raises(ParamError, match=r"prepare_sr.source\[1\].*'Flickr2K' does not exist"):
        load_section("prepare_sr")


def test_shards_pickle_by_folder_not_by_pixels(photo_folder, tmp_path):
    """Loader workers started by spawn receive the folder and map the files again."""
    import pickle

    write_shards(folder_refs(photo_folder), ExtractSpec([4], 96, 48, 0), tmp_path / "s", 10, 1, "x")
    shards = PairShards(tmp_path / "s", 4)
    blob = pickle.dumps(shards)
    assert len(blob) < 10_000
    again = pickle.loads(blob)
    assert all(np.array_equal(a, b) for a, b in zip(again.pair(3), shards.pair(3)))


def test_any_folder_under_benchmark_root_is_a_test_set_and_given_lr_is_used(tmp_path):
    """Set5/ as images, MySet/HR + LR_bicubic/X4 (EDSR-PyTorch's layout, ``x4`` names), DIV2K's
    ``*_valid_HR`` + ``*_valid_LR_bicubic/X4``: three sets; a download's own LR is used as it is."""
    from types import SimpleNamespace

    from pipeline.data.images import bicubic_downscale, write_png
    from pipeline.data.prepare import test_sets, write_test_set

    rng = np.random.default_rng(0)
    root = tmp_path / "bench"
    hr = rng.integers(0, 256, (50, 66, 3), dtype=np.uint8)  # not a multiple of 4: mod-cropped to 48 x 64
    marked = np.full((12, 16, 3), 7, np.uint8)  # a "given" LR that no bicubic would make
    for folder, lr_dir, lr_name in [("Set5", None, None), ("MySet/HR", "MySet/LR_bicubic/X4", "imgx4"),
                                    ("DIV2K_valid_HR", "DIV2K_valid_LR_bicubic/X4", "imgx4")]:
        (root / folder).mkdir(parents=True)
        write_png(root / folder / "img.png", hr)
        if lr_dir:
            (root / lr_dir).mkdir(parents=True)
            write_png(root / lr_dir / f"{lr_name}.png", marked)
    cfg = SimpleNamespace(sample=False, benchmark_root=str(root), benchmarks=[], div8k="", scales=[4])
    sets = test_sets(cfg)
    assert sorted(sets) == ["DIV2K_valid", "MySet", "Set5"]
    for name, (refs, downscale, given) in sets.items():
        write_test_set(refs, downscale, [4], tmp_path / "out" / name, 1, given)
        lr = read_image(tmp_path / "out" / name / "LR_bicubic/X4/img.png")
        assert read_image(tmp_path / "out" / name / "HR/img.png").shape == (48, 64, 3)
        expected = bicubic_downscale(hr[:48, :64], 4) if name == "Set5" else marked
        assert np.array_equal(lr, expected), name
    (root / "MySet/LR_bicubic/X4/imgx4.png").unlink()  # a given LR folder must hold every image's LR
    with pytest.raises(ImageError, match="LR_bicubic/X4: no LR image for 'img'"):
        test_sets(SimpleNamespace(**{**vars(cfg), "benchmarks": ["MySet"]}))


def test_a_named_benchmark_that_is_not_there_fails_by_key(tmp_path):
    from pipeline.params import ParamError, PrepareTest

    (tmp_path / "Set5").mkdir()
    PrepareTest(benchmark_root=str(tmp_path), benchmarks=["Set5"]).validate("prepare_test")
    with pytest.raises(ParamError, match=r"prepare_test.benchmarks\[1\].*no folder 'Urban100'"):
        PrepareTest(benchmark_root=str(tmp_path), benchmarks=["Set5", "Urban100"]).validate("prepare_test")
