"""The training step (train.train_step) against the algorithms it must equal.

- Exactness: gradient accumulation through the gradient cache (K = 2, 4), two gloo processes under
  DDP, and activation checkpointing give the same loss and the same gradient for every parameter
  as one plain pass over the same global batch, for clip, flip and slip, and for clip with SigLIP's
  sigmoid loss ("sigmoid", its bias included) and with label smoothing ("smooth").
- BatchNorm under the gradient cache: after a K-micro-batch step a ResNet's running statistics equal
  those of one train-mode forward over each micro-batch (the no-grad pass leaves no trace).
- The temperature: clamped to [0, ln 100] after the optimiser step, as OpenAI, open_clip and SLIP do,
  so a scale pushed past ln 100 comes back to it and a gradient that lowers it still moves it.
"""

import copy
import math
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import train
from tinyclip.model import create_model

BATCH = 8
MASK_RATIO = {"clip": 0.0, "flip": 0.5, "slip": 0.0, "sigmoid": 0.0, "smooth": 0.0}


def make_model(strategy, arch="vit-test", grad_checkpointing=False):
    torch.manual_seed(0)
    model = create_model(arch, ssl_mlp_dim=32 if strategy == "slip" else 0, ssl_emb_dim=16,
                         loss="sigmoid" if strategy == "sigmoid" else "softmax")
    model.set_grad_checkpointing(grad_checkpointing)
    return model


def make_batch(strategy, rows=slice(None), image_size=32):
    """A global batch; SLIP's views interleaved as the loader lays them out (rows 2i, 2i+1: sample i)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 1000, (BATCH, 12), generator=g)
    ids[:, 0], ids[:, -1] = 49406, 49407
    batch = {"image": torch.randn(BATCH, 3, image_size, image_size, generator=g), "text": ids}
    if strategy == "slip":
        batch["views"] = torch.randn(2 * BATCH, 3, image_size, image_size, generator=g)
    start, stop = rows.start or 0, rows.stop or BATCH
    return {k: v[2 * start:2 * stop] if k == "views" else v[start:stop] for k, v in batch.items()}


def step_args(accum_steps, label_smoothing=0.0):
    return SimpleNamespace(accum_steps=accum_steps, precision="fp32", ssl_scale=1.0, grad_clip=0.0,
                           label_smoothing=label_smoothing)


def step_grads(model, strategy, batch, accum_steps, wrapped=None):
    """Run train.train_step once with a zero learning rate; return (loss, {name: grad})."""
    torch.manual_seed(2)                                   # FLIP's masks come from here
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    terms = train.train_step(wrapped or model, model, batch, MASK_RATIO[strategy], optimizer, scaler,
                             step_args(accum_steps, label_smoothing=0.1 if strategy == "smooth" else 0.0))
    return terms["loss"], {n: p.grad.clone() for n, p in model.named_parameters()}


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


@pytest.mark.parametrize("strategy", ["clip", "flip", "slip", "sigmoid", "smooth"])
@pytest.mark.parametrize("accum_steps", [2, 4])
def test_gradient_cache_equals_single_pass(strategy, accum_steps):
    reference = step_grads(make_model(strategy), strategy, make_batch(strategy), 1)
    accumulated = step_grads(make_model(strategy), strategy, make_batch(strategy), accum_steps)
    assert_same(reference, accumulated)
    assert all(g.abs().sum() > 0 for g in reference[1].values())   # every parameter gets a gradient


@pytest.mark.parametrize("strategy", ["clip", "flip"])
def test_grad_checkpointing_equals_plain(strategy):
    plain = step_grads(make_model(strategy), strategy, make_batch(strategy), 1)
    ckpt = step_grads(make_model(strategy, grad_checkpointing=True), strategy, make_batch(strategy), 1)
    assert_same(plain, ckpt)


def test_slip_head_reads_the_tower_feature_before_the_projection():
    # SLIP: image_mlp(visual(aug)), so the SimCLR gradient never reaches the image projection
    model = make_model("slip")
    assert model.ssl_head[0].in_features == model.visual.width != model.config.embed_dim
    batch = make_batch("slip")
    features = model(batch["image"], batch["text"], views=batch["views"])[3]
    assert features.shape == (2 * BATCH, model.visual.width)
    model.loss(*[f.detach() for f in model(batch["image"], batch["text"])], view_features=features)["ssl"].backward()
    assert model.visual.proj.grad is None and model.ssl_head[0].weight.grad.abs().sum() > 0


# -----------------------------------------------------------------------------
# BatchNorm running statistics under the gradient cache


def test_gradient_cache_counts_each_micro_batch_once_in_batchnorm():
    model = make_model("clip", arch="rn-test")
    batch = make_batch("clip", image_size=64)
    reference = copy.deepcopy(model)
    with torch.no_grad():                                   # one train-mode forward per micro-batch
        for half in (slice(0, BATCH // 2), slice(BATCH // 2, BATCH)):
            reference.encode_image(batch["image"][half])
    step_grads(model, "clip", batch, accum_steps=2)
    ours, theirs = dict(model.named_buffers()), dict(reference.named_buffers())
    assert ours["visual.bn1.num_batches_tracked"] == 2
    for name in theirs:
        assert torch.allclose(ours[name].float(), theirs[name].float(), atol=1e-6), name


# -----------------------------------------------------------------------------
# the temperature


def sgd_step(model, lr):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train.train_step(model, model, make_batch("clip"), 0.0, optimizer, scaler, step_args(1))


def test_logit_scale_is_clamped_after_the_step_and_keeps_its_gradient():
    model = make_model("clip")
    with torch.no_grad():
        model.logit_scale.fill_(5.0)                        # past ln 100 = 4.605
    sgd_step(model, lr=1e-3)
    assert model.logit_scale.item() == pytest.approx(math.log(100), abs=1e-6)
    # at the clamp, the gradient of a loss on random features lowers the scale: it must still move
    assert model.logit_scale.grad is not None and model.logit_scale.grad.item() > 0
    sgd_step(model, lr=1e-1)
    assert model.logit_scale.item() < math.log(100) - 1e-4


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
    model = make_model(strategy)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    n = BATCH // world
    loss, grads = step_grads(model, strategy, make_batch(strategy, slice(rank * n, (rank + 1) * n)), accum_steps,
                             wrapped=ddp)
    dist.all_reduce(loss)
    results[(rank, accum_steps)] = (loss / world, grads)
    dist.destroy_process_group()


def _run_two_processes(strategy, accum_steps, results):
    mp.spawn(_worker, args=(2, _free_port(), strategy, accum_steps, results), nprocs=2, join=True)


@pytest.mark.parametrize("strategy", ["clip", "slip", "sigmoid", "smooth"])
def test_two_processes_equal_one_process(strategy):
    reference = step_grads(make_model(strategy), strategy, make_batch(strategy), 1)
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
