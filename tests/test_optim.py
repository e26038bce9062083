"""tinyclip.optim.Adafactor is big_vision's Adafactor, the optimiser of "Scaling (Down) CLIP".

Checked against: three steps of the real chain in optax (tests/fixtures/adafactor_big_vision.json, made by
scripts/fixtures/make_adafactor_fixture.py); a three-step answer worked out here in plain float64 Python
from the formulas, for a factored 2-D weight and a 1-D bias; the bfloat16 momentum's known values; the
beta2 schedule, cap included. Also: which tensors are factored, a schedule of 0 moves nothing (the decay
scales with it), weight decay only where the group says, a state_dict round trip resumes bit-identically,
and it trains a small regression.
"""

import copy
import io
import json
import math
from pathlib import Path

import pytest
import torch

from tinyclip.optim import Adafactor, factored_dims

FIXTURE = Path(__file__).parent / "fixtures" / "adafactor_big_vision.json"


def set_schedule(opt, s):
    """What train.py does before each step: group lr = peak lr * s(t)."""
    for group in opt.param_groups:
        group["lr"] = group["initial_lr"] * s


# -----------------------------------------------------------------------------
# the reference: optax


def test_matches_optax_big_vision_chain():
    fx = json.loads(FIXTURE.read_text())
    hp = fx["hyperparameters"]
    names = list(fx["params"])
    params_before, state_before = fx["params"], None
    for t, expected in enumerate(fx["steps"]):
        # Each step starts from optax's parameters and state, so that a rounding difference in one step
        # (below) cannot carry into the next and each step is checked on its own.
        params = {n: torch.tensor(params_before[n], dtype=torch.float32) for n in names}
        opt = Adafactor([{"params": [params[n] for n in names if fx["decayed"][n]]},
                         {"params": [params[n] for n in names if not fx["decayed"][n]], "weight_decay": 0.0}],
                        lr=hp["lr"], weight_decay=hp["weight_decay"], momentum=hp["momentum"],
                        beta2_cap=hp["beta2_cap"], decay_rate=hp["decay_rate"],
                        min_dim_size_to_factor=hp["min_dim_size_to_factor"], eps=hp["eps"])
        for n in names:
            if state_before is not None:
                saved = state_before[n]
                opt.state[params[n]] = {"step": torch.tensor(t),
                                        **{k: torch.tensor(v) for k, v in saved.items() if k != "momentum"},
                                        "momentum": torch.tensor(saved["momentum"]).to(torch.bfloat16)}
            params[n].grad = torch.tensor(expected["grads"][n], dtype=torch.float32)
        set_schedule(opt, fx["schedule"][t])
        opt.step()
        for n in names:
            state = opt.state[params[n]]
            # Parameters: within two float32 ulps (|p| < 2 here). Using a momentum decay of exactly 0.9 instead
            # of optax's bf16(0.9), or keeping the momentum in float32, is off by 7e-6 to 1e-4 at step 2.
            torch.testing.assert_close(params[n], torch.tensor(expected["params"][n]), rtol=0, atol=2.5e-7)
            # Second moments: float32, up to the order of the sums in the means.
            for k in ("v", "v_row", "v_col"):
                assert (k in state) == (k in expected["state"][n]), (n, k)
                if k in state:
                    torch.testing.assert_close(state[k], torch.tensor(expected["state"][n][k]), rtol=2e-6, atol=0)
            # The stored momentum is bfloat16: a float32 rounding difference that lands on a bfloat16 midpoint
            # rounds the other way, so entries may differ by one bfloat16 step (2^-8 to 2^-7 relative).
            assert state["momentum"].dtype == torch.bfloat16
            torch.testing.assert_close(state["momentum"].float(), torch.tensor(expected["state"][n]["momentum"]),
                                       rtol=2 ** -7, atol=0)
        params_before, state_before = expected["params"], expected["state"]


# -----------------------------------------------------------------------------
# the formulas, by hand


def hand_adafactor(weights, bias, weight_grads, bias_grads, schedule, lr, wd):
    """Three steps of the module docstring's formulas in float64 lists, for a factored [R][C] weight (R <= C,
    so the rows are the second largest axis) and an undecayed bias; momentum 0.9 kept exactly."""
    eps, mean = 1e-30, lambda xs: sum(xs) / len(xs)
    rows, cols = len(weights), len(weights[0])
    v_row, v_col, v_bias = [0.0] * rows, [0.0] * cols, [0.0] * len(bias)
    m_w, m_b = [[0.0] * cols for _ in range(rows)], [0.0] * len(bias)
    for t, (g, gb, s) in enumerate(zip(weight_grads, bias_grads, schedule), start=1):
        beta2 = min(0.999, 1 - t ** -0.8)
        sq = [[x * x + eps for x in row] for row in g]
        v_row = [beta2 * v + (1 - beta2) * mean(r) for v, r in zip(v_row, sq)]  # mean over the columns
        v_col = [beta2 * v + (1 - beta2) * mean(c) for v, c in zip(v_col, zip(*sq))]  # mean over the rows
        v_mean = mean(v_row)
        for i in range(rows):
            for j in range(cols):
                u = g[i][j] / math.sqrt(v_row[i] * v_col[j] / v_mean)
                m_w[i][j] = 0.9 * m_w[i][j] + 0.1 * u
                weights[i][j] -= s * (lr * m_w[i][j] + wd * weights[i][j])
        for j, x in enumerate(gb):
            v_bias[j] = beta2 * v_bias[j] + (1 - beta2) * (x * x + eps)
            m_b[j] = 0.9 * m_b[j] + 0.1 * x / math.sqrt(v_bias[j])
            bias[j] -= s * lr * m_b[j]
    return weights, bias


def test_three_steps_by_hand_float64():
    lr, wd, schedule = 0.1, 0.05, [0.5, 1.0, 0.8]
    w0 = [[(i - j) / 4 for j in range(4)] for i in range(3)]
    b0 = [0.25, -0.5, 1.0, 0.0]
    weight_grads = [[[((i + 1) * (j + 2) * (t + 1) % 7 - 3) / 10 for j in range(4)] for i in range(3)]
                    for t in range(3)]  # entries in -0.3..0.3, zeros included
    bias_grads = [[((j * (t + 1)) % 3 - 1) * 0.5 * (t + 1) for j in range(4)] for t in range(3)]

    w = torch.tensor(w0, dtype=torch.float64)
    b = torch.tensor(b0, dtype=torch.float64)
    # min_dim_size_to_factor=2 factors this 3 x 4 weight; float64 momentum keeps m in full precision
    opt = Adafactor([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=lr, weight_decay=wd,
                    min_dim_size_to_factor=2, momentum_dtype=torch.float64)
    for t in range(3):
        w.grad = torch.tensor(weight_grads[t], dtype=torch.float64)
        b.grad = torch.tensor(bias_grads[t], dtype=torch.float64)
        set_schedule(opt, schedule[t])
        opt.step()
        if t == 0:  # step 1: v = g^2 + eps, so u = sign(g) and the bias moves by s lr 0.1 sign(g)
            sign = [math.copysign(1.0, x) if x else 0.0 for x in bias_grads[0]]
            torch.testing.assert_close(b, torch.tensor([x - 0.5 * lr * 0.1 * sg for x, sg in zip(b0, sign)],
                                                       dtype=torch.float64), rtol=0, atol=1e-15)
    assert set(opt.state[w]) == {"step", "v_row", "v_col", "momentum"}
    want_w, want_b = hand_adafactor(copy.deepcopy(w0), list(b0), weight_grads, bias_grads, schedule, lr, wd)
    torch.testing.assert_close(w, torch.tensor(want_w, dtype=torch.float64), rtol=0, atol=1e-13)
    torch.testing.assert_close(b, torch.tensor(want_b, dtype=torch.float64), rtol=0, atol=1e-13)


def test_bfloat16_momentum_by_hand():
    """A constant gradient keeps v = g^2 + eps, so u = sign(g) every step and only the momentum varies.

    As optax stores it: m_t = 0.1 u + bf16(0.9) bf16(m_{t-1}) with bf16(0.9) = 0.8984375, in float32."""
    bf16 = lambda x: torch.tensor(x, dtype=torch.float32).to(torch.bfloat16).item()
    lr, g = 0.1, [0.5, -2.0, 3.0]
    b = torch.zeros(3)
    opt = Adafactor([b], lr=lr, weight_decay=0.0)
    m, before = 0.0, b.clone()
    for _ in range(3):
        b.grad = torch.tensor(g)
        opt.step()
        m = 0.1 + 0.8984375 * bf16(m)
        torch.testing.assert_close(before - b, torch.tensor([lr * m * math.copysign(1, x) for x in g]),
                                   rtol=1e-6, atol=0)
        assert opt.state[b]["momentum"].dtype == torch.bfloat16
        assert opt.state[b]["momentum"][0].item() == bf16(m)
        before = b.clone()


@pytest.mark.parametrize("t", [1, 2, 100, 5000, 10_000])
def test_beta2_schedule(t):
    """beta2_t = min(0.999, 1 - t^-0.8): with v_{t-1} = 1 and a zero gradient, v_t = beta2_t + (1 - beta2_t) eps."""
    p = torch.zeros(5)
    opt = Adafactor([p])
    opt.state[p] = {"step": torch.tensor(t - 1), "v": torch.ones(5), "momentum": torch.zeros(5, dtype=torch.bfloat16)}
    p.grad = torch.zeros(5)
    opt.step()
    beta2 = min(0.999, 1 - t ** -0.8)  # 0 at t = 1, so v_1 = eps
    torch.testing.assert_close(opt.state[p]["v"], torch.full((5,), beta2 + (1 - beta2) * 1e-30), rtol=1e-6, atol=0)


# -----------------------------------------------------------------------------
# which second moments are factored


def test_factored_dims_rule():
    assert factored_dims((40,)) is None  # 1-D: never
    assert factored_dims((31, 500)) is None  # second largest below 32
    assert factored_dims((32, 32)) == (0, 1)  # both 32: factored
    assert factored_dims((500, 32)) == (1, 0)  # (second largest, largest)
    assert factored_dims((768, 3, 16, 16)) is None  # a ViT patch stem: second largest is 16
    assert factored_dims((64, 32, 3, 3)) == (1, 0)  # a ResNet conv: out and in
    assert factored_dims((3, 64, 32)) == (2, 1)
    assert factored_dims((8, 40), min_dim_size_to_factor=8) == (0, 1)


@pytest.mark.parametrize("shape, expected", [
    ((31, 500), {"v": (31, 500)}),
    ((32, 32), {"v_row": (32,), "v_col": (32,)}),
    ((64, 32, 3, 3), {"v_row": (32, 3, 3), "v_col": (64, 3, 3)}),
    ((7,), {"v": (7,)}),
])
def test_state_shapes(shape, expected):
    p = torch.zeros(shape)
    p.grad = torch.ones(shape)
    opt = Adafactor([p])
    opt.step()
    state = opt.state[p]
    assert {k: tuple(state[k].shape) for k in state if k.startswith("v")} == expected
    assert state["momentum"].shape == p.shape and int(state["step"]) == 1


# -----------------------------------------------------------------------------
# schedule, weight decay, refusals


def test_schedule_zero_and_lr_zero_move_nothing():
    torch.manual_seed(0)
    w, b = torch.randn(32, 40), torch.randn(40)
    opt = Adafactor([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=1e-3, weight_decay=0.1)
    w.grad, b.grad = torch.randn(32, 40), torch.randn(40)
    opt.step()
    before = w.clone(), b.clone()
    set_schedule(opt, 0.0)  # s(t) = 0: no gradient step, and no decay either (it scales with s(t))
    w.grad, b.grad = torch.randn(32, 40), torch.randn(40)
    opt.step()
    assert torch.equal(w, before[0]) and torch.equal(b, before[1])
    assert int(opt.state[w]["step"]) == 2  # the state still moves on, as in optax

    p = torch.randn(8, 40)
    frozen = Adafactor([p], lr=0.0, weight_decay=0.1)  # an lr of 0 from the start
    p.grad, before = torch.randn(8, 40), p.clone()
    frozen.step()
    assert torch.equal(p, before)


def test_weight_decay_only_where_the_group_says():
    w, b = torch.full((8, 40), 2.0), torch.full((40,), 2.0)
    opt = Adafactor([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=1e-3, weight_decay=0.1)
    set_schedule(opt, 0.5)
    w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)  # u = 0: only the decay moves anything
    opt.step()
    torch.testing.assert_close(w, torch.full_like(w, 2.0 * (1 - 0.5 * 0.1)))  # s wd p, not multiplied by the lr
    assert torch.equal(b, torch.full_like(b, 2.0))


def test_skips_missing_gradients_and_refuses_bad_input():
    p, q = torch.ones(4, requires_grad=True), torch.ones(4, requires_grad=True)
    opt = Adafactor([p, q])
    p.grad = torch.ones(4)
    opt.step()
    assert q not in opt.state and torch.equal(q, torch.ones(4))

    emb = torch.nn.Embedding(10, 4, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        Adafactor(emb.parameters()).step()
    for kwargs in (dict(lr=-1.0), dict(weight_decay=-0.1), dict(momentum=1.0)):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            Adafactor([p], **kwargs)


# -----------------------------------------------------------------------------
# resuming and training


def test_state_dict_round_trip_is_bit_identical():
    torch.manual_seed(0)
    shapes = [(32, 40), (8, 40), (40,), (33, 32, 2, 1)]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    a = [torch.randn(s) for s in shapes]
    opt_a = Adafactor([{"params": a[:2] + a[3:]}, {"params": [a[2]], "weight_decay": 0.0}], lr=0.1, weight_decay=0.05)
    for t in range(2):
        for p, g in zip(a, grads[t]):
            p.grad = g
        set_schedule(opt_a, [0.5, 1.0][t])
        opt_a.step()
    buffer = io.BytesIO()  # through a checkpoint file, as train.py saves and loads it
    torch.save({"params": a, "optimizer": opt_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    b = [p.clone() for p in saved["params"]]
    opt_b = Adafactor([{"params": b[:2] + b[3:]}, {"params": [b[2]], "weight_decay": 0.0}], lr=0.1, weight_decay=0.05)
    opt_b.load_state_dict(saved["optimizer"])
    for opt, params in ((opt_a, a), (opt_b, b)):
        for p, g in zip(params, grads[2]):
            p.grad = g
        set_schedule(opt, 0.8)
        opt.step()
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        for k in opt_a.state[pa]:
            assert torch.equal(opt_a.state[pa][k], opt_b.state[pb][k]), k
            assert opt_a.state[pa][k].dtype == opt_b.state[pb][k].dtype, k


def test_trains_a_small_regression():
    torch.manual_seed(0)
    x = torch.randn(256, 40)
    teacher = torch.nn.Linear(40, 32)
    y = teacher(x).detach()
    model = torch.nn.Linear(40, 32)  # weight [32, 40]: factored; bias: a full second moment
    opt = Adafactor([{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}], lr=0.02)
    losses = []
    for _ in range(50):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], losses[::10]
