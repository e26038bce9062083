"""The gradient cache: a contrastive step over K micro-batches that equals one pass over the batch.

Plain gradient accumulation changes a contrastive loss: each micro-batch sees only its own
negatives. The gradient cache (Gao, Zhang, Han, Callan 2021, "Scaling Deep Contrastive Learning
Batch Size under Memory Limited Setup") keeps the full-batch loss and costs one extra forward:

1. embed every micro-batch without gradient and cache the embeddings (small: [B, D]);
2. compute the full-batch loss on the cached embeddings and back-propagate it down to them (and
   to whatever the loss itself owns: the logit scale, SigLIP's bias, SLIP's head);
3. re-run each micro-batch with gradient and back-propagate its slice of the cached embeddings'
   gradient into the towers (by the chain rule, d loss / d theta = sum_i (d loss / d e_i) . d e_i / d theta).

Each micro-batch's RNG state is replayed in step 3, so random masks (FLIP) and drop-path are the
same in both passes. Only activations of one micro-batch are alive at a time. Step 1 leaves no
trace in the model: BatchNorm running statistics are put back as they were, so after the step
they have counted each micro-batch once, as plain accumulation would (the normalisation itself
uses each micro-batch's statistics, not the whole batch's: the one thing that differs from one
pass, for towers with BatchNorm).

Every tensor of the batch splits into K contiguous chunks (SLIP's views are interleaved, rows 2i
and 2i+1 of sample i, so they split with their images). The caller defers DDP's gradient
reduction (no_sync) and reduces the gradients itself, once, after this returns.
"""
import contextlib

import torch

from tinyclip import checkpoint as ckpt_io
from tinyclip.model import autocast


def gradient_cache_step(model, raw_model, batch: dict, k: int, mask_ratio: float, loss_options: dict,
                        precision: str, scaler, no_sync=contextlib.nullcontext) -> dict:
    """One step's forward and backward over `batch` as k micro-batches; returns the whole batch's loss terms.

    model: what to call (the DDP wrapper under data parallelism); raw_model: the CLIP underneath,
    whose loss(**loss_options) runs on the cached embeddings. The gradients are left in the parameters (scaled by
    `scaler`), exactly those of one pass over the batch (to float rounding).
    """
    device = batch["image"].device
    micro = [{name: t.chunk(k)[i] for name, t in batch.items()} for i in range(k)]

    def embed(mb):  # forward's outputs minus the logit scale: image [n, E], text [n, E] (, views [2n, W])
        outputs = model(mb["image"], mb["text"], mask_ratio, mb.get("views"))
        return [out for i, out in enumerate(outputs) if i != 2]

    # 1. every micro-batch's embeddings, no graph kept; remember the RNG each one started from
    rng_states, cached, buffers = [], [], [b.clone() for b in raw_model.buffers()]
    with torch.no_grad(), autocast(device, precision):
        for mb in micro:
            rng_states.append(ckpt_io.rng_state())
            cached.append(embed(mb))
        for buffer, value in zip(raw_model.buffers(), buffers):  # BatchNorm's running statistics as they were
            buffer.copy_(value)
    full = [torch.cat(parts).float().requires_grad_() for parts in zip(*cached)]  # the batch's embeddings

    # 2. the full-batch loss, differentiated down to the cached embeddings (and the logit scale and bias, SLIP's head)
    with autocast(device, precision):
        terms = raw_model.loss(full[0], full[1], raw_model.logit_scale.exp(), *full[2:], **loss_options)
    scaler.scale(terms["loss"]).backward()

    # 3. each micro-batch again, with gradient, fed its slice of the embeddings' gradient
    rng_after = ckpt_io.rng_state()
    for i, mb in enumerate(micro):
        ckpt_io.set_rng_state(rng_states[i])
        with no_sync(), autocast(device, precision):
            outputs = embed(mb)
        surrogate = sum((out.float() * cache.grad.chunk(k)[i]).sum() for out, cache in zip(outputs, full))
        surrogate.backward()
    ckpt_io.set_rng_state(rng_after)
    return terms
