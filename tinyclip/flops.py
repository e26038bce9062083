"""Compute per training sample, the x-axis of "Scaling (Down) CLIP" (Li et al. 2024:
total compute = GFLOPs per sample x samples seen).

FLOPs are measured, not estimated: the model is rebuilt from its config on the meta device (tensors
with shapes but no data; no weight is copied) and runs once under torch.utils.flop_counter's
FlopCounterMode, so even ViT-L costs nothing and needs no memory (and on meta, attention is counted:
on CPU its fused kernels are invisible to FlopCounterMode). FlopCounterMode counts matrix multiplies,
convolutions and attention, with one multiply-add = 2 FLOPs; normalisations, activations, pooling and
the softmax are not counted (they are a few percent at most). Published model sizes ("4.4 GFLOPs" for
ViT-B/32) usually count multiply-adds; gmacs_per_sample gives those.

Strategies (the names train.py uses):
  clip, clip-aug  one image and one text per sample (augmentation costs no model compute);
  flip            the image tower sees round((1 - mask_ratio) * N) of its N patch tokens
                  (Li et al. 2023);
  slip            the image tower also encodes two augmented views for the SimCLR loss
                  (Mu et al. 2021), each then through SLIP's projection head (part of the model).
A locked image tower (LiT, CLIP.lock_image) counts its forward only: it has no backward.
The contrastive loss itself (a B x B similarity matrix) grows with the batch and is left out.
"""
import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from tinyclip.model import CLIP, build_model

STRATEGIES = ("clip", "clip-aug", "flip", "slip")
_COUNTED = {}  # gflops_per_sample's results by their key


def count_flops(fn, train: bool) -> int:
    """FLOPs of fn() (its forward), plus the backward of its output's sum when train."""
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
        out = fn()
        if train:
            out.float().sum().backward()
    return counter.get_total_flops()


def gflops_per_sample(model: CLIP, strategy: str = "clip", mask_ratio: float = 0.5, train: bool = True,
                      batch: int = 2, image_size: int = None, context_length: int = None) -> dict:
    """GFLOPs per sample of `model` (a CLIP) under a training strategy (see above), as {"image",
    "text", "total"}. train=True counts forward + backward (about 3x the forward), train=False the
    forward only. mask_ratio applies to "flip" only; "slip" needs a model with SLIP's head. image_size,
    context_length: the inputs' sizes (default: the model's; a stage of reduced tokens feeds fewer)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    ratio = mask_ratio if strategy == "flip" else 0.0  # encode_image refuses one outside [0, 1)
    config = dataclasses.replace(model.config, image_size=image_size or model.config.image_size)
    # a pure function of these: counted once per process (a reproduction runs hundreds of trainings in a few)
    key = (repr(config), strategy, ratio, train, batch, context_length, model.image_locked)
    if key in _COUNTED:
        return dict(_COUNTED[key])
    with torch.device("meta"):
        meta = build_model(config).train(train)
    S, L = meta.visual.image_size, context_length or meta.context_length
    image_train = train and not model.image_locked
    images = torch.randn(batch, 3, S, S, device="meta")
    ids = torch.zeros(batch, L, dtype=torch.long, device="meta")

    image = count_flops(lambda: meta.encode_image(images, mask_ratio=ratio), image_train) / batch
    text = count_flops(lambda: meta.encode_text(ids), train) / batch
    if strategy == "slip":
        if meta.ssl_head is None:
            raise ValueError("strategy 'slip' needs a model with SLIP's head (ssl_mlp_dim > 0)")
        view = lambda: meta.ssl_head(meta.encode_image(images, project=False))  # one view: tower + head
        image += 2 * count_flops(view, image_train) / batch
    _COUNTED[key] = {"image": image / 1e9, "text": text / 1e9, "total": (image + text) / 1e9}
    return dict(_COUNTED[key])


def gmacs_per_sample(model: CLIP, **kwargs) -> dict:
    """gflops_per_sample / 2: billions of multiply-adds, the unit most papers quote."""
    return {k: v / 2 for k, v in gflops_per_sample(model, **kwargs).items()}
