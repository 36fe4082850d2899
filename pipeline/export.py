"""ONNX export of any model here, checked against PyTorch and timed with ONNX Runtime.

    files = export_onnx(model, "exports/ghost")       # exports/ghost/model.onnx
    err = max_abs_error(model, files, lr_side=40)       # at another size than the traced one
    seconds = ort_latency(model, files, side=128)

A plain model (a Ghost network in its deployment form with fixed shifts, a slim student) is one graph
``model.onnx`` with dynamic batch, height and width. A ClassSR is what its deployment runs: the
Class-Module ``classifier.onnx`` and one graph per branch ``branch{i}.onnx``; the patch-wise inference
(:func:`pipeline.upscale.classsr_patchwise`) runs them through ONNX Runtime unchanged, so its latency is
measured on the same code path as PyTorch's.

The graphs come from the TorchScript exporter (``dynamo=False``): it traces in well under a second, where
the dynamo exporter takes seconds per model, and shape-dependent Python (the Ghost shift) is written so
that a graph traced at one size is right at every size.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.files import atomic_dir
from pipeline.metrics import uint8_to_tensor, wall_time

OPSET = 17
TRACE_SIDE = 32  # one ClassSR patch; every graph has dynamic batch / height / width


def graphs(model: nn.Module) -> dict[str, nn.Module]:
    """The modules exported as separate graphs: a ClassSR's classifier and branches, else the model."""
    if getattr(model, "config", {}).get("arch") == "classsr":
        return {"classifier": model.classifier, **{f"branch{i}": b for i, b in enumerate(model.branches)}}
    return {"model": model}


def export_onnx(model: nn.Module, folder) -> dict[str, Path]:
    """Write one ``.onnx`` per graph of ``model`` into ``folder`` (replaced atomically): {graph: path}."""
    model = model.eval()
    device = next(model.parameters()).device
    x = torch.rand(1, 3, TRACE_SIDE, TRACE_SIDE, device=device)
    with atomic_dir(folder) as tmp:
        for name, module in graphs(model).items():
            out = "probs" if name == "classifier" else "sr"
            axes = {"lr": {0: "batch", 2: "height", 3: "width"}, out: {0: "batch"} if name == "classifier" else
                    {0: "batch", 2: "out_height", 3: "out_width"}}
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, per call
                torch.onnx.export(module.eval(), (x,), str(tmp / f"{name}.onnx"), input_names=["lr"],
                                  output_names=[out], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return {name: Path(folder) / f"{name}.onnx" for name in graphs(model)}


class OrtModule:
    """An ONNX Runtime session that is called like the module it was exported from (tensor in, tensor out)."""

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"lr": x.detach().cpu().numpy()})[0])


class OrtClassSR:
    """A ClassSR's classifier and branches as ONNX Runtime sessions: what the patch-wise inference calls."""

    def __init__(self, files: dict[str, Path], threads: int | None = None):
        self.classifier = OrtModule(files["classifier"], threads)
        self.branches = [OrtModule(files[f"branch{i}"], threads) for i in range(len(files) - 1)]


def runtime(model: nn.Module, files: dict[str, Path], threads: int | None = None):
    """The ONNX Runtime counterpart of ``model`` (a callable, or for a ClassSR its classifier + branches)."""
    return OrtClassSR(files, threads) if "classifier" in files else OrtModule(files["model"], threads)


def max_abs_error(model: nn.Module, files: dict[str, Path], lr_side: int = 40, batch: int = 2) -> float:
    """Largest |ONNX Runtime - PyTorch| over every graph's output on a random batch of ``lr_side`` squares
    (not the traced size, so a size frozen into the graph shows)."""
    x = torch.rand(batch, 3, lr_side, lr_side, generator=torch.Generator().manual_seed(0))
    worst = 0.0
    for name, module in graphs(model.eval()).items():
        device = next(module.parameters()).device
        with torch.no_grad():
            ref = module(x.to(device)).float().cpu()
        worst = max(worst, float((OrtModule(files[name])(x) - ref).abs().max()))
    return worst


def ort_latency(model: nn.Module, files: dict[str, Path], side: int, threads: int | None = None,
                probe: np.ndarray | None = None, **classsr_options) -> float:
    """Median seconds of one ONNX Runtime forward on a ``side`` x ``side`` LR input; a ClassSR: its
    patch-wise inference on the uint8 ``probe`` through the exported classifier and branches."""
    rt = runtime(model, files, threads)
    if isinstance(rt, OrtClassSR):
        from pipeline.upscale import branch_flops, classsr_patchwise

        flops = branch_flops(model, classsr_options.get("patch", 32))
        lr = uint8_to_tensor(probe)[0]
        opts = {"patch": 32, "stride": 28, "budget": 1.0, "batch": 32, **classsr_options}
        return wall_time(lambda: classsr_patchwise(rt, lr, model.config["scale"], opts["patch"], opts["stride"],
                                                   opts["budget"], opts["batch"], flops), warmup=1, repeats=3)
    x = torch.rand(1, 3, side, side)
    return wall_time(lambda: rt(x), warmup=1, repeats=5)
