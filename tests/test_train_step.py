"""The training step is exact: gradient accumulation through the gradient cache (K = 2, 4), two
gloo processes under DDP, and activation checkpointing all give the same loss and the same
gradient for every parameter as one plain pass over the same global batch, for clip, flip and slip."""

import contextlib
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import train
from tinyclip.losses import SimCLRHead
from tinyclip.model import create_model

BATCH = 8
SETTINGS = {"clip": (0.0, False), "flip": (0.5, False), "slip": (0.0, True)}


def make_towers(strategy, grad_checkpointing=False):
    torch.manual_seed(0)
    model = create_model("vit-test")
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    head = SimCLRHead(model.config.embed_dim, hidden_dim=32, out_dim=16) if SETTINGS[strategy][1] else None
    return train.Towers(model, head)


def make_batch(strategy, rows=slice(None)):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 1000, (BATCH, 12), generator=g)
    ids[:, 0], ids[:, -1] = 49406, 49407
    batch = {"image": torch.randn(BATCH, 3, 32, 32, generator=g), "text": ids}
    if SETTINGS[strategy][1]:
        batch["views"] = (torch.randn(BATCH, 3, 32, 32, generator=g), torch.randn(BATCH, 3, 32, 32, generator=g))
    return {k: (tuple(t[rows] for t in v) if k == "views" else v[rows]) for k, v in batch.items()}


def step_grads(towers, strategy, batch, accum_steps, ddp=None):
    """Run train.train_step once; return (loss, {name: grad}) from the underlying modules."""
    torch.manual_seed(2)                                   # FLIP's masks come from here
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    terms = train.train_step(ddp or towers, towers.ssl_head, batch, None, SETTINGS[strategy][0], accum_steps,
                             scaler, contextlib.nullcontext, ssl_scale=1.0)
    return terms["loss"], {n: p.grad.clone() for n, p in towers.named_parameters()}


def assert_same(a, b, rel=1e-4, atol=5e-5):
    """Equal to float rounding: each gradient within rel x its own largest entry (summation order
    differs between the paths; a bias feeding a BatchNorm has a true gradient of 0 and shows only
    rounding noise, ~1e-5 at SLIP's temperature, hence atol; real gradients here are ~0.01-1)."""
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert torch.allclose(loss_a, loss_b, atol=1e-6), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        scale = grads_a[name].abs().max()
        assert (grads_a[name] - grads_b[name]).abs().max() <= rel * scale + atol, name


@pytest.mark.parametrize("strategy", ["clip", "flip", "slip"])
@pytest.mark.parametrize("accum_steps", [2, 4])
def test_gradient_cache_equals_single_pass(strategy, accum_steps):
    reference = step_grads(make_towers(strategy), strategy, make_batch(strategy), 1)
    accumulated = step_grads(make_towers(strategy), strategy, make_batch(strategy), accum_steps)
    assert_same(reference, accumulated)
    assert all(g.abs().sum() > 0 for g in reference[1].values())   # every parameter gets a gradient


@pytest.mark.parametrize("strategy", ["clip", "flip"])
def test_grad_checkpointing_equals_plain(strategy):
    plain = step_grads(make_towers(strategy), strategy, make_batch(strategy), 1)
    ckpt = step_grads(make_towers(strategy, grad_checkpointing=True), strategy, make_batch(strategy), 1)
    assert_same(plain, ckpt)


# -----------------------------------------------------------------------------
# two gloo processes under DDP


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, strategy, accum_steps, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    towers = make_towers(strategy)
    ddp = torch.nn.parallel.DistributedDataParallel(towers)
    n = BATCH // world
    loss, grads = step_grads(towers, strategy, make_batch(strategy, slice(rank * n, (rank + 1) * n)),
                             accum_steps, ddp=ddp)
    dist.all_reduce(loss)
    results[(rank, accum_steps)] = (loss / world, grads)
    dist.destroy_process_group()


def _run_two_processes(strategy, accum_steps, results):
    mp.spawn(_worker, args=(2, _free_port(), strategy, accum_steps, results), nprocs=2, join=True)


@pytest.mark.parametrize("strategy", ["clip", "slip"])
def test_two_processes_equal_one_process(strategy):
    reference = step_grads(make_towers(strategy), strategy, make_batch(strategy), 1)
    results = mp.Manager().dict()
    for accum_steps in (1, 2):
        _run_two_processes(strategy, accum_steps, results)
        for rank in range(2):
            assert_same(reference, results[(rank, accum_steps)])


def test_two_processes_flip_accumulation_equals_plain():
    # Each rank draws its own FLIP masks, so the reference is the same two ranks without accumulation.
    results = mp.Manager().dict()
    for accum_steps in (1, 2):
        _run_two_processes("flip", accum_steps, results)
    for rank in range(2):
        assert_same(results[(rank, 1)], results[(rank, 2)])
