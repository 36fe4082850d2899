"""The one training loop every stage uses: Accelerate around a plain PyTorch loop.

A method brings an :class:`~pipeline.objective.Objective` (its loss, extra modules such as a
discriminator with its own optimizer, what to optimise, which network it delivers); the loop does the
rest: iteration counting, Adam with the papers' schedules, gradient accumulation and clipping, mixed
precision, EMA, validation, checkpoints with automatic resume, the NaN guard, progress and tracking,
and returns the trained network with its scores. Saving the deliverable is the stage's job.

Resume state lives in ``ckpt_dir/latest`` (written atomically with ``save_state``) next to a
fingerprint of the stage's params, its training data, the model's starting weights and the code of
every project file the stage imports: a rerun resumes only when the fingerprint matches, otherwise it
starts fresh and says what changed (a stale checkpoint is never continued under new params or code, or
from a retrained upstream model). The training curve is saved with it.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from pipeline.data.loader import PatchBatches, make_loader
from pipeline.distributed import global_means, make_accelerator
from pipeline.files import recover_dir, replace_dir
from pipeline.imports import code_digest, entry_module
from pipeline.objective import Objective
from pipeline.params import Schedule, TrainConfig, as_flat_dict
from pipeline.tracking import stage_run

# ---- schedules and EMA ----------------------------------------------------------------------------


def lr_factor(schedule: Schedule, max_steps: int, base_lr: float) -> Callable[[int], float]:
    """Multiplier of the base lr at a step: constant, step decay, or BasicSR's cosine with restarts,
    times a linear warm-up over the first ``warmup_steps``."""
    decay = _decay_factor(schedule, max_steps, base_lr)
    if schedule.warmup_steps <= 0:
        return decay
    return lambda step: decay(step) * min(1.0, (step + 1) / schedule.warmup_steps)


def _decay_factor(schedule: Schedule, max_steps: int, base_lr: float) -> Callable[[int], float]:
    if schedule.kind == "constant":
        return lambda step: 1.0
    if schedule.kind == "multistep":
        return lambda step: schedule.gamma ** sum(step >= m for m in schedule.milestones)
    periods = schedule.periods or [max_steps]
    weights = schedule.restart_weights or [1.0] * len(periods)
    starts = np.cumsum([0] + periods[:-1])

    floor = schedule.eta_min / base_lr

    def cosine(step: int) -> float:
        i = max(int(np.searchsorted(starts, step, side="right")) - 1, 0)
        t = min((step - starts[i]) / periods[i], 1.0)
        return floor + weights[i] * 0.5 * (1 - floor) * (1 + math.cos(math.pi * t))

    return cosine


class LambdaSchedule:
    """Sets each param group's lr to base_lr * its ``lr_scale`` (default 1) * factor(step); its state is
    just the step."""

    def __init__(self, optimizer, base_lr: float, factor: Callable[[int], float]):
        self.optimizer, self.base_lr, self.factor, self.step_count = optimizer, base_lr, factor, 0
        self._apply()

    def _apply(self):
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * group.get("lr_scale", 1.0) * self.factor(self.step_count)

    def step(self):
        self.step_count += 1
        self._apply()

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self):
        return {"step_count": self.step_count}

    def load_state_dict(self, state):
        self.step_count = state["step_count"]
        self._apply()


class EMA:
    """Exponential moving average of a model's weights (registered for checkpointing)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module):
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - self.decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)


@dataclass
class TrainState:
    step: int = 0
    run_id: str = ""
    best_psnr: float = -1.0

    def state_dict(self):
        return {"step": self.step, "run_id": self.run_id, "best_psnr": self.best_psnr}

    def load_state_dict(self, state):
        self.step, self.run_id, self.best_psnr = state["step"], state["run_id"], state["best_psnr"]


# ---- checkpoints ----------------------------------------------------------------------------------


def weights_hash(model: nn.Module) -> str:
    """Hash of a model's starting weights: a checkpoint trained from other initial weights (e.g. an
    upstream teacher that was retrained under the same downstream params) must not be resumed."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(params, data_info: dict, init: str = "") -> dict:
    """What a checkpoint was trained from: the stage's params, its training data, its starting weights,
    and the code of every project file the stage's entry module imports (:mod:`pipeline.imports`)."""
    return {"params": _digest(as_flat_dict(params)), "data": _digest(data_info), "init": init,
            "code": code_digest(entry_module())}


FINGERPRINT = "fingerprint.json"


def _saved_fingerprint(ckpt_dir: Path) -> dict | None:
    f = ckpt_dir / "latest" / FINGERPRINT
    return json.loads(f.read_text()) if f.is_file() else None


def why_not_resumable(saved: dict | None, fp: dict) -> str:
    """'' when a checkpoint with fingerprint ``saved`` continues this training, else the reason."""
    if saved is None:
        return "it has no fingerprint (an older pipeline version wrote it)"
    labels = {"params": "the stage's params", "data": "the training data", "init": "the starting weights"}
    changed = [label for key, label in labels.items() if saved.get(key) != fp[key]]
    old, new = saved.get("code", {}), fp["code"]
    files = sorted(f for f in set(old) | set(new) if old.get(f) != new.get(f))
    if files:
        changed.append("the code of " + ", ".join(files))
    return ("changed since it was written: " + "; ".join(changed)) if changed else ""


PROGRESS = "progress.json"  # written last: a checkpoint folder without it is incomplete


def _saved_step(checkpoint: Path) -> int | None:
    f = checkpoint / PROGRESS
    return json.loads(f.read_text())["step"] if f.is_file() else None


def _save_checkpoint(accelerator, ckpt_dir: Path, fp: dict, curve: "CurveLog | None", step: int):
    tmp, latest = ckpt_dir / "latest.tmp", ckpt_dir / "latest"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / FINGERPRINT).write_text(json.dumps(fp, indent=1, sort_keys=True))
        curve.save(tmp / CurveLog.NAME)  # the curve so far, so a resumed or forced rerun plots it whole
        (tmp / PROGRESS).write_text(json.dumps({"step": step}))
        replace_dir(tmp, latest)
    accelerator.wait_for_everyone()


class CurveLog:
    """The training curve of a stage as a CSV (a DVC plot): one row per ``log_every`` steps.

    Its rows also go into every checkpoint: DVC deletes the plot file before it reruns a stage, so a
    resumed run (after a kill, or ``dvc repro -f`` on a finished checkpoint) starts from the rows saved
    with the checkpoint, and the plot ends up with every logged step once."""

    NAME = "curve.csv"

    def __init__(self, path: Path, rows: list[dict] | None = None):
        self.path, self.rows = path, list(rows or [])
        self.save(path)

    @staticmethod
    def saved_rows(checkpoint: Path, step: int) -> list[dict]:
        f = checkpoint / CurveLog.NAME
        if not f.is_file():
            return []
        with f.open() as fh:
            return [r for r in csv.DictReader(fh) if int(r["step"]) <= step]

    def fields(self) -> list[str]:
        return ["step"] + sorted(k for k in self.rows[0] if k != "step") if self.rows else []

    def save(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            if self.rows:
                w = csv.DictWriter(f, self.fields(), extrasaction="ignore")
                w.writeheader()
                w.writerows(self.rows)

    def append(self, row: dict):
        self.rows.append(row)
        if len(self.rows) == 1:
            self.save(self.path)
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields(), extrasaction="ignore").writerow(row)


def curve_path(stage: str) -> Path:
    """``plots/train/<stage>.csv`` with DVC-friendly names (train_branch@hard -> train_branch_hard); the
    phases of a stage go in its folder (finetune_classsr:joint -> finetune_classsr/joint.csv)."""
    return Path("plots/train") / (stage.replace("@", "_").replace(":", "/") + ".csv")


# ---- the loop -------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: nn.Module  # the objective's deployed network (EMA weights when EMA is on), on the CPU, in eval
    steps: int
    metrics: dict = field(default_factory=dict)  # the last validation scores
    run_id: str = ""  # this training's MLflow run ('' without tracking): tracking.log_to_run adds to it
    is_main: bool = True  # only the main process saves outputs and logs


def train(model: nn.Module, cfg: TrainConfig, batches: PatchBatches, objective: Objective | None = None, *,
          stage: str, params, ckpt_dir, data_info: dict | None = None,
          validate: Callable[[nn.Module], dict] | None = None, leave_run_open: bool = False) -> TrainResult:
    """Train ``model`` for ``cfg.max_steps`` optimizer steps under ``objective`` (default: L1); resume
    from ``ckpt_dir`` when its checkpoint matches; return the deployed network and its scores.

    ``validate(net) -> {"psnr": ..., ...}`` (e.g. :class:`pipeline.evaluate.Validator`) scores the
    objective's deployed network every ``val_every`` steps and at the end (every process its share of
    the images when the validator is sharded; the scores are the same on every process).
    ``params`` (the stage's params section) and ``data_info`` enter the resume fingerprint.
    ``leave_run_open``: the MLflow run stays open for what the stage does after training (its scores,
    :func:`pipeline.deliver.deliver` ends it; :func:`pipeline.stage.run` ends it if the stage fails)."""
    from accelerate.utils import set_seed

    objective = objective or Objective(cfg.rgb_range)
    if objective.rgb_range != cfg.rgb_range:
        raise ValueError(f"{stage}: the objective's loss is on the {objective.rgb_range} scale, "
                         f"train.rgb_range is {cfg.rgb_range}: the bias step would not match the official one")
    accelerator = make_accelerator(cfg.timeout_s, cfg.mixed_precision)
    set_seed(cfg.seed)
    accelerator.print(f"[{stage}] {accelerator.num_processes} processes ({accelerator.distributed_type.value}) "
                      f"on {accelerator.device}, precision {accelerator.mixed_precision}")
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(params, data_info or {}, weights_hash(model))
    parts = _prepare(accelerator, model, cfg, objective)
    state = TrainState()
    for obj in [parts.schedule, state] + ([parts.ema] if parts.ema else []):
        accelerator.register_for_checkpointing(obj)
    _resume(accelerator, ckpt_dir / "latest", fp, state, stage, cfg.join_timeout_s)

    batches.split(accelerator.process_index, accelerator.num_processes, cfg.grad_accum)
    loader = make_loader(batches, state.step * cfg.grad_accum, cfg.max_steps * cfg.grad_accum, cfg.num_workers)
    curve = None
    if accelerator.is_main_process:
        curve = CurveLog(curve_path(stage), CurveLog.saved_rows(ckpt_dir / "latest", state.step) if state.step else [])
    with stage_run(stage, params, accelerator.is_main_process, resume_run_id=state.run_id,
                   leave_open=leave_run_open) as tracker:
        state.run_id = tracker.run_id or state.run_id
        metrics = _loop(accelerator, parts, objective, loader, cfg, state, stage, ckpt_dir, fp, curve, tracker, validate)
        if validate and not metrics:  # resumed a finished run: nothing validated
            metrics = _validate(accelerator, validate, objective, parts.deliverable())
        final = copy.deepcopy(objective.deployed(parts.deliverable())).cpu().eval()
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(final, state.step, metrics, state.run_id, accelerator.is_main_process)


@dataclass
class _Parts:
    """The prepared model, its optimizer and schedule, the EMA, and what the optimizer updates."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LambdaSchedule
    ema: EMA | None
    unwrap: Callable

    def deliverable(self) -> nn.Module:
        return self.ema.model if self.ema else self.unwrap(self.model)


def input_range(model: nn.Module) -> float:
    """The pixel range a network computes on inside: 255 for one that carries its official 0-255 range
    (RFDN / RLFN built with ``img_range`` 255 scale their [0, 1] input up and their output down), else 1."""
    return float(getattr(model, "img_range", 1.0))


def bias_scale(model: nn.Module, cfg: TrainConfig) -> float:
    """How much larger than the official run's this network's bias gradients are: ``rgb_range`` over
    the range it computes on (1: it trains exactly as the official run, nothing to correct)."""
    return cfg.rgb_range / input_range(model)


def is_bias(name: str) -> bool:
    return name.endswith("bias")


def adam(model: nn.Module, trained: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over ``trained`` that steps as the official run on ``cfg.rgb_range`` images does.

    On [0, 1] images a network computes the official (0-255) function scaled by 1 / rgb_range when its
    weights are the official ones and its biases are 1 / rgb_range of theirs (exactly so for networks
    of convs, ReLU / LeakyReLU, pixel shuffles and linear skips, e.g. EDSR, MSRResNet). With the loss
    scaled by rgb_range (the objectives do), weight gradients equal the official ones, bias gradients
    are s = rgb_range times theirs: Adam, blind to a gradient's scale, would move each bias as far as
    the official bias moves, s times further relative to the function. Biases therefore step at lr / s
    with eps x s and weight decay x s^2 (the ``lr_scale`` :class:`LambdaSchedule` keeps), which is the
    official step / s exactly; :func:`clip_gradients` clips them at s x the official threshold, and
    :func:`official_initial_biases` starts a from-scratch network at the official init / s.

    A network that carries its own 0-255 range (``img_range`` 255: RLFN, E-RFDN, the official weights
    and from-scratch RFDN) computes the official function itself: s = 1, one group, the official step,
    sigmoid gates (ESA, CCA) included."""
    kw = {"betas": tuple(cfg.betas), "weight_decay": cfg.weight_decay}
    s = bias_scale(model, cfg)
    if s == 1:
        return torch.optim.Adam(trained, lr=cfg.lr, **kw)
    bias_ids = {id(p) for n, p in model.named_parameters() if is_bias(n)}
    weights = [p for p in trained if id(p) not in bias_ids]
    biases = [p for p in trained if id(p) in bias_ids]
    groups = [{"params": weights}, {"params": biases, "lr": cfg.lr / s, "lr_scale": 1 / s, "eps": 1e-8 * s,
                                    "weight_decay": cfg.weight_decay * s * s, "bias_scale": s}]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=cfg.lr, **kw)


def clip_gradients(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """Clip as the official run clips its gradients (``grad_clip``, by value or by the global norm): the
    bias group's gradients are s x the official ones (:func:`adam`), so its value threshold is s x the
    official one and it enters the norm divided by s. With AMP, unscale the gradients first."""
    if cfg.grad_clip <= 0:
        return
    groups = [(g["params"], g.get("bias_scale", 1.0)) for g in optimizer.param_groups]
    if cfg.grad_clip_kind == "value":
        for params, s in groups:
            torch.nn.utils.clip_grad_value_(params, cfg.grad_clip * s)
        return
    grads = [(p.grad, s) for params, s in groups for p in params if p.grad is not None]
    if not grads:
        return
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g / s) for g, s in grads]))
    coef = torch.clamp(cfg.grad_clip / (norm + 1e-6), max=1.0)  # torch's clip_grad_norm_ rule
    for g, _ in grads:
        g.mul_(coef)


@torch.no_grad()
def official_initial_biases(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """A from-scratch network's conv and linear biases at the official init / s: PyTorch's default bias
    init is relative to the official 0-255 signal; on [0, 1] it would be s times too large (and then, at lr /
    s, nearly frozen there). A network that carries its own range (s = 1) is left as built."""
    s = bias_scale(model, cfg)
    if s != 1:
        for m in model.modules():  # the layers PyTorch initialises (a MeanShift is built at its range)
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and m.bias is not None:
                m.bias.div_(s)
    return model


def _prepare(accelerator, model: nn.Module, cfg: TrainConfig, objective: Objective) -> _Parts:
    trained = objective.parameters(model)
    chosen = {id(p) for p in trained}
    for p in model.parameters():  # frozen parts get no gradient at all (no wasted backward through them)
        p.requires_grad_(id(p) in chosen)
    optimizer = adam(model, trained, cfg)
    extras, extra_opts = objective.modules(), objective.optimizers()
    prepared = accelerator.prepare(model, optimizer, *extras.values(), *extra_opts.values())
    objective.prepared(**dict(zip(list(extras) + list(extra_opts), prepared[2:])))
    # The schedule is stepped by hand once per optimizer step: Accelerate's prepared scheduler would
    # step num_processes times per step and end an iteration-based schedule early.
    schedule = LambdaSchedule(prepared[1], cfg.lr, lr_factor(cfg.schedule, cfg.max_steps, cfg.lr))
    ema = EMA(accelerator.unwrap_model(prepared[0]), cfg.ema_decay) if cfg.ema_decay > 0 else None
    return _Parts(prepared[0], prepared[1], schedule, ema, accelerator.unwrap_model)


def _resume(accelerator, latest: Path, fp: dict, state: TrainState, stage: str, wait_s: float):
    """Global rank 0 decides whether to resume and from which step, and tells the others: a rank that
    decided alone (a node's stale view of a shared folder) would run a loop of another length. The
    others then wait, up to ``wait_s``, until they see that checkpoint."""
    from accelerate.utils import broadcast_object_list

    decision = [("", None)]
    if accelerator.is_main_process:
        recovered = recover_dir(latest, lambda d: (d / PROGRESS).is_file())
        if recovered:
            print(f"[{stage}] the last checkpoint swap was interrupted: {recovered} put back as {latest}", flush=True)
        why = why_not_resumable(_saved_fingerprint(latest.parent), fp) if latest.exists() else "no checkpoint"
        decision = [(why, None if why else _saved_step(latest))]
    why, step = broadcast_object_list(decision)[0]
    if not why:
        if not accelerator.is_main_process:
            _wait_until_visible(latest, step, wait_s, accelerator.process_index)
        accelerator.load_state(str(latest))
        accelerator.print(f"[{stage}] resuming from {latest} at step {state.step}")
    elif why != "no checkpoint":
        accelerator.print(f"[{stage}] starting fresh at step 0: the checkpoint in {latest} cannot be resumed ({why})")


def _wait_until_visible(latest: Path, step: int | None, wait_s: float, rank: int):
    """Until this machine sees ``latest`` at ``step`` (NFS caches a directory's entries for up to a
    minute): a clear error after ``wait_s``, before any collective would time out."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.listdir(latest.parent)  # re-reads the directory: refreshes a client's cached view
            if latest.is_dir() and (step is None or _saved_step(latest) == step):
                return
        except (OSError, ValueError, KeyError):
            pass  # half-visible: look again
        if time.monotonic() > deadline:
            raise RuntimeError(f"rank {rank}: global rank 0 resumes from {latest} at step {step}, which this machine "
                               f"has not seen within {wait_s:g} s (train.join_timeout_s): the project folder must "
                               f"be on a filesystem every machine shares (docs/scaling-out.md)")
        time.sleep(0.2)


def _numbers(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if isinstance(v, (int, float))}


def _validate(accelerator, validate, objective: Objective, net: nn.Module) -> dict:
    """The scores of the deployed network, the same on every rank. A sharded validator (one that has
    ``shard``: :class:`pipeline.evaluate.Validator`) scores each rank's share of the images and the ranks
    gather them: no rank idles in a collective while another validates the whole set, so a validation
    cannot outlive the process group's timeout that a rank-0-only one would run against."""
    from accelerate.utils import broadcast_object_list, gather_object

    was_training = net.training
    net.eval()
    try:
        deployed = objective.deployed(net)
        if accelerator.num_processes > 1 and hasattr(validate, "shard"):
            shares = gather_object([validate.shard(deployed, accelerator.process_index, accelerator.num_processes)])
            return _numbers(validate.summary({k: v for share in shares for k, v in share.items()}))
        scores = [_numbers(validate(deployed)) if accelerator.is_main_process else None]
        return broadcast_object_list(scores)[0] if accelerator.num_processes > 1 else scores[0]
    finally:
        net.train(was_training)


def _loop(accelerator, parts: _Parts, objective, loader, cfg, state, stage, ckpt_dir, fp, curve, tracker,
          validate) -> dict:
    """The optimizer steps from ``state.step`` to ``cfg.max_steps``; returns the last validation scores."""
    from tqdm import tqdm

    model, accum, metrics = parts.model, cfg.grad_accum, {}
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc=stage, unit="step",
               disable=not accelerator.is_main_process, dynamic_ncols=True)
    model.train()
    window = _Window()
    t_data = time.perf_counter()
    for micro, (lr_img, hr_img) in enumerate(loader, start=state.step * accum):
        lr_img, hr_img = lr_img.to(accelerator.device, non_blocking=True), hr_img.to(accelerator.device, non_blocking=True)
        t_step = time.perf_counter()
        window.data_time += t_step - t_data
        last_micro = (micro + 1) % accum == 0
        extra_logs = objective.before_step(accelerator, model, lr_img, hr_img, state.step) if micro % accum == 0 else {}
        with contextlib.nullcontext() if last_micro else accelerator.no_sync(model):
            with accelerator.autocast():
                loss, logs = objective.loss(model, lr_img, hr_img, state.step)
            _check_finite(accelerator, loss, state.step, stage, ckpt_dir)
            accelerator.backward(loss / accum)
        window.add({**logs, **extra_logs}, accum)
        if not last_micro:
            t_data = time.perf_counter()
            continue
        if cfg.grad_clip > 0:
            accelerator.unscale_gradients(parts.optimizer)  # AMP: clip the true gradients
            clip_gradients(parts.optimizer, cfg)
        parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
        parts.schedule.step()
        if parts.ema:
            parts.ema.update(accelerator.unwrap_model(model))
        state.step += 1
        window.step(time.perf_counter() - t_step)
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:  # the global batch's means
            _log(global_means(window.flush(parts.schedule.get_lr())), state.step, bar, tracker, curve)
        if validate and (state.step % cfg.val_every == 0 or state.step == cfg.max_steps):
            metrics = _validate(accelerator, validate, objective, parts.deliverable())
            tracker.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step=state.step)
            if accelerator.is_main_process:
                bar.write(f"[{stage}] step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if state.step % cfg.ckpt_every == 0 or state.step == cfg.max_steps:
            _save_checkpoint(accelerator, ckpt_dir, fp, curve, state.step)
        t_data = time.perf_counter()
    bar.close()
    if state.step < cfg.max_steps:
        raise RuntimeError(f"[{stage}] data stream ended at step {state.step} < max_steps {cfg.max_steps}")
    return metrics


class _Window:
    """Sums of the logged values and timings over the steps since the last log line."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.data_time = self.step_time = 0.0
        self.n = 0

    def add(self, logs: dict, accum: int):
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) / accum

    def step(self, seconds: float):
        self.step_time += seconds
        self.n += 1

    def flush(self, lr: float) -> dict:
        n = max(self.n, 1)
        row = {k: v / n for k, v in self.sums.items()}
        row.update(lr=lr, data_time=self.data_time / n, step_time=self.step_time / n)
        self.__init__()
        return row


def _log(row: dict, step: int, bar, tracker, curve: CurveLog | None):
    bar.set_postfix(loss=f"{row.get('l1', next(iter(row.values()))):.4f}",
                    data=f"{row['data_time'] * 1e3:.0f}ms", step=f"{row['step_time'] * 1e3:.0f}ms")
    tracker.log_metrics({f"train/{k}": v for k, v in row.items()}, step=step)
    if curve:
        curve.append({"step": step, **row})


def _check_finite(accelerator, loss: torch.Tensor, step: int, stage: str, ckpt_dir: Path):
    bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, "sum")
    if bad.item() > 0:
        last = ckpt_dir / "latest"
        kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written yet"
        raise FloatingPointError(f"[{stage}] loss is {float(loss.detach())} (not finite) at step {step}; "
                                 f"{kept}. Lower train.lr, set train.grad_clip, or check the data.")
