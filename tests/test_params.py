"""Params are validated before any work, with messages that name the key and what is allowed."""
import pytest
import yaml

from pipeline.params import ParamError, PrepareClassSR, PrepareSR, PretrainTeacher, load_section


def write(tmp_path, section, body):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({section: body}))
    return p


@pytest.mark.parametrize("body, key, allowed", [
    ({"scales": [5]}, "prepare_sr.scales[0]", "allowed: 2, 3, 4"),
    ({"step": 0}, "prepare_sr.step", "must be > 0"),
    ({"crop_size": "big"}, "prepare_sr.crop_size", "expected an integer"),
    ({"crop_sz": 480}, "prepare_sr.crop_sz", "unknown key; allowed keys: source"),
    ({"source": "/no/such/folder"}, "prepare_sr.source", "does not exist"),
    ({"crop_size": 8, "scales": [4]}, "prepare_sr.crop_size", ">= 8 px"),
])
def test_prepare_sr_errors_name_the_key(tmp_path, body, key, allowed):
    with pytest.raises(ParamError) as e:
        load_section("prepare_sr", PrepareSR, write(tmp_path, "prepare_sr", body))
    assert f"'{key}'" in str(e.value) and allowed in str(e.value)


def test_classsr_threshold_must_be_below_crop(tmp_path):
    with pytest.raises(ParamError, match="prepare_classsr.thresh_size"):
        load_section("prepare_classsr", PrepareClassSR, write(tmp_path, "prepare_classsr", {"thresh_size": 128}))


def test_nested_training_params(tmp_path):
    p = write(tmp_path, "pretrain_teacher", {"model": {"arch": "srgan"}})
    with pytest.raises(ParamError, match="'pretrain_teacher.model.arch'.*allowed: bsrn, carn_m, edsr"):
        load_section("pretrain_teacher", PretrainTeacher, p)
    p = write(tmp_path, "pretrain_teacher", {"train": {"mixed_precision": "fp8"}})
    with pytest.raises(ParamError, match="'pretrain_teacher.train.mixed_precision'.*'bf16'"):
        load_section("pretrain_teacher", PretrainTeacher, p)
    p = write(tmp_path, "pretrain_teacher", {"train": {"lr": 1, "max_steps": 3}})
    cfg = load_section("pretrain_teacher", PretrainTeacher, p)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.train.max_steps == 3


def test_hard_branch_finetune_overrides(tmp_path):
    from pipeline.params import TrainBranch

    branches = {"simple": {"nf": 4}, "medium": {"nf": 6}, "hard": {"nf": 8}}
    p = write(tmp_path, "train_branch", {"branches": branches, "hard_finetune": {"max_steps": 7, "lr": 1.0e-5},
                                         "train": {"max_steps": 50, "lr": 1.0e-3}})
    cfg = load_section("train_branch", TrainBranch, p)
    assert (cfg.train_config("hard").max_steps, cfg.train_config("hard").lr) == (7, 1.0e-5)
    assert cfg.train_config("simple").max_steps == 50
    p = write(tmp_path, "train_branch", {"branches": branches, "hard_finetune": {"steps": 7}})
    with pytest.raises(ParamError, match="'train_branch.hard_finetune.steps'.*allowed:.*max_steps"):
        load_section("train_branch", TrainBranch, p)


def test_erfdn_patch_too_small_for_esa(tmp_path):
    from pipeline.params import TrainRFDN

    p = write(tmp_path, "train_rfdn", {"train": {"lr_patch": 12}})
    with pytest.raises(ParamError, match="'train_rfdn.train.lr_patch'.*ESA"):
        load_section("train_rfdn", TrainRFDN, p)
    p = write(tmp_path, "train_rfdn", {"model": {"arch": "rlfn", "kwargs": {}}, "train": {"lr_patch": 12}})
    with pytest.raises(ParamError, match="'train_rfdn.train.lr_patch'.*rlfn's ESA"):
        load_section("train_rfdn", TrainRFDN, p)


def test_classsr_phases_are_checked(tmp_path):
    from pipeline.params import FinetuneClassSR

    p = write(tmp_path, "finetune_classsr", {"phases": ["joint", "classifier"]})
    with pytest.raises(ParamError, match="'finetune_classsr.phases'.*allowed"):
        load_section("finetune_classsr", FinetuneClassSR, p)


def test_repo_params_file_is_valid(repo, tmp_path, monkeypatch):
    import pipeline.params as P

    monkeypatch.chdir(repo)  # relative folders (benchmark_root: assets/benchmarks) resolve from the repo
    params_file = repo / "params.yaml"

    sections = [("prepare_sr", P.PrepareSR), ("prepare_classsr", P.PrepareClassSR), ("prepare_test", P.PrepareTest),
                ("pretrain_teacher", P.PretrainTeacher), ("classify_patches", P.ClassifyPatches),
                ("train_branch", P.TrainBranch), ("finetune_classsr", P.FinetuneClassSR), ("ghost", P.Ghost),
                ("distill_csd", P.DistillCSD), ("train_student_l1", P.TrainStudentL1), ("distill_pcl", P.DistillPCL),
                ("compose_classsr", P.ComposeClassSR), ("train_rfdn", P.TrainRFDN)]
    for section, cls in sections:
        load_section(section, cls, params_file)
    import yaml

    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for section, _ in sections:  # every stage lists its own section (or keys of it) and no other
        listed = dvc[section].get("params") or dvc[section]["do"]["params"]
        assert all(str(k).split(".")[0] == section for k in listed), section


def test_paper_profile_has_the_same_sections_and_is_well_typed(repo, tmp_path):
    """Folders of the paper profile do not exist here; everything else must validate."""
    import yaml

    import pipeline.params as P

    paper = yaml.safe_load((repo / "profiles/paper.yaml").read_text())
    default = yaml.safe_load((repo / "params.yaml").read_text())
    assert set(paper) == set(default)
    for section in ("prepare_sr", "prepare_classsr"):
        paper[section]["source"] = "sample"
    paper["prepare_test"].update(benchmark_root="", benchmarks=[], div8k="")
    paper["ghost"]["source"] = "models/teacher"  # the published EDSR x2 checkpoint is not here
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(paper))
    for section, cls in [("prepare_sr", P.PrepareSR), ("prepare_classsr", P.PrepareClassSR), ("prepare_test", P.PrepareTest),
                         ("pretrain_teacher", P.PretrainTeacher), ("classify_patches", P.ClassifyPatches),
                         ("train_branch", P.TrainBranch), ("finetune_classsr", P.FinetuneClassSR), ("ghost", P.Ghost),
                         ("distill_csd", P.DistillCSD), ("train_student_l1", P.TrainStudentL1),
                         ("distill_pcl", P.DistillPCL), ("evaluate", P.Evaluate),
                         ("compose_classsr", P.ComposeClassSR), ("train_rfdn", P.TrainRFDN)]:
        load_section(section, cls, p)


@pytest.mark.parametrize("processes, machines", [(8, 1), (8, 2)])
def test_the_paper_profile_for_8_processes_a_machine_validates_at_the_papers_global_batches(
        repo, tmp_path, monkeypatch, processes, machines):
    """`python -m pipeline.profiles profiles/paper.yaml --processes 8`: every stage validates in the
    profile's layout (CSD's neg_num 10 against the global batch of 16, 2 a process), and each training
    block's global batch stays the paper's."""
    from ruamel.yaml import YAML

    from pipeline.params import SECTIONS, from_dict
    from pipeline.profiles import derive_processes

    yaml = YAML(typ="safe")  # YAML 1.2, as DVC and the stages read params ('no' stays a string)

    raw = tmp_path / "data/raw"
    for folder in ["DIV2K_train_HR", "Flickr2K_HR", "DIV8K", "pretrained",
                   *(f"benchmark/{b}" for b in ("Set5", "Set14", "B100", "Urban100", "Manga109"))]:
        (raw / folder).mkdir(parents=True)
    for name in ("edsr_x2.pt", "edsr_x4.pt"):
        (raw / "pretrained" / name).touch()
    (tmp_path / "assets").symlink_to(repo / "assets")
    monkeypatch.chdir(tmp_path)
    derived = yaml.load(derive_processes(repo / "profiles/paper.yaml", processes, machines))
    paper = yaml.load((repo / "profiles/paper.yaml").read_text())
    for section, cls in SECTIONS.items():
        from_dict(cls, derived[section], section)

    def blocks(node, where=""):
        for key, value in node.items():
            if isinstance(value, dict):
                if {"max_steps", "batch_size"} <= set(value) or "num_processes" in value:
                    yield f"{where}{key}", value
                yield from blocks(value, f"{where}{key}.")

    ours, theirs = dict(blocks(derived)), dict(blocks(paper))
    assert ours.keys() == theirs.keys() and "distill_csd.train" in ours and "finetune_classsr.joint" in ours
    for key, block in ours.items():
        assert (block["num_processes"], block["num_machines"]) == (processes, machines), key
        if "batch_size" in block:
            assert block["batch_size"] * processes * machines == theirs[key]["batch_size"] * \
                theirs[key].get("num_processes", 1) * theirs[key].get("num_machines", 1), key
    assert derived["distill_csd"]["neg_num"] == 10


def test_params_survive_dvc_rewriting_the_file(repo, tmp_path, monkeypatch):
    """`dvc exp run -S` rewrites params.yaml with DVC's own YAML 1.2 writer (dvc.utils.serialize.modify_yaml):
    `mixed_precision: "no"` loses its quotes and must still read as the string 'no'."""
    from dvc.utils.serialize import modify_yaml

    import pipeline.params as P

    path = tmp_path / "params.yaml"
    path.write_text((repo / "params.yaml").read_text())
    with modify_yaml(str(path)) as data:
        data["train_rfdn"]["train"]["max_steps"] = 7
        data["pretrain_teacher"]["train"]["lr"] = 1e-3
    text = path.read_text()
    assert "mixed_precision: no\n" in text and 'mixed_precision: "no"' not in text
    assert yaml.safe_load(text)["train_rfdn"]["train"]["mixed_precision"] is False  # what YAML 1.1 would read
    monkeypatch.chdir(repo)
    rfdn = load_section("train_rfdn", P.TrainRFDN, path)
    assert rfdn.train.mixed_precision == "no" and rfdn.train.max_steps == 7
    assert load_section("pretrain_teacher", None, path).train.mixed_precision == "no"


@pytest.mark.parametrize("recipe, classsr_params", [("fsrcnn", 112_940), ("carn_m", 645_476), ("rcan", 30_114_948)])
def test_classsr_backbone_recipes_derive_valid_profiles_with_the_papers_sizes(repo, tmp_path, recipe, classsr_params):
    """Each recipe over the paper profile validates, and its branches + classifier have ClassSR's parameter
    totals (the paper's 113K / 645K / 30.1M); GhostSR converts the convs the recipe names."""
    import torch

    from pipeline import models
    from pipeline.methods.ghost import convert
    from pipeline.metrics import count_params
    from pipeline.params import read_params
    from pipeline.profiles import derive

    out = tmp_path / "params.yaml"
    out.write_text(derive(repo / "profiles/paper.yaml", repo / "profiles/classsr_backbones.yaml", recipe))
    branch = load_section("train_branch", path=out)
    teacher = load_section("pretrain_teacher", path=out)
    with torch.device("meta"):
        classsr = models.build("classsr", 4, branch_arch=branch.arch, branches=list(branch.branches.values()))
    assert count_params(classsr) == classsr_params
    ghost = read_params(out)["ghost"]  # rcan keeps the paper's GhostSR on a published EDSR x2 (not here)
    if ghost["layers"]:
        net = models.build(teacher.model.arch, 4, **teacher.model.kwargs)
        converted = convert(net, ghost["ratio"], ghost["layers"])
        assert count_params(converted) < count_params(net)
    assert "train_ClassSR_SRResNet.yml" in out.read_text()  # the base profile's comments are kept
    # train_ClassSR_RCAN.yml: l1w 4 on 0-255 images (250 before ClassSR commit 0cc23bb) = 4 x 255 on [0, 1]
    weights = load_section("finetune_classsr", path=out).loss_weights
    assert list(weights) == ([4 * 255, 0.5, 3] if recipe == "rcan" else [1000, 0.5, 3])


def test_a_recipe_key_missing_from_the_base_is_named(repo, tmp_path):
    from pipeline.params import ParamError
    from pipeline.profiles import derive

    (tmp_path / "r.yaml").write_text("bad:\n  train_branch.no_such_key: 1\n")
    with pytest.raises(ParamError, match="train_branch.no_such_key"):
        derive(repo / "profiles/paper.yaml", tmp_path / "r.yaml", "bad")


def test_csd_half_width_recipe_gives_the_10_8m_student(repo, tmp_path):
    from pipeline import models
    from pipeline.metrics import count_params
    from pipeline.models.slim import slim
    from pipeline.profiles import derive

    out = tmp_path / "params.yaml"
    out.write_text(derive(repo / "profiles/paper.yaml", repo / "profiles/csd_widths.yaml", "w0.5"))
    from pipeline.params import read_params

    params = read_params(out)
    assert params["distill_csd"]["width"] == params["train_student_l1"]["width"] == 0.5
    edsr = models.build("edsr", 4, n_resblocks=32, n_feats=256, res_scale=0.1)
    assert count_params(slim(edsr, 0.5)) == 10_780_675


def test_smoke_profile_shrinks_only_steps_batches_workers_and_processes(repo):
    from ruamel.yaml import YAML

    from pipeline.profiles import derive_smoke

    base = YAML().load((repo / "profiles/paper.yaml").read_text())
    smoke = YAML().load(derive_smoke(repo / "profiles/paper.yaml", steps=1, batch=2))

    def leaves(node, path=()):
        for k, v in node.items():
            yield from leaves(v, path + (k,)) if isinstance(v, dict) else [(path + (k,), v)]

    changed = {p for (p, v), (q, w) in zip(leaves(base), leaves(smoke)) if v != w}
    assert {p[-1] for p in changed} <= {"max_steps", "val_every", "ckpt_every", "log_every", "batch_size",
                                        "num_workers", "neg_num"}
    assert smoke["pretrain_teacher"]["model"] == base["pretrain_teacher"]["model"]  # the paper's widths
    assert smoke["distill_csd"]["train"]["max_steps"] == 1 and smoke["distill_csd"]["neg_num"] == 2
    assert smoke["prepare_sr"]["num_workers"] == 1 and smoke["ghost"]["train"]["num_workers"] == 0


@pytest.mark.parametrize("params_file", ["params.yaml", "profiles/paper.yaml"])
def test_each_stage_trains_on_its_official_pixel_range_and_pcl_follows_one_script(repo, params_file):
    """Issue 21 (1) and (3): EDSR-PyTorch / MindSpore runs (CSD and its L1 baseline, PCL, GhostSR,
    E-RFDN) on 0-255, BasicSR's (teacher, ClassSR) on [0, 1]; PCL as rcanx4_PCL.sh runs."""
    import yaml

    params = yaml.safe_load((repo / params_file).read_text())
    for section in ("ghost", "distill_csd", "train_student_l1", "distill_pcl", "train_rfdn"):
        assert params[section]["train"]["rgb_range"] == 255, section
    for section in ("pretrain_teacher", "train_branch", "compose_classsr"):
        assert params[section]["train"].get("rgb_range", 1) == 1, section
    pcl = params["distill_pcl"]
    assert pcl["alpha"] == 5 and pcl["sharp_hr"] is False and pcl["layers"] == [4]
