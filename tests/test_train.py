"""The shared training loop: exact resume, NaN guard, gradient accumulation, tracking (distributed runs:
test_multinode.py)."""
import os
import subprocess
import sys

import pytest
import yaml
import torch
from safetensors.torch import load_file

from pipeline import models
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.params import PretrainTeacher, load_section
from pipeline.objective import Objective
from pipeline.train import lr_factor, train
from pipeline.params import Schedule
from tiny import make_tiny_project

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_TRACKING", "0")
    monkeypatch.chdir(tmp_path)  # the loop writes its training curve under plots/train/
    return make_tiny_project(tmp_path)


def run_training(root, objective=None, ckpt="ckpt", ema=0.0, **overrides):
    cfg = load_section("pretrain_teacher", PretrainTeacher, root / "params.yaml")
    cfg.train.ema_decay = ema
    for key, value in overrides.items():
        setattr(cfg.train, key, value)
    torch.manual_seed(cfg.train.seed)
    model = models.build("msrresnet", 4, nf=8, nb=1)
    shards = PairShards(root / "data/sr", 4)
    data = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    return train(model, cfg.train, data, stage="test", params=cfg, ckpt_dir=root / ckpt, objective=objective,
                 data_info=shards.info)


class CrashAt(Objective):
    """Simulates a run killed mid-way: raises once the loop reaches ``step``."""

    def __init__(self, step):
        self.step = step

    def loss(self, model, lr, hr, step):
        if step == self.step:
            raise KeyboardInterrupt("killed")
        return super().loss(model, lr, hr, step)


def test_killed_run_resumes_bit_identical(tiny):
    uninterrupted = run_training(tiny, ckpt="a").model.state_dict()
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny, objective=CrashAt(5), ckpt="b")
    saved = load_file(str(tiny / "b/latest/model.safetensors"))
    assert not all(torch.equal(saved[k], uninterrupted[k]) for k in saved)  # the crash really left it mid-way
    resumed = run_training(tiny, ckpt="b").model.state_dict()
    for k, v in uninterrupted.items():
        assert torch.equal(v, resumed[k]), k
    # the training curve (a DVC plot) has each logged step once, in order, through the end
    import csv

    with open(tiny / "plots/train/test.csv") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 6 and steps == [2, 4, 6]
    assert all(float(r["l1"]) > 0 and float(r["lr"]) > 0 for r in rows)


def test_changed_params_start_fresh_not_resume(tiny, capsys):
    run_training(tiny, ckpt="c")
    text = (tiny / "params.yaml").read_text().replace("lr: 0.001", "lr: 0.002")
    (tiny / "params.yaml").write_text(text)
    run_training(tiny, ckpt="c")
    assert "starting fresh" in capsys.readouterr().out


def test_other_starting_weights_start_fresh_not_resume(tiny, capsys):
    """Same params and data, but the model starts from other weights (a retrained upstream teacher)."""
    run_training(tiny, ckpt="w")
    capsys.readouterr()
    run_training(tiny, ckpt="w")
    assert "resuming" in capsys.readouterr().out
    torch.manual_seed(123)  # run_training seeds from the params; start from other weights instead
    cfg = load_section("pretrain_teacher", PretrainTeacher, tiny / "params.yaml")
    model = models.build("msrresnet", 4, nf=8, nb=1)
    with torch.no_grad():
        model.conv_first.weight.add_(0.01)
    shards = PairShards(tiny / "data/sr", 4)
    data = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
    train(model, cfg.train, data, stage="test", params=cfg, ckpt_dir=tiny / "w", data_info=shards.info)
    assert "starting fresh" in capsys.readouterr().out


def test_ema_is_the_deliverable(tiny):
    plain = run_training(tiny, ckpt="d").model.state_dict()
    ema = run_training(tiny, ckpt="e", ema=0.9).model.state_dict()
    assert not torch.equal(plain["conv_first.weight"], ema["conv_first.weight"])


class NaNAt(Objective):
    def loss(self, model, lr, hr, step):
        loss, logs = super().loss(model, lr, hr, step)
        return (loss * float("nan") if step == 3 else loss), logs


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tiny):
    with pytest.raises(FloatingPointError, match="not finite.*step 3.*last good checkpoint"):
        run_training(tiny, objective=NaNAt(), ckpt="n")
    weights = load_file(str(tiny / "n/latest/model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_cosine_restart_schedule():
    f = lr_factor(Schedule(kind="cosine_restart", periods=[10, 10], restart_weights=[1, 0.5], eta_min=0.0), 20, 1.0)
    assert f(0) == pytest.approx(1.0) and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(0.5)
    assert f(15) == pytest.approx(0.25)
    g = lr_factor(Schedule(kind="multistep", milestones=[4, 8], gamma=0.5), 20, 1.0)
    assert [g(3), g(4), g(9)] == [1.0, 0.5, 0.25]
    w = lr_factor(Schedule(kind="constant", warmup_steps=4), 20, 1.0)
    assert [w(0), w(1), w(3), w(10)] == [0.25, 0.5, 1.0, 1.0]


def test_gradient_accumulation_2_x_2_equals_batch_4(tiny):
    """Two micro-batches of 2 with one optimizer step = one batch of 4: the same samples (the loader),
    the same averaged gradient (loss / grad_accum), the same step and schedule."""
    whole = run_training(tiny, ckpt="whole", batch_size=4).model.state_dict()
    accumulated = run_training(tiny, ckpt="accum", batch_size=2, grad_accum=2)
    assert accumulated.steps == 6
    for k, v in whole.items():
        torch.testing.assert_close(accumulated.model.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)


def _stage(root, env_extra=None, args=("pretrain_teacher", "stages.pretrain_teacher")):
    env = {**os.environ, "PYTHONPATH": REPO, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.launch", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_tracking_run_holds_params_metrics_artifacts(tmp_path):
    root = make_tiny_project(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = _stage(root, {"MLFLOW_TRACKING_URI": uri, "PIPELINE_TRACKING": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("sr-pipeline")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "pretrain_teacher" and run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "pretrain_teacher" and len(run.data.tags["params_hash"]) == 12
    assert run.data.params["train.max_steps"] == "6" and run.data.params["model.arch"] == "msrresnet"
    assert "val/psnr" in run.data.metrics and "psnr" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train/l1")) == 3  # every log_every=2 of 6 steps
    assert "model/config.json" in [a.path for a in client.list_artifacts(run.info.run_id, "model")]


@pytest.mark.slow
def test_unreachable_server_is_reported_at_start(tmp_path):
    root = make_tiny_project(tmp_path)
    out = _stage(root, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "PIPELINE_TRACKING": "1"})
    assert out.returncode != 0 and "http://127.0.0.1:9 is unreachable" in out.stderr
    assert not (root / "models/teacher").exists()


def _curve_steps(path):
    import csv

    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_forced_rerun_of_a_finished_stage_keeps_its_whole_curve(tiny, capsys):
    """`dvc repro -f` deletes the plot file, then the stage resumes its finished checkpoint and trains 0
    steps: the rows come back from the checkpoint."""
    first = run_training(tiny, ckpt="f").model.state_dict()
    (tiny / "plots/train/test.csv").unlink()
    capsys.readouterr()
    again = run_training(tiny, ckpt="f").model.state_dict()
    assert "resuming" in capsys.readouterr().out
    assert _curve_steps(tiny / "plots/train/test.csv") == [2, 4, 6]
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_fresh_start_names_what_changed():
    from pipeline.train import why_not_resumable

    saved = {"params": "p", "data": "d", "init": "i", "code": {"stages/distill_csd.py": "a", "pipeline/train.py": "b"}}
    assert why_not_resumable(saved, dict(saved)) == ""
    edited = {**saved, "code": {**saved["code"], "stages/distill_csd.py": "c"}}
    assert why_not_resumable(saved, edited) == "changed since it was written: the code of stages/distill_csd.py"
    other = {**edited, "params": "q"}
    assert "the stage's params; the code of stages/distill_csd.py" in why_not_resumable(saved, other)
    assert "no fingerprint" in why_not_resumable(None, saved)


def test_launcher_reads_typed_params_per_phase(tmp_path, monkeypatch):
    """Process counts come from the typed section: each finetune_classsr phase is its own launch, the
    hard branch's fine-tune settings apply to its launch."""
    from pipeline.launch import Launch, launches

    params = yaml.safe_load(open(os.path.join(REPO, "params.yaml")))
    params["finetune_classsr"]["phases"] = ["classifier", "joint"]
    params["finetune_classsr"]["classifier"]["num_processes"] = 2
    params["finetune_classsr"]["joint"]["mixed_precision"] = "bf16"
    params["train_branch"]["hard_finetune"]["num_processes"] = 3
    params["classify_patches"]["num_machines"] = 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PIPELINE_PARAMS", str(path))
    monkeypatch.chdir(REPO)
    assert launches("finetune_classsr", []) == [(["classifier"], Launch(2, workers=1)),
                                                (["joint"], Launch(1, 1, "bf16", workers=1))]
    assert launches("train_branch", ["hard"]) == [(["hard"], Launch(3, workers=1))]
    assert launches("train_branch", ["simple"]) == [(["simple"], Launch(1, workers=1))]
    assert launches("classify_patches", []) == [([], Launch(1, 2))]


def _official_and_ours():
    """An EDSR as the official code trains it (0-255) and the same function on [0, 1]: the official
    weights, its biases / 255 (the frozen MeanShift is built at each range)."""
    torch.manual_seed(0)
    official = models.build("edsr", 2, n_resblocks=2, n_feats=8, rgb_range=255.0).double()
    ours = models.build("edsr", 2, n_resblocks=2, n_feats=8, rgb_range=1.0).double()
    trained = {n for n, _ in official.named_parameters()}
    ours.load_state_dict({k: v / 255 if k in trained and k.endswith("bias") else v
                          for k, v in official.state_dict().items() if k in trained}, strict=False)
    return official, ours


def _official_step(model, opt, loss, clip: float, kind: str):
    """One step of the official EDSR-PyTorch / BasicSR loop: backward, clip (value or norm), Adam."""
    opt.zero_grad()
    loss.backward()
    if kind == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), clip)
    else:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()


def _our_step(model, opt, loss, cfg):
    """The same step as the training loop takes it: backward, clip_gradients, the adam() optimizer."""
    from pipeline.train import clip_gradients

    opt.zero_grad()
    loss.backward()
    clip_gradients(opt, cfg)
    opt.step()


def _data(scale: int):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64) * 255
    return x, torch.rand(2, 3, 16 * scale, 16 * scale, generator=g, dtype=torch.float64) * 255


@pytest.mark.parametrize("kind", ["value", "norm"])
@pytest.mark.parametrize("fixed", [True, False])
def test_a_0_1_network_steps_weights_and_biases_as_the_official_0_255_run(kind, fixed):
    """Four Adam steps with clipping on: on [0, 1], with the loss x 255, biases started at the official
    init / 255 and stepped at lr / 255, clipped at 255 x the official threshold, every weight moves as
    the official 0-255 run moves it and every bias by 1/255 of the official move. ``fixed`` False: one
    Adam group and one threshold for all (biases 255x too far relative to the function, and clipped
    255x harder)."""
    from pipeline.objective import Objective
    from pipeline.params import TrainConfig
    from pipeline.train import adam, official_initial_biases

    torch.manual_seed(0)
    official = models.build("edsr", 2, n_resblocks=2, n_feats=8, rgb_range=255.0).double()
    ours = models.build("edsr", 2, n_resblocks=2, n_feats=8, rgb_range=1.0).double()
    ours.load_state_dict({k: v for k, v in official.state_dict().items() if "mean" not in k}, strict=False)
    x, y = _data(2)
    clip = 0.05 if kind == "value" else 20.0  # thresholds the official gradients exceed: clipping acts
    cfg = TrainConfig(lr=1e-3, rgb_range=255.0 if fixed else 1.0, grad_clip=clip, grad_clip_kind=kind)
    official_initial_biases(ours, TrainConfig(rgb_range=255.0))  # a from-scratch start, as train_l1 makes it
    assert torch.allclose(ours(x / 255) * 255, official(x), atol=1e-9)  # the same function
    opt_official = torch.optim.Adam(official.parameters(), lr=1e-3, betas=tuple(cfg.betas))
    opt_ours = adam(ours, list(ours.parameters()), cfg)
    objective = Objective(255.0)
    for _ in range(4):
        _official_step(official, opt_official, torch.nn.functional.l1_loss(official(x), y), clip, kind)
        _our_step(ours, opt_ours, objective.loss(ours, x / 255, y / 255, 0)[0], cfg)
    official_params = dict(official.named_parameters())
    mismatched = [name for name, p in ours.named_parameters()
                  if not torch.allclose(p * (255 if name.endswith("bias") else 1), official_params[name],
                                        rtol=0, atol=1e-7)]  # steps are 1e-3; MeanShift's float32 mean: ~1e-8
    assert (mismatched == []) == fixed, mismatched


@pytest.mark.parametrize("arch, kwargs", [("rfdn", {"nf": 8, "num_blocks": 2, "attention": "esa"}),
                                          ("rlfn", {"nf": 8, "num_blocks": 2, "esa_channels": 4})])
@pytest.mark.parametrize("kind", ["value", "norm"])
def test_a_network_carrying_its_0_255_range_trains_as_its_official_run(arch, kwargs, kind):
    """RFDN / RLFN built with img_range 255 (the official weights; from-scratch E-RFDN) compute the
    official function themselves, ESA's sigmoid included: every parameter, biases too, must step with the
    official lr and threshold. lr / 255 on their biases (the old rule, keyed on train.rgb_range alone)
    nearly freezes them."""
    from pipeline.objective import Objective
    from pipeline.params import TrainConfig
    from pipeline.train import adam, bias_scale, official_initial_biases

    torch.manual_seed(0)
    official = models.build(arch, 4, **kwargs).double()  # fed 0-255, as the official code runs it
    ours = models.build(arch, 4, **kwargs, img_range=255.0).double()
    ours.load_state_dict(official.state_dict())
    cfg = TrainConfig(lr=1e-3, rgb_range=255.0, grad_clip=0.05 if kind == "value" else 20.0, grad_clip_kind=kind)
    assert bias_scale(ours, cfg) == 1.0
    official_initial_biases(ours, cfg)  # from scratch: the official init as it is
    x, y = _data(4)
    assert torch.allclose(ours(x / 255) * 255, official(x), atol=1e-8)
    opt_official = torch.optim.Adam(official.parameters(), lr=1e-3, betas=tuple(cfg.betas))
    opt_ours = adam(ours, list(ours.parameters()), cfg)
    assert len(opt_ours.param_groups) == 1 and opt_ours.param_groups[0]["lr"] == 1e-3
    objective = Objective(255.0)
    for _ in range(4):
        _official_step(official, opt_official, torch.nn.functional.l1_loss(official(x), y), cfg.grad_clip, kind)
        _our_step(ours, opt_ours, objective.loss(ours, x / 255, y / 255, 0)[0], cfg)
    official_params = dict(official.named_parameters())
    for name, p in ours.named_parameters():
        assert torch.allclose(p, official_params[name], rtol=0, atol=1e-9), name


def test_from_scratch_biases_start_at_the_official_scale():
    from pipeline.params import TrainConfig
    from pipeline.train import official_initial_biases

    torch.manual_seed(0)
    built = models.build("msrresnet", 4, nf=8, nb=1)
    before = {n: p.clone() for n, p in built.named_parameters()}
    official_initial_biases(built, TrainConfig(rgb_range=255.0))
    for name, p in built.named_parameters():
        torch.testing.assert_close(p, before[name] / (255 if name.endswith("bias") else 1))
    kept = models.build("msrresnet", 4, nf=8, nb=1)
    state = {n: p.clone() for n, p in kept.named_parameters()}
    official_initial_biases(kept, TrainConfig(rgb_range=1.0))  # a BasicSR run: as built
    assert all(torch.equal(p, state[n]) for n, p in kept.named_parameters())


def test_the_schedule_keeps_the_bias_group_at_lr_over_rgb_range():
    from pipeline.params import TrainConfig
    from pipeline.train import LambdaSchedule, adam

    _, ours = _official_and_ours()
    opt = adam(ours, list(ours.parameters()), TrainConfig(lr=1e-3, rgb_range=255.0))
    schedule = LambdaSchedule(opt, 1e-3, lambda step: 0.5 ** step)
    schedule.step()
    weights, biases = opt.param_groups
    assert all(n.endswith("bias") for n, p in ours.named_parameters() if any(p is q for q in biases["params"]))
    assert weights["lr"] == pytest.approx(5e-4) and biases["lr"] == pytest.approx(5e-4 / 255)


FAULTS_PER_STEP = """
import resource, sys, torch
from pipeline import models
from pipeline.stage import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
torch.manual_seed(0)
model = models.build("msrresnet", 4, nf=32, nb=2)
opt = torch.optim.Adam(model.parameters(), 1e-4)
x, y = torch.rand(8, 3, 24, 24), torch.rand(8, 3, 96, 96)
def step():
    loss = torch.nn.functional.l1_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_stages_keep_freed_memory_so_a_cpu_step_does_not_fault_its_activations_in_again():
    """pipeline.stage.run calls keep_freed_memory: with glibc's defaults each CPU training step returns
    its activations to the OS and faults them in again (a quarter of the default teacher's step)."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True, text=True,
                             check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return float(out.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 1000 and kept < default / 10, (default, kept)


class GhostCrashAt(CrashAt):
    """GhostSR's objective (Gumbel noise from torch's global generator), killed at ``step``."""

    def __init__(self, step, max_steps):
        from pipeline.methods.ghost import AnnealedGhost

        self.step, self.ghost = step, AnnealedGhost(1.0, 0.1, max_steps)

    def before_step(self, accelerator, model, lr, hr, step):
        return self.ghost.before_step(accelerator, model, lr, hr, step)


def test_ghost_killed_and_resumed_is_bit_identical(tiny):
    """The Gumbel noise draws from torch's global generator, which the checkpoint restores; the loader
    draws its workers' base seed from a generator of its own, or the resumed noise would be one draw off."""
    from pipeline.methods.ghost import convert

    def ghost_run(ckpt, crash_at=None):
        cfg = load_section("pretrain_teacher", PretrainTeacher, tiny / "params.yaml")
        torch.manual_seed(0)
        model = convert(models.build("msrresnet", 4, nf=8, nb=2), 0.5, mode="gumbel")
        shards = PairShards(tiny / "data/sr", 4)
        data = PatchBatches(shards, cfg.train.batch_size, cfg.train.lr_patch, cfg.train.seed)
        objective = GhostCrashAt(crash_at if crash_at is not None else -1, cfg.train.max_steps)
        return train(model, cfg.train, data, objective, stage="ghost", params=cfg, ckpt_dir=tiny / ckpt,
                     data_info=shards.info).model.state_dict()

    whole = ghost_run("a")
    with pytest.raises(KeyboardInterrupt):
        ghost_run("b", crash_at=3)
    resumed = ghost_run("b")
    for k, v in whole.items():
        assert torch.equal(v, resumed[k]), k


@pytest.mark.parametrize("tmp_complete, resumes_at", [(True, 4), (False, 2)])
def test_a_kill_between_the_checkpoint_renames_resumes_from_the_newest_complete(tiny, monkeypatch, capsys,
                                                                                tmp_complete, resumes_at):
    """A scheduler's time limit between ``latest -> latest.old`` and ``latest.tmp -> latest`` leaves no
    ``latest``: the rerun takes the complete latest.tmp (step 4), else latest.old (step 2), and ends at
    the uninterrupted model; the next save must not delete the only complete copy first."""
    import pipeline.train as loop

    uninterrupted = run_training(tiny, ckpt="a").model.state_dict()
    real, saves = loop.replace_dir, []

    def killed_between_the_renames(tmp, out):
        saves.append(tmp)
        if len(saves) == 2:  # the save at step 4: the first rename done, the second never comes
            out.rename(out.with_name(out.name + ".old"))
            if not tmp_complete:
                (tmp / loop.PROGRESS).unlink()  # as if killed while writing it
            raise KeyboardInterrupt("killed between the renames")
        real(tmp, out)

    monkeypatch.setattr(loop, "replace_dir", killed_between_the_renames)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny, ckpt="b")
    assert not (tiny / "b/latest").exists() and (tiny / "b/latest.old").is_dir()
    monkeypatch.setattr(loop, "replace_dir", real)
    capsys.readouterr()
    resumed = run_training(tiny, ckpt="b").model.state_dict()
    assert f"at step {resumes_at}" in capsys.readouterr().out
    for k, v in uninterrupted.items():
        assert torch.equal(v, resumed[k]), k
    assert sorted(p.name for p in (tiny / "b").iterdir()) == ["latest"]
