"""Stage finetune_classsr: Class-Module + the three branches. Phase 1 trains the classifier with the
branches frozen (ClassSR's released configs); phase 2 fine-tunes everything (``phases`` picks which
run). Each phase is one launch (``python -m stages.finetune_classsr <phase>``; ``pipeline.launch`` runs
them in order, each with its own process count), the next phase starting from the model the last left. Loss: w1 L1 + w2 class loss + w3 average loss on the probability-weighted sum of the branches,
plus an optional routing loss (not in ClassSR) toward the cheapest branch that is good enough for
each patch. Evaluates patch-wise inference on the held-out photos at every FLOPs budget."""
import sys

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import models
from pipeline.classsr import branch_flops, budget_metrics, upscale_uint8
from pipeline.data.loader import PatchBatches
from pipeline.data.shards import PairShards
from pipeline.evaluate import bicubic_upscale, evaluate_pairs, score, test_pairs
from pipeline.metrics import count_params, tensor_to_uint8, uint8_to_tensor
from pipeline.models.classsr import average_loss, class_loss
from pipeline.models.common import scale_init
from pipeline.params import CLASS_NAMES, FinetuneClassSR, ParamError, load_section
from pipeline.stage import run, write_json
from pipeline.tiling import run_tiled
from pipeline.train import Objective, train

DATA, VAL, OUT, METRICS = "data/classsr", "data/test/sample", "models/classsr", "metrics/finetune_classsr.json"


class ClassSRObjective(Objective):
    def __init__(self, cfg: FinetuneClassSR):
        self.w, self.routing, self.tolerance = cfg.loss_weights, cfg.routing_weight, cfg.routing_tolerance_db

    def loss(self, model, lr, hr, step):
        sr, probs, srs = model(lr, return_branches=True)
        l1, lc, la = F.l1_loss(sr, hr), class_loss(probs), average_loss(probs)
        loss = self.w[0] * l1 + self.w[1] * lc + self.w[2] * la
        logs = {"l1": l1.detach(), "class_loss": lc.detach(), "average_loss": la.detach()}
        if self.routing > 0:
            target = cheapest_adequate_branch(srs, hr, self.tolerance)
            routing = F.nll_loss(torch.log(probs + 1e-8), target)
            loss = loss + self.routing * routing
            logs["routing_loss"] = routing.detach()
        return loss, logs


@torch.no_grad()
def cheapest_adequate_branch(srs: list[torch.Tensor], hr: torch.Tensor, tolerance_db: float) -> torch.Tensor:
    """Per patch, the first (cheapest) branch whose PSNR is within ``tolerance_db`` of the best one's."""
    mse = torch.stack([(s.clamp(0, 1) - hr).pow(2).flatten(1).mean(1) for s in srs], 1).clamp_min(1e-10)
    psnr = -10 * torch.log10(mse)
    good = psnr >= psnr.max(1, keepdim=True).values - tolerance_db
    return good.float().argmax(1)


def assemble(scale: int, classifier_init_scale: float = 0.1, seed: int = 0) -> "models.nn.Module":
    """A ClassSR model holding the three trained branches (simple, medium, hard) and a fresh, seeded
    Class-Module."""
    folders = [f"models/branch_{n}" for n in CLASS_NAMES]
    configs = [models.read_config(f) for f in folders]
    torch.manual_seed(seed)
    model = models.build("classsr", scale, branch_arch=configs[0]["arch"], branches=[c["kwargs"] for c in configs])
    scale_init([model.classifier.CondNet], classifier_init_scale)
    for branch, folder in zip(model.branches, folders):
        branch.load_state_dict(models.load(folder).state_dict())
    return model


def phase_result(phase: str) -> str:
    """Where a phase that is not the last leaves its model for the next phase (a separate launch)."""
    return f"checkpoints/finetune_classsr/{phase}/result"


def main():
    cfg = load_section("finetune_classsr", FinetuneClassSR)
    phase = sys.argv[1] if len(sys.argv) > 1 else ""
    if phase not in cfg.phases:
        raise ParamError(f"finetune_classsr: phase must be one of finetune_classsr.phases {cfg.phases}, got "
                         f"'{phase}' (python -m pipeline.launch finetune_classsr stages.finetune_classsr runs them all)")
    # each phase is its own launch (its own num_processes / mixed_precision); a later phase starts from
    # the model the previous one left
    i = cfg.phases.index(phase)
    if i == 0:
        scale = models.read_config("models/branch_hard")["scale"]
        model = assemble(scale, cfg.classifier_init_scale, cfg.classifier.seed)
    else:
        model = models.load(phase_result(cfg.phases[i - 1]))
        scale = model.config["scale"]
    shards = PairShards(DATA, scale)
    pairs = test_pairs(VAL, scale)
    flops = branch_flops(model, cfg.patch)

    def upscale(net, lr, budget=1.0, cover_all=True):
        return upscale_uint8(net, lr, scale, cfg.patch, cfg.stride, budget, cfg.infer_batch, flops, cover_all)[0]

    def validate(net):
        return evaluate_pairs(lambda lr: upscale(net, lr), pairs, scale)

    def finish(net, val, tracker):
        models.save(net, OUT)
        metrics = {"params": count_params(net), "branch_flops_per_patch": dict(zip(CLASS_NAMES, flops)),
                   "bicubic_psnr": evaluate_pairs(lambda lr: bicubic_upscale(lr, scale), pairs, scale)["psnr"]}
        hard = net.branches[-1]
        tiled_o = lambda lr: tensor_to_uint8(run_tiled(hard, uint8_to_tensor(lr)[0], scale, cfg.patch, cfg.stride))  # noqa: E731
        metrics["branch_o_tiled_psnr"] = evaluate_pairs(tiled_o, pairs, scale)["psnr"]
        metrics["branch_o_whole_psnr"] = evaluate_pairs(lambda lr: tensor_to_uint8(hard(uint8_to_tensor(lr))[0]),
                                                        pairs, scale)["psnr"]
        metrics.update(budget_metrics(net, pairs, scale, cfg.budgets, cfg.patch, cfg.stride, cfg.infer_batch))
        # ClassSR's own protocol: grid without the remainder, GT cropped to the covered region
        crop_scores = []
        for _, lr, hr in pairs:
            sr = upscale(net, lr, 1.0, cover_all=False)
            crop_scores.append(score(sr, hr[:sr.shape[0], :sr.shape[1]], scale)["psnr"])
        metrics["classsr_crop_protocol_psnr"] = float(np.mean(crop_scores))
        write_json(METRICS, metrics)
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        tracker.log_metrics({f"{k}/{m}": v for k, d in metrics.items() if k.startswith("budget_") for m, v in d.items()})

    def hand_on(net, val, tracker):
        models.save(net, phase_result(phase))

    last = i == len(cfg.phases) - 1
    tcfg = getattr(cfg, phase)
    trainable = (lambda m: list(m.classifier.parameters())) if phase == "classifier" else None
    batches = PatchBatches(shards, tcfg.batch_size, cfg.patch, tcfg.seed)
    train(model, tcfg, batches, stage=f"finetune_classsr:{phase}", params=cfg, objective=ClassSRObjective(cfg),
          ckpt_dir=f"checkpoints/finetune_classsr/{phase}", validate=validate, trainable=trainable,
          data_info=shards.info, finish=finish if last else hand_on)


if __name__ == "__main__":
    run(main)
