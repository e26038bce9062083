"""Contrastive losses for CLIP, SigLIP and SLIP, exact under data parallelism; parameter-free functions of features.

- CLIP's symmetric InfoNCE (Radford et al. 2021, "Learning Transferable Visual Models From Natural
  Language Supervision"), over the *global* batch, optionally with label smoothing (Fini et al. 2023,
  "Improved baselines for vision-language pre-training").
- SigLIP's sigmoid loss (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training"): every
  image-text pair of the global batch is its own binary problem, positive on the diagonal.
- SimCLR's NT-Xent (Chen et al. 2020), the self-supervised term SLIP adds (Mu et al. 2021,
  "SLIP: Self-supervision meets Language-Image Pre-training"); SLIP's projection head, which holds
  parameters, is part of the model (tinyclip/model.py).

Under DDP every rank all-gathers the features of the other ranks *with gradient* and computes only
its own rows of the similarity matrix against all columns (the "local loss" of open_clip). DDP then
averages the ranks' gradients, and the result equals single-process training on the full global
batch: rank r's loss is L_r = mean over its rows, the full loss is mean_r L_r, and the gather's
backward sums the gradient each rank's loss sends to every other rank's features.

Every loss returns a dict of named terms with the total under "loss". The similarity matrices are
computed in float32 even under bf16/fp16 autocast: a bf16 dot product of unit vectors is off by up
to ~0.004, which the temperature (up to 100 for CLIP) turns into logit errors of ~0.2-0.4; in fp32
they cost a B x B x D matmul per term, under 1% of a training step at the paper's sizes.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F


# -----------------------------------------------------------------------------
# gather with gradient


def distributed() -> bool:
    """Whether this is one of several processes (torch.distributed initialised, world size > 1)."""
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
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from every rank in rank order, keeping the autograd graph; identity alone."""
    return _GatherWithGrad.apply(x) if distributed() else x


def _similarities(queries, keys, scale):
    """scale * queries @ keys.T in float32, autocast or not: [n, D] x [N, D] -> [n, N]."""
    with torch.autocast(queries.device.type, enabled=False):
        return scale * queries.float() @ keys.float().T


def _local_labels(n: int, device) -> torch.Tensor:
    """Column index of each local row's positive in the gathered batch."""
    offset = dist.get_rank() * n if distributed() else 0
    return torch.arange(offset, offset + n, device=device)


# -----------------------------------------------------------------------------
# losses


def clip_loss(image_features, text_features, logit_scale, label_smoothing: float = 0.0) -> dict:
    """Symmetric InfoNCE over the global batch.

    image_features, text_features: [n, D] unit vectors of this rank's samples; logit_scale: the
    (already exponentiated) temperature scale; label_smoothing: the share of each row's target
    spread evenly over all N columns (torch's cross_entropy rule). Returns {"loss", "clip"}.
    """
    all_image = gather_with_grad(image_features)             # N, D
    all_text = gather_with_grad(text_features)               # N, D
    labels = _local_labels(image_features.shape[0], image_features.device)
    logits_per_image = _similarities(image_features, all_text, logit_scale)   # n, N
    logits_per_text = _similarities(text_features, all_image, logit_scale)    # n, N
    loss = (F.cross_entropy(logits_per_image, labels, label_smoothing=label_smoothing)
            + F.cross_entropy(logits_per_text, labels, label_smoothing=label_smoothing)) / 2
    return {"loss": loss, "clip": loss}


def sigmoid_loss(image_features, text_features, logit_scale, logit_bias) -> dict:
    """SigLIP's loss over the global batch: -(1/N) sum over all N x N pairs of log sigmoid(z_ij * logit_ij),
    logit_ij = logit_scale * <image_i, text_j> + logit_bias, z_ij = 1 on the diagonal and -1 elsewhere.

    As big_vision's siglip trainer: each image row's log-likelihoods are summed, the rows averaged. Here
    each rank scores its own image rows against every text of the global batch (the sum over all pairs
    needs no second direction). Returns {"loss", "clip"} (SigLIP takes CLIP's place in every strategy).
    """
    all_text = gather_with_grad(text_features)                                # N, D
    labels = _local_labels(image_features.shape[0], image_features.device)
    logits = _similarities(image_features, all_text, logit_scale) + logit_bias.float()  # n, N
    signs = 2 * F.one_hot(labels, all_text.shape[0]) - 1                      # n, N: +1 positive, -1 negative
    loss = -F.logsigmoid(signs * logits).sum(dim=1).mean()
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
    logits_11 = _similarities(z1, all1, 1 / temperature).masked_fill(self_mask, float("-inf"))
    logits_22 = _similarities(z2, all2, 1 / temperature).masked_fill(self_mask, float("-inf"))
    logits_12 = _similarities(z1, all2, 1 / temperature)
    logits_21 = _similarities(z2, all1, 1 / temperature)
    loss = (F.cross_entropy(torch.cat([logits_12, logits_11], 1), labels)
            + F.cross_entropy(torch.cat([logits_21, logits_22], 1), labels)) / 2
    return {"loss": loss, "ssl": loss}
