"""Batch-level losses over the global batch: CSD's and PCL's training steps on 2 gloo processes of batch
B (127.0.0.1, DDP as Accelerate wraps the models) equal one process on the 2B batch, as the official
DataParallel runs compute them: the loss's value, the gradients, and PCL's discriminator update (its
weights and BatchNorm statistics after the step)."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from pipeline import models
from pipeline.distributed import all_gather, all_sum, batch_norm, global_means
from pipeline.methods.csd import ContrastiveLoss, CSDObjective, FeatureStages
from pipeline.methods.pcl import PCLObjective
from pipeline.params import DistillPCL, TrainConfig

WORLD, B = 2, 2  # processes, samples each: neg_num 3 > B needs the other process's images
TOL = 1e-5


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(WORLD * B, 3, 16, 16, generator=g), torch.rand(WORLD * B, 3, 64, 64, generator=g)


class _Backward:
    """What the objectives call on the accelerator: its backward."""

    @staticmethod
    def backward(loss):
        loss.backward()


def _csd():
    torch.manual_seed(0)
    net = models.build("edsr", 4, n_resblocks=2, n_feats=16)
    embedding = FeatureStages([torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()),
                               torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU())])
    objective = CSDObjective(0.5, ContrastiveLoss(embedding, [0.5, 1.0]), 4, neg_num=3, t_lambda=1.0,
                             contra_lambda=200.0, rgb_range=255.0, embed_crop=32)
    return net, objective


def csd_step(net, objective, lr, hr, wrap=lambda m: m):
    model = wrap(net)
    loss, logs = objective.loss(model, lr, hr, step=3)
    loss.backward()
    return {"loss": loss.item(), "contrastive": logs["contrastive"].item(),
            "grads": {n: p.grad.clone() for n, p in net.named_parameters()}}


def _pcl():
    torch.manual_seed(0)
    net = models.build("msrresnet", 4, nf=8, nb=1)
    cfg = DistillPCL(sharp_hr=True, num_aug=2, train=TrainConfig(batch_size=B, rgb_range=255.0, seed=3))
    objective = PCLObjective(cfg, 4)
    # plain SGD at lr 1: the discriminator's weights after its update show its gradients (Adam's first step,
    # ~lr x sign(g), would turn rounding in near-zero gradients into differences of lr)
    objective.d_opt = torch.optim.SGD(objective.discriminator.parameters(), lr=1.0)
    return net, objective


def pcl_step(net, objective, lr, hr, wrap=lambda m: m):
    model = wrap(net)
    d = objective.discriminator
    objective.prepared(discriminator=wrap(d), d_opt=objective.d_opt)
    d_logs = objective.before_step(_Backward, model, lr, hr, step=5)
    loss, logs = objective.loss(model, lr, hr, step=5)
    loss.backward()
    return {"loss": loss.item(), "d_loss": d_logs["d_loss"].item(), "contrastive": logs["contrastive"].item(),
            "grads": {n: p.grad.clone() for n, p in net.named_parameters()},
            "discriminator": {k: v.clone() for k, v in d.state_dict().items()}}


STEPS = {"csd": (_csd, csd_step), "pcl": (_pcl, pcl_step)}


def _rank(rank: int, method: str, port: int, out: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        make, step = STEPS[method]
        net, objective = make()
        lr, hr = _batch()
        mine = slice(rank * B, (rank + 1) * B)
        result = step(net, objective, lr[mine], hr[mine], wrap=DDP)
        torch.save(result, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(method: str, tmp_path) -> list[dict]:
    out = str(tmp_path / method)
    mp.spawn(_rank, args=(method, _free_port(), out), nprocs=WORLD, join=True)
    return [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]


def _one_process(method: str) -> dict:
    torch.set_num_threads(1)
    make, step = STEPS[method]
    net, objective = make()
    return step(net, objective, *_batch())


def _assert_close(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=TOL, atol=TOL, msg=k)


@pytest.mark.parametrize("method", ["csd", "pcl"])
def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(method, tmp_path):
    ranks, one = _two_processes(method, tmp_path), _one_process(method)
    # DDP averages the ranks' gradients: each rank holds the one-process gradient
    for rank in ranks:
        _assert_close(rank["grads"], one["grads"])
    # a batch-level term (CSD's contrastive ratio, PCL's discriminator loss) is the global batch's on
    # every rank; a per-sample mean (PCL's InfoNCE, the L1 terms) is the rank's share, averaged like DDP
    for key in {"csd": ["contrastive"], "pcl": ["d_loss"]}[method]:
        assert [r[key] for r in ranks] == pytest.approx([one[key]] * WORLD, rel=TOL)
    for key in ("loss", "contrastive"):
        assert sum(r[key] for r in ranks) / WORLD == pytest.approx(one[key], rel=TOL)
    if method == "pcl":  # the discriminator's update: weights and BatchNorm statistics of the 2B batch
        for rank in ranks:
            _assert_close(rank["discriminator"], one["discriminator"])


# ---- the collectives themselves, on 2 processes -----------------------------------------------------

def _collectives(rank: int, port: int, out: str):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(rank)
        x = torch.randn(3, 4, 5, 5, requires_grad=True)
        bn = torch.nn.BatchNorm2d(4)
        # a loss mixing the processes' samples: each rank's gradient must be its share of the global one
        y = batch_norm(bn, x)
        g = all_gather(y)
        loss = (g.pow(3).mean() + all_sum(x.sum()) ** 2) / WORLD  # each rank's copy weighs 1/N, as DDP's average
        loss.backward()
        torch.save({"x": x.detach(), "grad": x.grad, "running_var": bn.running_var,
                    "logged": global_means({"a": float(rank), "b": 2.0})}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_collectives_give_each_process_its_share_of_the_global_gradient(tmp_path):
    out = str(tmp_path / "c")
    mp.spawn(_collectives, args=(_free_port(), out), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]
    x = torch.cat([r["x"] for r in ranks]).requires_grad_(True)
    bn = torch.nn.BatchNorm2d(4)
    loss = bn(x).pow(3).mean() + x.sum() ** 2
    loss.backward()
    # the copies' gradients, summed by the collectives' backward, give each process its rows of the whole
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), x.grad, rtol=1e-5, atol=1e-5)
    for r in ranks:
        torch.testing.assert_close(r["running_var"], bn.running_var)
        assert r["logged"] == {"a": 0.5, "b": 2.0}
