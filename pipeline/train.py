"""The one training loop every stage uses: Accelerate around a plain PyTorch loop.

A method brings an :class:`Objective` (its loss, and any extra modules such as a frozen teacher or a
discriminator with its own optimizer); the loop does the rest: iteration counting, Adam with the
papers' schedules, gradient accumulation and clipping, mixed precision, EMA, validation, checkpoints
with automatic resume, the NaN guard, progress and tracking.

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
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.loader import PatchBatches, make_loader
from pipeline.imports import code_digest, entry_module
from pipeline.params import Schedule, TrainConfig, as_flat_dict
from pipeline.tracking import stage_run

# ---- what a method plugs in -----------------------------------------------------------------------


class Objective:
    """L1 between SR and HR; subclasses override ``loss`` and may add modules/optimizers.

    ``modules`` (e.g. a discriminator) and ``optimizers`` are prepared by Accelerate and saved in the
    checkpoint; ``before_step`` runs once per optimizer step before the model's loss (e.g. a
    discriminator update).
    """

    def modules(self) -> dict[str, nn.Module]:
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def before_step(self, accelerator, model, lr, hr, step: int) -> dict:
        return {}

    def loss(self, model, lr, hr, step: int) -> tuple[torch.Tensor, dict]:
        loss = F.l1_loss(model(lr), hr)
        return loss, {"l1": loss.detach()}


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
    """Sets each param group's lr to base_lr * factor(step); its state is just the step."""

    def __init__(self, optimizer, base_lr: float, factor: Callable[[int], float]):
        self.optimizer, self.base_lr, self.factor, self.step_count = optimizer, base_lr, factor, 0
        self._apply()

    def _apply(self):
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * self.factor(self.step_count)

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


def _save_checkpoint(accelerator, ckpt_dir: Path, fp: dict, curve: "CurveLog | None"):
    tmp, latest = ckpt_dir / "latest.tmp", ckpt_dir / "latest"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / FINGERPRINT).write_text(json.dumps(fp, indent=1, sort_keys=True))
        curve.save(tmp / CurveLog.NAME)  # the curve so far, so a resumed or forced rerun plots it whole
        old = ckpt_dir / "latest.old"
        shutil.rmtree(old, ignore_errors=True)
        if latest.exists():
            latest.rename(old)
        tmp.rename(latest)
        shutil.rmtree(old, ignore_errors=True)
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
    model: nn.Module  # the deliverable (EMA weights when EMA is on), unwrapped, on CPU
    steps: int
    metrics: dict = field(default_factory=dict)


def train(model: nn.Module, cfg: TrainConfig, data: PatchBatches, *, stage: str, params, ckpt_dir,
          objective: Objective | None = None, validate: Callable[[nn.Module], dict] | None = None,
          data_info: dict | None = None, trainable: Callable[[nn.Module], list] | None = None,
          finish: Callable | None = None) -> TrainResult:
    """Train ``model`` for ``cfg.max_steps`` optimizer steps; resumes from ``ckpt_dir`` when it matches.

    ``validate(model) -> {"psnr": ..., ...}`` runs on the main process every ``val_every`` steps and at
    the end. ``trainable(model)`` picks the parameters to optimise (default: all). ``finish(model,
    metrics, tracker)`` runs on the main process inside the stage's MLflow run, to save and log the
    deliverable.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    objective = objective or Objective()
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    accelerator.print(f"[{stage}] {accelerator.num_processes} processes ({accelerator.distributed_type.value}) "
                      f"on {accelerator.device}, precision {accelerator.mixed_precision}")
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(params, data_info or {}, weights_hash(model))

    params_to_train = (trainable or (lambda m: [p for p in m.parameters() if p.requires_grad]))(model)
    if trainable is not None:  # frozen parts get no gradient at all (no wasted backward through them)
        chosen = {id(p) for p in params_to_train}
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
    optimizer = torch.optim.Adam(params_to_train, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    extras, extra_opts = objective.modules(), objective.optimizers()
    prepared = accelerator.prepare(model, optimizer, *extras.values(), *extra_opts.values())
    model, optimizer = prepared[0], prepared[1]
    objective_parts = dict(zip(list(extras) + list(extra_opts), prepared[2:]))
    for name, part in objective_parts.items():
        setattr(objective, name, part)
    # The schedule is stepped by hand once per optimizer step: Accelerate's prepared scheduler would
    # step num_processes times per step and end an iteration-based schedule early.
    schedule = LambdaSchedule(optimizer, cfg.lr, lr_factor(cfg.schedule, cfg.max_steps, cfg.lr))
    ema = EMA(accelerator.unwrap_model(model), cfg.ema_decay) if cfg.ema_decay > 0 else None
    state = TrainState()
    for obj in [schedule, state] + ([ema] if ema else []):
        accelerator.register_for_checkpointing(obj)

    latest = ckpt_dir / "latest"
    why = why_not_resumable(_saved_fingerprint(ckpt_dir), fp) if latest.exists() else "no checkpoint"
    if not why:
        accelerator.load_state(str(latest))
        accelerator.print(f"[{stage}] resuming from {latest} at step {state.step}")
    elif latest.exists():
        accelerator.print(f"[{stage}] starting fresh at step 0: the checkpoint in {latest} cannot be resumed ({why})")

    data.rank = accelerator.process_index
    accum = cfg.grad_accum
    loader = make_loader(data, state.step * accum, cfg.max_steps * accum, cfg.num_workers)
    deliverable = lambda: ema.model if ema else accelerator.unwrap_model(model)  # noqa: E731
    metrics: dict = {}
    curve = None
    if accelerator.is_main_process:
        curve = CurveLog(curve_path(stage), CurveLog.saved_rows(latest, state.step) if state.step else [])

    with stage_run(stage, params, accelerator.is_main_process, resume_run_id=state.run_id) as tracker:
        state.run_id = tracker.run_id or state.run_id
        bar = tqdm(total=cfg.max_steps, initial=state.step, desc=stage, unit="step",
                   disable=not accelerator.is_main_process, dynamic_ncols=True)
        model.train()
        window = {"data_time": 0.0, "step_time": 0.0, "n": 0}
        logs_sum: dict[str, float] = {}
        t_data = time.perf_counter()
        for micro, (lr, hr) in enumerate(loader, start=state.step * accum):
            lr, hr = lr.to(accelerator.device, non_blocking=True), hr.to(accelerator.device, non_blocking=True)
            t_step = time.perf_counter()
            window["data_time"] += t_step - t_data
            last_micro = (micro + 1) % accum == 0
            extra_logs = objective.before_step(accelerator, model, lr, hr, state.step) if micro % accum == 0 else {}
            sync = contextlib.nullcontext() if last_micro else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    loss, logs = objective.loss(model, lr, hr, state.step)
                _check_finite(accelerator, loss, state.step, stage, ckpt_dir)
                accelerator.backward(loss / accum)
            for k, v in {**logs, **extra_logs}.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + float(v) / accum
            if not last_micro:
                t_data = time.perf_counter()
                continue
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(params_to_train, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            if ema:
                ema.update(accelerator.unwrap_model(model))
            state.step += 1
            window["step_time"] += time.perf_counter() - t_step
            window["n"] += 1
            bar.update(1)

            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                n = max(window["n"], 1)
                row = {k: v / n for k, v in logs_sum.items()}
                row.update(lr=schedule.get_lr(), data_time=window["data_time"] / n, step_time=window["step_time"] / n)
                bar.set_postfix(loss=f"{row.get('l1', next(iter(row.values()))):.4f}",
                                data=f"{row['data_time'] * 1e3:.0f}ms", step=f"{row['step_time'] * 1e3:.0f}ms")
                tracker.log_metrics({f"train/{k}": v for k, v in row.items()}, step=state.step)
                if curve:
                    curve.append({"step": state.step, **row})
                window = {"data_time": 0.0, "step_time": 0.0, "n": 0}
                logs_sum = {}
            if validate and (state.step % cfg.val_every == 0 or state.step == cfg.max_steps):
                if accelerator.is_main_process:
                    net = deliverable()
                    was_training = net.training
                    net.eval()
                    metrics = {k: v for k, v in validate(net).items() if isinstance(v, (int, float))}
                    net.train(was_training)
                    tracker.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step=state.step)
                    bar.write(f"[{stage}] step {state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                accelerator.wait_for_everyone()
            if state.step % cfg.ckpt_every == 0 or state.step == cfg.max_steps:
                _save_checkpoint(accelerator, ckpt_dir, fp, curve)
            t_data = time.perf_counter()
        bar.close()
        if state.step < cfg.max_steps:
            raise RuntimeError(f"[{stage}] data stream ended at step {state.step} < max_steps {cfg.max_steps}")
        final = copy.deepcopy(deliverable()).cpu().eval()
        final.config = getattr(accelerator.unwrap_model(model), "config", None)
        if accelerator.is_main_process and validate and not metrics:
            metrics = {k: v for k, v in validate(final).items() if isinstance(v, (int, float))}
        if accelerator.is_main_process and finish:
            finish(final, metrics, tracker)
        accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(final, state.step, metrics)


def _check_finite(accelerator, loss: torch.Tensor, step: int, stage: str, ckpt_dir: Path):
    bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, "sum")
    if bad.item() > 0:
        last = ckpt_dir / "latest"
        kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written yet"
        raise FloatingPointError(f"[{stage}] loss is {float(loss.detach())} (not finite) at step {step}; "
                                 f"{kept}. Lower train.lr, set train.grad_clip, or check the data.")
