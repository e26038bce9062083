"""Contrastive losses for CLIP and SLIP, exact under data parallelism.

- CLIP's symmetric InfoNCE (Radford et al. 2021, "Learning Transferable Visual Models From Natural
  Language Supervision"), over the *global* batch.
- SimCLR's NT-Xent (Chen et al. 2020), the self-supervised term SLIP adds (Mu et al. 2021,
  "SLIP: Self-supervision meets Language-Image Pre-training"), with SLIP's projection head.

Under DDP every rank all-gathers the features of the other ranks *with gradient* and computes only
its own rows of the similarity matrix against all columns (the "local loss" of open_clip). DDP then
averages the ranks' gradients, and the result equals single-process training on the full global
batch: rank r's loss is L_r = mean over its rows, the full loss is mean_r L_r, and the gather's
backward sums the gradient each rank's loss sends to every other rank's features.

Every loss returns a dict of named terms with the total under "loss".
"""

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


# -----------------------------------------------------------------------------
# gather with gradient


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        # Every rank's loss touches every rank's features: sum those contributions, keep our slice.
        # (all_reduce rather than reduce_scatter: the gloo backend used on CPU has only the former.)
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        rank = dist.get_rank()
        return grad[rank * n:(rank + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from every rank in rank order, keeping the autograd graph; identity alone."""
    return _GatherWithGrad.apply(x) if _distributed() else x


def _local_labels(n: int, device) -> torch.Tensor:
    """Column index of each local row's positive in the gathered batch."""
    offset = dist.get_rank() * n if _distributed() else 0
    return torch.arange(offset, offset + n, device=device)


# -----------------------------------------------------------------------------
# losses


def clip_loss(image_features, text_features, logit_scale) -> dict:
    """Symmetric InfoNCE over the global batch.

    image_features, text_features: [n, D] unit vectors of this rank's samples; logit_scale: the
    (already exponentiated) temperature scale. Returns {"loss", "clip"}.
    """
    all_image = gather_with_grad(image_features)             # N, D
    all_text = gather_with_grad(text_features)               # N, D
    labels = _local_labels(image_features.shape[0], image_features.device)
    logits_per_image = logit_scale * image_features @ all_text.T   # n, N
    logits_per_text = logit_scale * text_features @ all_image.T    # n, N
    # The logits run in fp32 even under autocast: the softmax over a large batch needs the range.
    loss = (F.cross_entropy(logits_per_image.float(), labels)
            + F.cross_entropy(logits_per_text.float(), labels)) / 2
    return {"loss": loss, "clip": loss}


def simclr_loss(z1, z2, temperature: float = 0.1) -> dict:
    """NT-Xent between two views over the global batch (SimCLR; SLIP's SSL term).

    z1, z2: [n, d] projections of two augmented views of this rank's images (normalised here).
    Each view's positive is the other view of the same image; negatives are every other view of
    every image in the global batch (2N - 2 of them). Returns {"loss", "ssl"}.
    """
    z1, z2 = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    all1, all2 = gather_with_grad(z1), gather_with_grad(z2)       # N, d
    n, N = z1.shape[0], all1.shape[0]
    labels = _local_labels(n, z1.device)
    self_mask = F.one_hot(labels, N).bool()                       # n, N: a view is not its own negative
    logits_11 = (z1 @ all1.T / temperature).masked_fill(self_mask, float("-inf"))
    logits_22 = (z2 @ all2.T / temperature).masked_fill(self_mask, float("-inf"))
    logits_12 = z1 @ all2.T / temperature
    logits_21 = z2 @ all1.T / temperature
    loss = (F.cross_entropy(torch.cat([logits_12, logits_11], 1), labels)
            + F.cross_entropy(torch.cat([logits_21, logits_22], 1), labels)) / 2
    return {"loss": loss, "ssl": loss}


# -----------------------------------------------------------------------------
# SLIP's projection head


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the global batch across ranks.

    What SyncBatchNorm does, written with the gather above so it runs on any backend (torch's
    SyncBatchNorm is GPU-only, and the CPU tests use gloo) and only per-channel sums travel.
    On a single process it is exactly nn.BatchNorm1d.
    """

    def forward(self, x):                                          # n, C
        if not (self.training and _distributed()):
            return super().forward(x)
        count = x.shape[0] * dist.get_world_size()
        xf = x.float()
        # Two passes (mean, then squared deviations), as BatchNorm itself computes them: the
        # one-pass E[x^2] - E[x]^2 loses digits that SLIP's low temperature then amplifies.
        mean = gather_with_grad(xf.sum(0)[None]).sum(0) / count                 # C
        var = gather_with_grad(((xf - mean) ** 2).sum(0)[None]).sum(0) / count  # C, biased
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * count / max(count - 1, 1))
            self.num_batches_tracked += 1
        y = (x - mean.to(x.dtype)) * torch.rsqrt(var + self.eps).to(x.dtype)
        return y * self.weight + self.bias


class SimCLRHead(nn.Module):
    """SLIP's 3-layer MLP projector: Linear-Norm-ReLU, Linear-Norm-ReLU, Linear (4096 hidden, 256 out).

    norm="batch" is SLIP's BatchNorm, with statistics over the global batch under data
    parallelism (GlobalBatchNorm1d); BatchNorm over a handful of samples per GPU collapses, so
    norm="layer" gives a batch-free alternative that behaves the same at any per-GPU batch.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "layer"):
            raise ValueError(f"unknown SSL head norm {norm!r}; valid: batch, layer")
        Norm = GlobalBatchNorm1d if norm == "batch" else nn.LayerNorm
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), Norm(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), Norm(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x):                                          # n, D -> n, out_dim
        return self.layers(x)
