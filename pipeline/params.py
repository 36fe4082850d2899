"""Typed, validated sections of params.yaml.

Each stage reads only its own section: ``load_section("prepare_sr", PrepareSR)``. Unknown keys, wrong
types and impossible values raise :class:`ParamError` naming the dotted key and what is allowed, before
the stage does any work.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Optional


class ParamError(ValueError):
    """A params.yaml value is missing, unknown, of the wrong type or impossible."""


def _fail(key: str, msg: str):
    raise ParamError(f"params.yaml: '{key}': {msg}")


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for i, option in enumerate(inner):  # the first type the value converts to
            try:
                return _convert(value, option, key)
            except ParamError:
                if i == len(inner) - 1:
                    raise
    if origin is Literal:
        if value not in args:
            _fail(key, f"got {value!r}; allowed: {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            _fail(key, f"expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            _fail(key, f"expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1] if args else Any, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if hint is bool:
        if not isinstance(value, bool):
            _fail(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _fail(key, f"expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, raw: Any, prefix: str):
    """Build dataclass ``cls`` from a mapping, strictly, then run its ``validate(prefix)`` if any."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(prefix, f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        _fail(f"{prefix}.{unknown[0]}", f"unknown key; allowed keys: {', '.join(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if f.name in raw:
            kwargs[f.name] = _convert(raw[f.name], hints[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            _fail(key, "missing required key")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def check(cond: bool, key: str, msg: str):
    if not cond:
        _fail(key, msg)


def params_path() -> Path:
    return Path(os.environ.get("PIPELINE_PARAMS", "params.yaml"))


def read_params(path: Optional[Path] = None) -> dict:
    """The whole params file, read as DVC reads and writes it: YAML 1.2 (ruamel.yaml, safe mode).

    ``dvc exp run -S`` rewrites params.yaml with a YAML 1.2 writer, which drops the quotes of
    ``mixed_precision: "no"``; YAML 1.1 (PyYAML) would then read ``no`` as False (and ``1e-3`` as a
    string). One dialect for hand edits, ``-S`` and ``dvc exp apply`` alike."""
    from ruamel.yaml import YAML

    path = Path(path) if path is not None else params_path()
    if not path.is_file():
        raise ParamError(f"{path}: params file not found")
    return YAML(typ="safe", pure=True).load(path.read_text()) or {}


def load_section(section: str, cls=None, path: Optional[Path] = None):
    """The typed, validated section ``section`` (its class from :data:`SECTIONS` unless given)."""
    raw = read_params(path)
    if section not in raw:
        raise ParamError(f"{path or params_path()}: section '{section}' is missing")
    return from_dict(cls or SECTIONS[section], raw[section], section)


def as_flat_dict(obj, prefix: str = "") -> dict:
    """Dotted-key view of a params dataclass, for tracking."""
    flat = {}
    for k, v in (dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(as_flat_dict(v, key + "."))
        else:
            flat[key] = v
    return flat


def is_model(path: str) -> bool:
    """A saved model folder, or a published checkpoint file (``models.load`` reads both)."""
    return Path(path).is_dir() or (Path(path).is_file() and Path(path).suffix in (".pt", ".pth", ".safetensors"))


# ---- data preparation -----------------------------------------------------------------------------

def _check_source(source: str | list[str], key: str):
    if isinstance(source, list):  # several folders, e.g. DF2K = [DIV2K_train_HR, Flickr2K_HR]
        check(len(source) > 0, key, "give at least one folder")
        for i, folder in enumerate(source):
            check(Path(folder).is_dir(), f"{key}[{i}]", f"folder '{folder}' does not exist")
        return
    if source == "sample" or source.startswith("hub:"):
        return
    check(Path(source).is_dir(), key, f"folder '{source}' does not exist; use 'sample', 'hub:<dataset id>', "
          "a folder of HR images or a list of folders")


@dataclass
class PrepareSR:
    source: str | list[str] = "sample"  # 'sample' | a folder of HR images | a list of them (DF2K) | 'hub:<id>'
    hub_split: str = "train"
    hub_image_column: str = "image"
    scales: list[int] = field(default_factory=lambda: [4])
    crop_size: int = 480
    step: int = 240
    thresh_size: int = 0
    shard_mb: int = 500
    num_workers: int = 2

    def validate(self, p):
        _check_source(self.source, f"{p}.source")
        check(len(self.scales) > 0, f"{p}.scales", "give at least one scale")
        for i, s in enumerate(self.scales):
            check(s in (2, 3, 4), f"{p}.scales[{i}]", f"scale {s} not allowed; allowed: 2, 3, 4")
        check(self.step > 0, f"{p}.step", f"must be > 0, got {self.step}")
        check(self.thresh_size >= 0, f"{p}.thresh_size", "must be >= 0")
        for s in self.scales:
            check(self.crop_size % s == 0 and self.crop_size // s >= 8, f"{p}.crop_size",
                  f"{self.crop_size} must be a multiple of every scale and give LR crops of >= 8 px")
            check(self.step % s == 0, f"{p}.step", f"{self.step} must be a multiple of every scale (LR/HR alignment)")
        check(self.shard_mb > 0, f"{p}.shard_mb", "must be > 0")
        check(self.num_workers >= 1, f"{p}.num_workers", "must be >= 1")


@dataclass
class PrepareClassSR:
    source: str | list[str] = "sample"
    hub_split: str = "train"
    hub_image_column: str = "image"
    scale: int = 4
    rescales: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.8, 0.7, 0.6])
    crop_size: int = 128
    step: int = 64
    thresh_size: int = 48
    shard_mb: int = 500
    num_workers: int = 2

    def validate(self, p):
        _check_source(self.source, f"{p}.source")
        check(self.scale in (2, 3, 4), f"{p}.scale", f"scale {self.scale} not allowed; allowed: 2, 3, 4")
        for i, r in enumerate(self.rescales):
            check(0.1 <= r <= 1.0, f"{p}.rescales[{i}]", f"{r} must lie in [0.1, 1]")
        check(self.step > 0, f"{p}.step", f"must be > 0, got {self.step}")
        check(self.crop_size % self.scale == 0, f"{p}.crop_size", "must be a multiple of scale")
        check(self.step % self.scale == 0, f"{p}.step", "must be a multiple of scale (LR/HR alignment)")
        check(0 <= self.thresh_size < self.crop_size, f"{p}.thresh_size", "must be in [0, crop_size)")
        check(self.shard_mb > 0, f"{p}.shard_mb", "must be > 0")
        check(self.num_workers >= 1, f"{p}.num_workers", "must be >= 1")


BENCHMARKS = ("Set5", "Set14", "B100", "Urban100", "Manga109")


@dataclass
class PrepareTest:
    scales: list[int] = field(default_factory=lambda: [4])
    sample: bool = True  # the held-out scikit-image photos
    benchmark_root: str = ""  # folder holding test sets (Set5/ Set14/ ... or any folder of HR images); '' for none
    benchmarks: list[str] = field(default_factory=list)  # [] every folder of images there; or the folders to use
    div8k: str = ""  # DIV8K HR folder (images 1201-1500) for Test2K/4K/8K; '' for none
    num_workers: int = 2

    def validate(self, p):
        for i, s in enumerate(self.scales):
            check(s in (2, 3, 4), f"{p}.scales[{i}]", f"scale {s} not allowed; allowed: 2, 3, 4")
        if self.benchmark_root:
            check(Path(self.benchmark_root).is_dir(), f"{p}.benchmark_root",
                  f"folder '{self.benchmark_root}' does not exist ('' for none)")
            for i, b in enumerate(self.benchmarks):
                check((Path(self.benchmark_root) / b).is_dir(), f"{p}.benchmarks[{i}]",
                      f"no folder '{b}' under {self.benchmark_root} (the usual: {', '.join(BENCHMARKS)}; [] for all)")
        else:
            check(not self.benchmarks, f"{p}.benchmarks", "names folders under benchmark_root, which is ''")
        if self.div8k:
            check(Path(self.div8k).is_dir(), f"{p}.div8k", f"folder '{self.div8k}' does not exist ('' for none)")
        check(self.num_workers >= 1, f"{p}.num_workers", "must be >= 1")


# ---- training -------------------------------------------------------------------------------------

# The names of pipeline.models.ARCHS (a test keeps them equal): params must not import the models, or
# every stage, data preparation included, would depend on every architecture file.
ARCH_NAMES = ("fsrcnn", "msrresnet", "carn_m", "rcan", "edsr", "rfdn", "rlfn", "bsrn")


@dataclass
class ModelSpec:
    arch: str = "msrresnet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    scale: int = 4

    def validate(self, p):
        check(self.arch in ARCH_NAMES, f"{p}.arch", f"'{self.arch}' unknown; allowed: {', '.join(sorted(ARCH_NAMES))}")
        check(self.scale in (2, 3, 4), f"{p}.scale", f"scale {self.scale} not allowed; allowed: 2, 3, 4")


@dataclass
class Schedule:
    kind: Literal["constant", "multistep", "cosine_restart"] = "cosine_restart"
    milestones: list[int] = field(default_factory=list)  # multistep: steps at which lr *= gamma
    gamma: float = 0.5
    periods: list[int] = field(default_factory=list)  # cosine_restart: period lengths ([] = one period)
    restart_weights: list[float] = field(default_factory=list)
    eta_min: float = 1e-7
    warmup_steps: int = 0  # linear ramp up to the base lr over these steps (BasicSR's warmup_iter); 0 = none

    def validate(self, p):
        check(self.warmup_steps >= 0, f"{p}.warmup_steps", "must be >= 0")
        check(all(m > 0 for m in self.milestones), f"{p}.milestones", "must be positive steps")
        check(all(t > 0 for t in self.periods), f"{p}.periods", "must be positive step counts")
        check(not self.restart_weights or len(self.restart_weights) == len(self.periods), f"{p}.restart_weights",
              "needs one weight per period")
        check(0 < self.gamma <= 1, f"{p}.gamma", "must be in (0, 1]")


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 16  # per process
    lr_patch: int = 32  # LR patch side; HR patch = lr_patch * scale
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    schedule: Schedule = field(default_factory=Schedule)
    grad_accum: int = 1
    grad_clip: float = 0.0  # max grad norm (or value); 0 disables
    grad_clip_kind: Literal["norm", "value"] = "norm"  # BasicSR clips the norm; EDSR-PyTorch (CSD, PCL) the value
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    ema_decay: float = 0.0  # 0 disables EMA; else e.g. 0.999 and the EMA weights are the deliverable
    val_every: int = 500
    val_set: str = "data/test/sample"  # a prepare_test folder (default: the held-out photos)
    ckpt_every: int = 500
    log_every: int = 50
    seed: int = 10
    num_workers: int = 1  # data-loading worker processes per training process
    num_processes: int = 1  # processes per machine (GPUs; on CPU: gloo ranks via torchrun)
    num_machines: int = 1  # machines (nodes); each reads its rank from the scheduler's environment (pipeline.launch)
    # A collective that waits longer fails the job (the process group's timeout, CPU and CUDA); a machine
    # whose peers have not all joined within join_timeout_s stops, naming whom it waited for.
    timeout_s: int = 1800
    join_timeout_s: int = 600
    init_from: str = ""  # a saved model folder, 'official:erfdn:<path>', or '' for random init
    # The pixel range the official recipe trains on: 255 for EDSR-PyTorch / MindSpore runs (CSD, PCL,
    # GhostSR, E-RFDN), 1 for BasicSR's (ClassSR). The loss is scaled by it and biases step at
    # lr / rgb_range, so weights and biases move as the official step moves them (pipeline.train.adam).
    rgb_range: float = 1.0

    @property
    def global_batch(self) -> int:
        """The samples of one micro-step over every process: what a batch-level loss sees."""
        return self.batch_size * self.num_processes * self.num_machines

    def validate(self, p):
        check(self.max_steps > 0, f"{p}.max_steps", "must be > 0")
        check(self.batch_size > 0, f"{p}.batch_size", "must be > 0")
        check(self.lr_patch >= 8, f"{p}.lr_patch", "must be >= 8")
        check(self.lr > 0, f"{p}.lr", "must be > 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{p}.betas", "two numbers in [0, 1)")
        check(self.grad_accum >= 1, f"{p}.grad_accum", "must be >= 1")
        check(self.grad_clip >= 0, f"{p}.grad_clip", "must be >= 0")
        check(0 <= self.ema_decay < 1, f"{p}.ema_decay", "must be in [0, 1)")
        for k in ("val_every", "ckpt_every", "log_every", "num_processes", "num_machines", "timeout_s",
                  "join_timeout_s"):
            check(getattr(self, k) > 0, f"{p}.{k}", "must be > 0")
        check(self.num_workers >= 0, f"{p}.num_workers", "must be >= 0")
        check(self.rgb_range > 0, f"{p}.rgb_range", "must be > 0 (255: an EDSR-PyTorch run, 1: BasicSR's)")
        if self.init_from and not self.init_from.startswith("official:"):
            check(is_model(self.init_from), f"{p}.init_from",
                  f"'{self.init_from}' is neither a saved model folder nor a .pt/.pth/.safetensors checkpoint")


@dataclass
class PretrainTeacher:
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class TrainRFDN(PretrainTeacher):
    """The hand-designed lightweight baseline (E-RFDN: ``rfdn``, ``attention: esa``; or ``rlfn``, ``bsrn``),
    trained like the teacher."""
    model: ModelSpec = field(default_factory=lambda: ModelSpec("rfdn", {"nf": 50, "num_blocks": 4, "attention": "esa"}))

    def validate(self, p):
        # ESA's stride-2 conv and 7x7/3 max-pool need an LR input of at least 15 px
        esa = self.model.arch in ("rlfn", "bsrn") or (self.model.arch == "rfdn"
                                                      and self.model.kwargs.get("attention", "cca") == "esa")
        if esa:
            check(self.train.lr_patch >= 15, f"{p}.train.lr_patch",
                  f"{self.model.arch}'s ESA needs LR patches of at least 15 px")


# ---- ClassSR --------------------------------------------------------------------------------------

CLASS_NAMES = ("simple", "medium", "hard")


@dataclass
class ClassSRInference:
    """ClassSR's patch-wise inference (the ``inference`` block of every section that runs a ClassSR)."""
    patch: int = 32  # LR patch side (ClassSR: 32; also the training patch of finetune_classsr)
    stride: int = 28  # LR stride between patches (ClassSR's test scripts: 28)
    budgets: list[float] = field(default_factory=lambda: [1.0, 0.65])  # FLOPs budgets, fractions of branch-O's
    infer_batch: int = 32  # patches per branch call (CPU prefers small batches, GPUs large)

    def options(self) -> dict:
        """Keyword arguments of :func:`pipeline.upscale.upscale`."""
        return {"patch": self.patch, "stride": self.stride, "batch": self.infer_batch}

    def validate(self, p):
        check(self.patch >= 8, f"{p}.patch", "must be >= 8")
        check(0 < self.stride <= self.patch, f"{p}.stride", "must be in (0, patch]")
        check(all(0 < b <= 1 for b in self.budgets), f"{p}.budgets", "fractions in (0, 1]")
        check(self.infer_batch >= 1, f"{p}.infer_batch", "must be >= 1")


@dataclass
class ClassifyPatches:
    batch_size: int = 256
    thresholds: list[float] = field(default_factory=list)  # [] = tertiles; else [low, high] dB
    num_processes: int = 1  # per machine
    num_machines: int = 1
    timeout_s: int = 1800  # as TrainConfig's
    join_timeout_s: int = 600

    def validate(self, p):
        check(self.batch_size > 0, f"{p}.batch_size", "must be > 0")
        check(self.timeout_s > 0 and self.join_timeout_s > 0, f"{p}.timeout_s", "timeouts must be > 0 s")
        check(len(self.thresholds) in (0, 2) and (not self.thresholds or self.thresholds[0] < self.thresholds[1]),
              f"{p}.thresholds", "[] for tertiles, or [low, high] with low < high (ClassSR: [27.16882, 35.149761])")
        check(self.num_processes >= 1, f"{p}.num_processes", "must be >= 1")
        check(self.num_machines >= 1, f"{p}.num_machines", "must be >= 1")


@dataclass
class TrainBranch:
    arch: str = "msrresnet"
    scale: int = 4
    branches: dict[str, dict[str, Any]] = field(default_factory=dict)  # class name -> constructor kwargs
    init_hard_from_teacher: bool = True
    # train.* values the hard branch uses instead when it starts from the teacher (a short, gentle
    # fine-tune on its class rather than training from scratch), e.g. {max_steps: 100, lr: 2.0e-4}
    hard_finetune: dict[str, Any] = field(default_factory=dict)
    all_patches_steps: int = 0  # warm-up steps on every patch before the branch's own class (0 = paper)
    train: TrainConfig = field(default_factory=TrainConfig)

    def train_config(self, name: str) -> TrainConfig:
        """The training config of branch ``name``."""
        if name == "hard" and self.init_hard_from_teacher and self.hard_finetune:
            return replace(self.train, **self.hard_finetune)
        return self.train

    def launches(self, args: list[str]) -> list[tuple[list[str], TrainConfig]]:
        """One launch of ``train_branch <class>``, with that branch's own process count and precision."""
        return [(args, self.train_config(args[0]) if args and args[0] in CLASS_NAMES else self.train)]

    def validate(self, p):
        ModelSpec(self.arch, {}, self.scale).validate(p)
        scalars = {f.name for f in fields(TrainConfig) if f.name != "schedule"}
        for key in self.hard_finetune:
            check(key in scalars, f"{p}.hard_finetune.{key}", f"not a train setting; allowed: {', '.join(sorted(scalars))}")
        check(self.hard_finetune.get("max_steps", 1) > 0, f"{p}.hard_finetune.max_steps", "must be > 0")
        check(0 <= self.all_patches_steps <= self.train.max_steps, f"{p}.all_patches_steps", "must be in [0, max_steps]")
        check(sorted(self.branches) == sorted(CLASS_NAMES), f"{p}.branches",
              f"needs exactly the keys {', '.join(CLASS_NAMES)}")


@dataclass
class FinetuneClassSR:
    loss_weights: list[float] = field(default_factory=lambda: [1000.0, 0.5, 3.0])  # L1, class, average
    # Routing loss (not in ClassSR; 0 = the paper): cross-entropy toward the cheapest branch whose
    # patch PSNR is within routing_tolerance_db of the best branch's, a direct signal for a classifier
    # that only gets a few hundred steps instead of ClassSR's 200k.
    routing_weight: float = 0.0
    routing_tolerance_db: float = 0.1
    # The official Class-Module init scales Kaiming by 0.1 in all five CondNet convs: its logits start
    # ~1e-5 apart and take far more than a few hundred steps to separate patches.
    classifier_init_scale: float = 0.1
    inference: ClassSRInference = field(default_factory=ClassSRInference)
    phases: list[str] = field(default_factory=lambda: ["classifier", "joint"])  # which run, in this order
    classifier: TrainConfig = field(default_factory=TrainConfig)  # phase 1: branches frozen
    joint: TrainConfig = field(default_factory=TrainConfig)  # phase 2: everything trains

    def launches(self, args: list[str]) -> list[tuple[list[str], TrainConfig]]:
        """One launch per phase, in order, each with its own ``num_processes`` and ``mixed_precision``."""
        return [([*args, phase], getattr(self, phase)) for phase in self.phases]

    def validate(self, p):
        check(self.classifier_init_scale > 0, f"{p}.classifier_init_scale", "must be > 0")
        check(self.routing_weight >= 0 and self.routing_tolerance_db >= 0, f"{p}.routing_weight",
              "routing_weight and routing_tolerance_db must be >= 0")
        check(self.phases in (["classifier"], ["joint"], ["classifier", "joint"]), f"{p}.phases",
              "allowed: [classifier], [joint], [classifier, joint]")
        check(len(self.loss_weights) == 3 and all(w >= 0 for w in self.loss_weights), f"{p}.loss_weights",
              "three non-negative weights: L1, class loss, average loss")


# ---- GhostSR --------------------------------------------------------------------------------------


@dataclass
class GhostMethod:
    """GhostSR's settings, shared by the ghost stage and the composition stage."""
    ratio: float = 0.5  # intrinsic fraction of each converted conv's output channels
    d: int = 1  # shift distance in pixels
    mode: Literal["gumbel", "ste"] = "gumbel"  # paper's Gumbel-Softmax, or the released straight-through
    per_channel: bool = False  # one shift per ghost channel instead of one per layer (official)
    tau_start: float = 10.0  # Gumbel temperature, decayed exponentially to tau_end over the fine-tune
    tau_end: float = 0.01
    # mode 'ste': the released Gumbel noise factor 0.97^(epoch-1) with an epoch of this many steps; 0 = the
    # released training script, which never advances the epoch (factor 1)
    noise_epoch_steps: int = 0
    kmeans_seed: int = 0
    layers: list[str] = field(default_factory=list)  # conv names, or [conv3x3]; [] = every residual block's two
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, p):
        check(0 < self.ratio <= 1, f"{p}.ratio", "must be in (0, 1]")
        check(self.d >= 1, f"{p}.d", "must be >= 1")
        check(0 < self.tau_end <= self.tau_start, f"{p}.tau_end", "need 0 < tau_end <= tau_start")
        check(self.noise_epoch_steps >= 0, f"{p}.noise_epoch_steps", "must be >= 0 (0: the released factor 1)")


@dataclass
class Ghost(GhostMethod):
    source: str = "models/teacher"  # a saved model folder or a published checkpoint (.pt / .pth)

    def validate(self, p):
        check(is_model(self.source) or self.source == "models/teacher", f"{p}.source",
              f"'{self.source}' is neither a saved model folder nor a .pt/.pth/.safetensors checkpoint")
        super().validate(p)


@dataclass
class ComposeClassSR(GhostMethod):
    """GhostSR applied to one branch of the fine-tuned ClassSR (none of the published code composes them)."""
    classsr: str = "models/classsr"
    branch: Literal["simple", "medium", "hard"] = "hard"
    inference: ClassSRInference = field(default_factory=ClassSRInference)


# ---- contrastive self-distillation (CSD) ----------------------------------------------------------


@dataclass
class DistillCSD:
    teacher: str = "models/teacher"  # a saved model folder or a published checkpoint (EDSR-PyTorch .pt)
    width: float = 0.25  # student width multiplier
    contra_lambda: float = 200.0  # on the official loss scale (train.rgb_range 255)
    t_lambda: float = 1.0
    # The official code trains on 0-255 images (train.rgb_range 255): its L1 terms are 255x ours while the
    # contrastive ratio is scale-free. The loss is rgb_range * L1 + contra_lambda * CL, the official balance.
    neg_num: int = 10
    embedding: Literal["vgg19", "teacher"] = "vgg19"  # 'teacher': download-free frozen teacher features
    vgg_weights: str = ""  # torchvision-format vgg19 state dict; '' = download into the torch cache
    layer_weights: list[float] = field(default_factory=lambda: [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0])
    embed_crop: int = 0  # 0: the embedding sees the whole HR patch (CSD); N: one random N x N window of it
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, p):
        check(0 < self.width < 1, f"{p}.width", "must be in (0, 1)")
        check(self.embed_crop == 0 or self.embed_crop >= 16, f"{p}.embed_crop",
              "must be 0 (the whole patch) or >= 16 (VGG19 relu5_1 is 1/16 of its input)")
        check(self.neg_num >= 1, f"{p}.neg_num", "must be >= 1")
        check(self.neg_num <= self.train.global_batch, f"{p}.neg_num",
              f"must be <= the global batch, train.batch_size x num_processes x num_machines = "
              f"{self.train.global_batch} (CSD takes its negatives from the whole batch)")
        check(self.embedding != "vgg19" or len(self.layer_weights) == 5, f"{p}.layer_weights",
              "vgg19 has 5 feature stages (relu1_1..relu5_1)")
        if self.vgg_weights:
            check(Path(self.vgg_weights).is_file(), f"{p}.vgg_weights", f"file '{self.vgg_weights}' not found")


@dataclass
class TrainStudentL1:
    teacher: str = "models/teacher"  # the student has the teacher's architecture at this width
    width: float = 0.25
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, p):
        check(0 < self.width < 1, f"{p}.width", "must be in (0, 1)")


@dataclass
class DistillPCL:
    init_from: str = "models/student_l1"  # the pretrained SR network PCL fine-tunes
    alpha: float = 5.0  # CL weight on the official loss scale (RCAN x4 script: 5 at train.rgb_range 255; NLSN: 3 at 1)
    num_aug: int = 3  # blurred negatives, and sharpened positives when sharp_hr (mcl_neg)
    # rcanx4_PCL.sh as it runs: the line before '--gpu_sharp --sharp_hr ...' lacks its backslash, so the
    # released RCAN run's positives are the HR alone. True: HR + num_aug sharpened HRs (the NLSN script).
    sharp_hr: bool = False
    sharp_range: list[float] = field(default_factory=lambda: [0.5, 3.0])
    blur_kernels: list[int] = field(default_factory=lambda: [3, 5, 7, 9, 11])
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    layers: list[int] = field(default_factory=lambda: [4])  # discriminator feature indices (0-7)
    cl_grad: bool = True  # False reproduces the released code (CL sends no gradient to the SR net)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self, p):
        check(self.alpha >= 0, f"{p}.alpha", "must be >= 0")
        check(self.num_aug >= 1, f"{p}.num_aug", "must be >= 1")
        check(len(self.sharp_range) == 2 and 0 <= self.sharp_range[0] < self.sharp_range[1], f"{p}.sharp_range",
              "[low, high) with 0 <= low < high")
        check(all(k % 2 == 1 and k >= 3 for k in self.blur_kernels), f"{p}.blur_kernels", "odd sizes >= 3")
        check(len(self.blur_sigma) == 2 and 0 < self.blur_sigma[0] < self.blur_sigma[1], f"{p}.blur_sigma",
              "[low, high) with 0 < low < high")
        check(self.layers and all(0 <= i < 8 for i in self.layers), f"{p}.layers", "indices in 0..7")


# ---- evaluation -----------------------------------------------------------------------------------


@dataclass
class Reference:
    """A published model scored as it is, beside the variants: its checkpoint file (``.safetensors``,
    ``.pt``, ``.pth``) and layout ('' = detected from its tensor names: pipeline/models/checkpoints.py)."""
    path: str = ""
    layout: str = ""

    def validate(self, p):
        check(Path(self.path).is_file(), f"{p}.path", f"checkpoint file '{self.path}' not found")


@dataclass
class Evaluate:
    scale: int = 4
    models: dict[str, str] = field(default_factory=dict)  # variant name -> saved model folder
    classsr: dict[str, str] = field(default_factory=dict)  # ClassSR variants, evaluated at each budget
    inference: ClassSRInference = field(default_factory=ClassSRInference)
    references: dict[str, Reference] = field(default_factory=dict)  # row name -> a published checkpoint
    pareto_set: str = "sample"  # the test set of the Pareto plot
    crops_set: str = "sample"
    onnx: bool = True  # export every variant to ONNX (exports/), check it against PyTorch, time ONNX Runtime
    self_ensemble: bool = False  # also score each plain model with the x8 geometric self-ensemble ("name+")

    def validate(self, p):
        check(self.scale in (2, 3, 4), f"{p}.scale", f"scale {self.scale} not allowed; allowed: 2, 3, 4")


SECTIONS = {
    "prepare_sr": PrepareSR, "prepare_classsr": PrepareClassSR, "prepare_test": PrepareTest,
    "pretrain_teacher": PretrainTeacher, "classify_patches": ClassifyPatches, "train_branch": TrainBranch,
    "finetune_classsr": FinetuneClassSR, "ghost": Ghost, "compose_classsr": ComposeClassSR, "distill_csd": DistillCSD,
    "train_student_l1": TrainStudentL1, "distill_pcl": DistillPCL, "train_rfdn": TrainRFDN, "evaluate": Evaluate,
}  # params section -> its type (the section of a DVC stage has the stage's name)
