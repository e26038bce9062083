"""big_vision's Adafactor, the optimiser of "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024), in torch.

The paper trains with Adafactor, beta1 0.9 and beta2 0.999, as big_vision implements it: the chain that
`make()` in google-research/big_vision big_vision/optax.py builds around its `scale_by_adafactor`, which is
optax's `scale_by_factored_rms` followed by `optax.ema`. It is not torch.optim.Adafactor, which follows
Shazeer & Stern (2018): a relative step size, updates scaled by the parameter's RMS, no momentum.
One step for a parameter p with gradient g (the caller clips g first, as big_vision does), t = 1, 2, ...:

    beta2_t = min(beta2_cap, 1 - t^-decay_rate)              0 at t = 1, so v_1 = g^2 + eps; 0.999 from t = 5624
    v_t     = beta2_t v_{t-1} + (1 - beta2_t) (g^2 + eps)    factored into row and column means for large p
    u_t     = g / sqrt(v_t)
    m_t     = momentum m_{t-1} + (1 - momentum) u_t          no bias correction; stored in bfloat16
    p      <- p - s(t) (lr m_t + weight_decay p)

Weight decay is big_vision's: `optax.add_decayed_weights` comes after `optax.scale(lr)`, so the decay is
multiplied by the schedule s(t) in [0, 1] but not by the lr. The paper's weight_decay 1e-4 at lr 1e-3 thus
shrinks weights per step as much as torch AdamW's weight_decay 0.1 does at that lr (AdamW multiplies by the
lr: 1e-3 x 0.1). The schedule arrives the torch way: the caller sets group["lr"] = peak_lr * s(t) before each
step, each group keeps the lr it was built with as group["initial_lr"] (the name torch's LR schedulers use),
and s(t) = group["lr"] / group["initial_lr"].
"""
import torch

# -----------------------------------------------------------------------------
# which second moments are factored (optax's scale_by_factored_rms)


def factored_dims(shape, min_dim_size_to_factor=32):
    """(second largest axis, largest axis) to factor a second moment of this shape over, or None.

    optax's rule: a tensor of 2+ dims whose second largest dimension has at least min_dim_size_to_factor
    entries keeps v_row, the mean of g^2 + eps over its largest axis, and v_col, the mean over the second
    largest, instead of a full v. The estimate is symmetric in the two axes and carries the others along, so
    a permutation of the axes gives the same update: a torch Linear weight [out, in] or conv [out, in, kh, kw]
    matches flax's kernel [in, out] or [kh, kw, in, out]. Tensors that flax shapes differently do not: its
    attention kernels are [D, heads, head_dim] where tinyclip's in_proj_weight is one [3D, D]; we do not
    emulate flax's layouts. Equal sizes are ordered by axis (numpy's argsort promises no order for them; only
    three or more equal largest dimensions could tell the difference).
    """
    if len(shape) < 2:
        return None
    second, largest = sorted(range(len(shape)), key=lambda axis: shape[axis])[-2:]
    return (second, largest) if shape[second] >= min_dim_size_to_factor else None


# -----------------------------------------------------------------------------
# the optimiser


class Adafactor(torch.optim.Optimizer):
    """big_vision's Adafactor (see the module docstring). Param groups may override weight_decay.

    State per parameter, all tensors so that state_dict() / load_state_dict() resume bit-identically:
    "step" (updates done), "v" or "v_row" and "v_col" (the second moment), "momentum" (m, momentum_dtype).
    A parameter without a gradient is skipped (optax would still count the step for it).
    """

    def __init__(self, params, lr=1e-3, weight_decay=1e-4, momentum=0.9, beta2_cap=0.999, decay_rate=0.8,
                 min_dim_size_to_factor=32, eps=1e-30, momentum_dtype=torch.bfloat16):
        if lr < 0:
            raise ValueError(f"Adafactor: lr must be >= 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"Adafactor: weight_decay must be >= 0, got {weight_decay}")
        if not 0 <= momentum < 1:
            raise ValueError(f"Adafactor: momentum must be in [0, 1), got {momentum}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, beta2_cap=beta2_cap,
                        decay_rate=decay_rate, min_dim_size_to_factor=min_dim_size_to_factor, eps=eps,
                        momentum_dtype=momentum_dtype)
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("initial_lr", group["lr"])  # the peak lr that s(t) = lr / initial_lr is measured against

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # s(t); a group built with lr 0 has no peak to measure it against, and stays where it is
            schedule = group["lr"] / group["initial_lr"] if group["initial_lr"] > 0 else 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("Adafactor: sparse gradients are not supported (an nn.Embedding with "
                                     "sparse=True?); use dense gradients")
                state = self.state[p]
                if not state:
                    self._init_state(p, state, group)
                m = self._momentum(self._scale_by_rms(p.grad, state, group), state, group)
                # then big_vision's chain: scale(lr), add_decayed_weights(wd), scale_by_schedule(s), scale(-1)
                p.sub_(schedule * (group["initial_lr"] * m + group["weight_decay"] * p))
        return loss

    @staticmethod
    def _init_state(p, state, group):
        state["step"] = torch.zeros((), dtype=torch.int64)
        dims = factored_dims(p.shape, group["min_dim_size_to_factor"])
        if dims is None:
            state["v"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        else:
            second, largest = dims  # select(axis, 0) drops that axis from the shape
            state["v_row"] = torch.zeros_like(p.select(largest, 0), memory_format=torch.contiguous_format)
            state["v_col"] = torch.zeros_like(p.select(second, 0), memory_format=torch.contiguous_format)
        state["momentum"] = torch.zeros_like(p, dtype=group["momentum_dtype"], memory_format=torch.contiguous_format)

    @staticmethod
    def _scale_by_rms(grad, state, group):
        """u_t = g / sqrt(v_t), with v_t updated in state (optax's scale_by_factored_rms)."""
        state["step"] = state["step"] + 1  # a new tensor, as every entry: a state_dict() taken earlier stays put
        t = state["step"].item()
        beta2 = min(group["beta2_cap"], 1.0 - t ** -group["decay_rate"])
        grad_sq = grad.square() + group["eps"]  # eps inside the means: a zero gradient gives v = eps, not 0
        dims = factored_dims(grad.shape, group["min_dim_size_to_factor"])
        if dims is None:
            state["v"] = beta2 * state["v"] + (1 - beta2) * grad_sq
            return grad * state["v"].rsqrt()
        second, largest = dims
        v_row = beta2 * state["v_row"] + (1 - beta2) * grad_sq.mean(dim=largest)  # shape without the largest axis
        v_col = beta2 * state["v_col"] + (1 - beta2) * grad_sq.mean(dim=second)  # shape without the second largest
        state["v_row"], state["v_col"] = v_row, v_col
        # v ~ v_row v_col / mean(v_row): both means hold the mean of g^2 over the two axes; in v_row the second
        # largest axis moved down by one if it came after the largest
        row_mean = v_row.mean(dim=second - 1 if second > largest else second, keepdim=True)
        return grad * (v_row / row_mean).rsqrt().unsqueeze(largest) * v_col.rsqrt().unsqueeze(second)

    @staticmethod
    def _momentum(update, state, group):
        """m_t = momentum m_{t-1} + (1 - momentum) u_t (optax.ema, debias=False), in full precision.

        Only the stored copy is rounded to momentum_dtype; m_t itself is the update, as optax.ema returns it.
        optax computes momentum * m_{t-1} in the stored dtype (JAX casts the Python scalar to the array's), so
        with bfloat16 the stored momentum decays by bf16(0.9) = 0.8984375, not 0.9; under jit XLA keeps that
        product in float32, as here. (load_state_dict casts the stored copy to p's dtype: same values.)
        """
        stored_decay = torch.tensor(group["momentum"], dtype=group["momentum_dtype"]).item()
        m = (1 - group["momentum"]) * update + stored_decay * state["momentum"].to(update.dtype)
        state["momentum"] = m.to(group["momentum_dtype"])
        return m
