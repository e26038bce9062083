"""Losses: CLIP InfoNCE (with and without label smoothing), SigLIP's sigmoid loss and SimCLR NT-Xent
against direct formulas and closed-form values, the logits in float32 under bf16 autocast, and exactness under two gloo processes (the gathered local loss gives the single-process
full-batch loss and gradients); SLIP's head (tinyclip/model.py) and its global BatchNorm, whose
outputs, gradients and running statistics on two processes equal nn.BatchNorm1d on the
concatenated batch."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tinyclip.losses import clip_loss, sigmoid_loss, simclr_loss
from tinyclip.model import GlobalBatchNorm1d, SimCLRHead


def reference_clip_loss(img, txt, scale):
    """The textbook symmetric InfoNCE, written with explicit log-softmax sums."""
    logits = scale * img @ txt.T
    n = logits.shape[0]
    i2t = -(logits.log_softmax(1).diagonal()).mean()
    t2i = -(logits.T.log_softmax(1).diagonal()).mean()
    return (i2t + t2i) / 2 if n else None


def reference_ntxent(z1, z2, t):
    """NT-Xent over 2N views by explicit loops: view k's positive is its twin, negatives all others."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    total = 0.0
    for k in range(2 * n):
        twin = (k + n) % (2 * n)
        sims = torch.stack([z[k] @ z[j] / t for j in range(2 * n) if j != k])
        others = [j for j in range(2 * n) if j != k]
        total = total - (sims[others.index(twin)] - torch.logsumexp(sims, 0))
    return total / (2 * n)


def unit(x):
    return F.normalize(x, dim=-1)


def test_clip_loss_matches_reference():
    torch.manual_seed(0)
    img, txt = unit(torch.randn(8, 16)), unit(torch.randn(8, 16))
    terms = clip_loss(img, txt, torch.tensor(14.3))
    assert set(terms) == {"loss", "clip"}
    assert torch.allclose(terms["loss"], reference_clip_loss(img, txt, 14.3), atol=1e-6)


def test_clip_loss_perfect_alignment_is_small_and_chance_is_log_n():
    eye = torch.eye(6)
    assert clip_loss(eye, eye, torch.tensor(100.0))["loss"] < 1e-6
    same = unit(torch.ones(6, 4))
    assert math.isclose(clip_loss(same, same, torch.tensor(10.0))["loss"].item(), math.log(6), rel_tol=1e-6)


def test_label_smoothing_has_its_closed_form():
    # Logits s on the diagonal, 0 elsewhere; targets (1 - eps) one-hot + eps / N: the loss of each row is
    # log(e^s + N - 1) - (1 - eps + eps / N) s, in both directions.
    n, s, eps = 6, 5.0, 0.1
    got = clip_loss(torch.eye(n), torch.eye(n), torch.tensor(s), label_smoothing=eps)["loss"].item()
    assert got == pytest.approx(math.log(math.exp(s) + n - 1) - (1 - eps + eps / n) * s, rel=1e-6)
    assert got > clip_loss(torch.eye(n), torch.eye(n), torch.tensor(s))["loss"].item()


def reference_sigmoid_loss(img, txt, t, b):
    """SigLIP's loss by the paper's formula, pair by pair: -1/|B| sum_i sum_j log 1 / (1 + exp(z_ij (-t x_i.y_j - b)))."""
    n, total = img.shape[0], 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += math.log(1 / (1 + math.exp(z * (-t * float(img[i] @ txt[j]) - b))))
    return -total / n


def test_sigmoid_loss_matches_the_papers_formula_and_a_closed_form():
    torch.manual_seed(2)
    img, txt = unit(torch.randn(7, 16)), unit(torch.randn(7, 16))
    terms = sigmoid_loss(img, txt, torch.tensor(10.0), torch.tensor(-10.0))
    assert set(terms) == {"loss", "clip"}
    assert terms["loss"].item() == pytest.approx(reference_sigmoid_loss(img, txt, 10.0, -10.0), rel=1e-6)
    # two orthogonal pairs at SigLIP's initial t = 10, b = -10: a positive's logit is 0 (-log sigmoid(0) = log 2),
    # a negative's -10 (-log sigmoid(10) = log(1 + e^-10)); one of each per row
    eye = torch.eye(2)
    closed = math.log(2) + math.log(1 + math.exp(-10))
    assert sigmoid_loss(eye, eye, torch.tensor(10.0), torch.tensor(-10.0))["loss"].item() == pytest.approx(closed)


def test_simclr_loss_matches_loop_reference():
    torch.manual_seed(1)
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    terms = simclr_loss(z1, z2, temperature=0.1)
    assert set(terms) == {"loss", "ssl"}
    assert torch.allclose(terms["loss"], reference_ntxent(z1, z2, 0.1), atol=1e-5)


def test_head_shapes_and_bad_norm():
    head = SimCLRHead(32, hidden_dim=64, out_dim=16, norm="layer")
    assert head(torch.randn(3, 32)).shape == (3, 16)
    with pytest.raises(ValueError, match="norm"):
        SimCLRHead(32, norm="group")


def test_logits_run_in_float32_under_bf16_autocast():
    torch.manual_seed(5)
    img, txt = unit(torch.randn(64, 32)), unit(torch.randn(64, 32))
    exact = reference_clip_loss(img.double(), txt.double(), 100.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = clip_loss(img, txt, torch.tensor(100.0))["loss"]
        bf16 = reference_clip_loss(img, txt, 100.0)  # the same formula with autocast's bf16 matmul
    assert abs(ours.double() - exact) < 1e-5
    assert abs(bf16.double() - exact) > 10 * abs(ours.double() - exact)


# -----------------------------------------------------------------------------
# two gloo processes


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses_and_grads(img, txt, z1, z2, w, bn_head):
    """Full loss terms and the gradients wrt every input, for the (local) rows given."""
    img, txt, z1, z2, w = (t.clone().requires_grad_() for t in (img, txt, z1, z2, w))
    clip = clip_loss(unit(img), unit(txt), w.exp())["loss"]
    ssl = simclr_loss(bn_head(z1), bn_head(z2))["loss"]
    (clip + ssl).backward()
    return clip.detach(), ssl.detach(), img.grad, txt.grad, z1.grad, z2.grad, w.grad


def _make_inputs():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(8, 12, generator=g) for _ in range(4)] + [torch.tensor(2.0)]


def _make_head():
    torch.manual_seed(4)
    return torch.nn.Sequential(torch.nn.Linear(12, 12), GlobalBatchNorm1d(12))


def _worker(rank, world, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    img, txt, z1, z2, w = _make_inputs()
    n = img.shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    head = _make_head()
    clip, ssl, *grads = _losses_and_grads(img[rows], txt[rows], z1[rows], z2[rows], w, head)
    # DDP averages the ranks' gradients; the logit scale and head weights are replicated, features local
    dist.all_reduce(grads[-1])
    weight_grad = head[0].weight.grad.clone()
    dist.all_reduce(weight_grad)
    for t in (clip, ssl):
        dist.all_reduce(t)
    results[rank] = [clip / world, ssl / world, *(g / world for g in grads[:-1]), grads[-1] / world,
                     weight_grad / world]
    dist.destroy_process_group()


def _batchnorm_worker(rank, world, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x = _bn_input()
    n = x.shape[0] // world
    bn = GlobalBatchNorm1d(5)
    local = x[rank * n:(rank + 1) * n].clone().requires_grad_()
    y = bn(local)
    (y * _bn_weights()[rank * n:(rank + 1) * n]).sum().backward()
    results[rank] = (y.detach(), local.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var)
    dist.destroy_process_group()


def _bn_input():
    return torch.randn(12, 5, generator=torch.Generator().manual_seed(6)) * 3 + 1


def _bn_weights():  # a fixed linear read-out of the outputs, so the backward is not trivial
    return torch.randn(12, 5, generator=torch.Generator().manual_seed(7))


def test_global_batchnorm_on_two_processes_equals_batchnorm_on_the_whole_batch():
    x = _bn_input().requires_grad_()
    ref = torch.nn.BatchNorm1d(5)
    y = ref(x)
    (y * _bn_weights()).sum().backward()
    results = mp.Manager().dict()
    mp.spawn(_batchnorm_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    n = x.shape[0] // 2
    for rank in range(2):
        out, grad_x, _, _, mean, var = results[rank]
        rows = slice(rank * n, (rank + 1) * n)
        assert torch.allclose(out, y[rows], atol=1e-6)
        assert torch.allclose(grad_x, x.grad[rows], atol=1e-5)
        assert torch.allclose(mean, ref.running_mean, atol=1e-6)
        assert torch.allclose(var, ref.running_var, atol=1e-6)
    # each rank holds the gain and bias gradients of its own rows' outputs; DDP sums them over ranks
    assert torch.allclose(results[0][2] + results[1][2], ref.weight.grad, atol=1e-5)
    assert torch.allclose(results[0][3] + results[1][3], ref.bias.grad, atol=1e-5)


def test_two_processes_equal_full_batch():
    img, txt, z1, z2, w = _make_inputs()
    head = _make_head()
    clip, ssl, *grads = _losses_and_grads(img, txt, z1, z2, w, head)
    expected = [clip, ssl, *grads, head[0].weight.grad]

    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    n = img.shape[0] // 2
    for rank in range(2):
        got = results[rank]
        assert torch.allclose(got[0], expected[0], atol=1e-6)
        assert torch.allclose(got[1], expected[1], atol=1e-5)
        for g, e in zip(got[2:6], expected[2:6]):   # per-sample feature gradients: our rows
            # rank r's feature gradient sums every rank's loss; DDP's mean over ranks divides by world
            assert torch.allclose(g, e[rank * n:(rank + 1) * n], atol=1e-6)
        assert torch.allclose(got[6], expected[6], atol=1e-6)   # logit scale
        assert torch.allclose(got[7], expected[7], atol=1e-5)   # head weight through global BN
