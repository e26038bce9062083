"""The gradient cache: a contrastive step over K micro-batches that equals one pass over the batch.

Plain gradient accumulation changes a contrastive loss: each micro-batch sees only its own
negatives. The gradient cache (Gao, Zhang, Han, Callan 2021, "Scaling Deep Contrastive Learning
Batch Size under Memory Limited Setup") keeps the full-batch loss and costs one extra forward:

1. embed every micro-batch without gradient and cache the embeddings (small: [B, D]);
2. compute the full-batch loss on the cached embeddings and back-propagate it down to them (and
   to whatever the loss owns: the logit scale, SLIP's head);
3. re-run each micro-batch with gradient and back-propagate its slice of the cached embeddings'
   gradient into the towers (by the chain rule, d loss / d theta = sum_i (d loss / d e_i) . d e_i / d theta).

Each micro-batch's RNG state is replayed in step 3, so random masks (FLIP) and drop-path are the
same in both passes. Only activations of one micro-batch are alive at a time.

The caller supplies the model-specific parts (how to embed, the loss, the backward with its
scaler) and, under data parallelism, a context that defers gradient reduction (DDP's no_sync); it
then reduces the gradients itself, once, after this returns.
"""
import contextlib

import torch

from tinyclip import checkpoint as ckpt_io


def split_batch(batch: dict, k: int, i: int) -> dict:
    """Micro-batch i of k from a batch dict {"image", "text"[, "views": (v1, v2)]}."""
    n = batch["image"].shape[0] // k
    part = lambda t: t[i * n:(i + 1) * n]
    out = {"image": part(batch["image"]), "text": part(batch["text"])}
    if "views" in batch:
        out["views"] = tuple(part(v) for v in batch["views"])
    return out


def gradient_cache_step(encode, loss_of, backward, batch: dict, k: int, logit_scale: torch.Tensor,
                        autocast=contextlib.nullcontext, no_sync=contextlib.nullcontext) -> dict:
    """One step over `batch` as k micro-batches; returns the loss terms of the whole batch.

    encode(micro_batch) -> {"image": [n, D], "text": [n, D], optional "views": [2n, D] laid out
        [all first views; all second views]}: unnormalised embeddings, with graph.
    loss_of(features) -> {"loss", ...}: the loss of a whole batch's features (plus "logit_scale").
    backward(terms): back-propagates terms["loss"] (scaling it, checking it is finite).
    """
    micro = [split_batch(batch, k, i) for i in range(k)]

    # 1. every micro-batch's embeddings, no graph kept; remember the RNG each one started from
    rng_states, cached = [], []
    with torch.no_grad():
        for mb in micro:
            rng_states.append(ckpt_io.rng_state())
            with autocast():
                cached.append(encode(mb))
    names = [name for name in ("image", "text", "views") if name in cached[0]]
    feats = {name: torch.cat([c[name] for c in cached]) for name in names if name != "views"}
    if "views" in names:  # keep the [all first views; all second views] layout of a single pass
        feats["views"] = torch.cat([c["views"].chunk(2)[0] for c in cached] +
                                   [c["views"].chunk(2)[1] for c in cached])
    feats = {name: f.float().requires_grad_() for name, f in feats.items()}
    feats["logit_scale"] = logit_scale

    # 2. the full-batch loss, differentiated down to the cached embeddings
    with autocast():
        terms = loss_of(feats)
    backward(terms)

    # 3. each micro-batch again, with gradient, fed its slice of the embedding gradient
    rng_after = ckpt_io.rng_state()
    for i, mb in enumerate(micro):
        ckpt_io.set_rng_state(rng_states[i])
        with no_sync(), autocast():
            out = encode(mb)
        surrogate = sum((out[name].float() * _rows(feats[name].grad, name, i, k, mb)).sum() for name in names)
        surrogate.backward()
    ckpt_io.set_rng_state(rng_after)
    return terms


def _rows(grad, name, i, k, mb):
    """Rows of a cached embedding's gradient that belong to micro-batch i."""
    if name != "views":
        n = grad.shape[0] // k
        return grad[i * n:(i + 1) * n]
    # the cache holds [all first views; all second views]; a micro-batch embeds [its v1; its v2]
    n, half = mb["views"][0].shape[0], grad.shape[0] // 2
    return torch.cat([grad[i * n:(i + 1) * n], grad[half + i * n:half + (i + 1) * n]])
