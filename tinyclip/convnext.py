"""ConvNeXt image tower for CLIP: "A ConvNet for the 2020s" (Liu, Mao, Wu, Feichtenhofer, Darrell,
Xie; CVPR 2022, arXiv 2201.03545).

One of the towers in the CNN-vs-transformer study of "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024),
where ConvNeXt-T is compared with ViT-B/32, ResNet-50, Swin-T and Mixer-B/32 under one text tower.

Layout (ConvNeXt-T: depths 3-3-9-3, dims 96-192-384-768):

    stem: 4x4 conv stride 4 -> LayerNorm                      # "patchify" stem
    4 stages of blocks; between stages LayerNorm -> 2x2 conv stride 2 (halves H, W; doubles C)
    block: 7x7 depthwise conv -> LayerNorm -> Linear C->4C -> GELU -> Linear 4C->C
           -> layer scale (init 1e-6) -> stochastic depth -> + residual
    head:  global average pool -> LayerNorm -> x @ proj            # proj: [width, output_dim]

The CLIP projection is a bias-free parameter `proj` [width, output_dim], as in CLIP's ViT, in place
of the ImageNet classifier `head` (a Linear with bias). Parameter names otherwise follow the official
ConvNeXt code (downsample_layers, stages, dwconv, pwconv1, pwconv2, gamma, norm).
At 224px ConvNeXt-T has 27.82M parameters without the head (the published 28.6M includes the
768x1000 + 1000 classifier) and 4.5 GMACs.

The tower is fully convolutional: image_size (a multiple of 32) is recorded for the config, and
forward also accepts other sizes, as any CNN does (the global pool removes the grid).

This file also defines stochastic depth (`drop_path`, `DropPath`; Huang et al. 2016), which
swin.py reuses.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


# --------------------------------------------------------------------------------------------
# stochastic depth


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Drop the whole residual branch for a random subset of samples ("stochastic depth",
    Huang et al. 2016). Kept samples are scaled by 1/keep so the expectation is unchanged."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    # one Bernoulli draw per sample, broadcast over every other dimension
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


def linear_drop_path_rates(drop_path_rate: float, depths) -> list[list[float]]:
    """Per-block drop probabilities rising linearly from 0 to drop_path_rate over all blocks
    (the schedule of ConvNeXt and Swin), grouped by stage."""
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    grouped, start = [], 0
    for depth in depths:
        grouped.append(rates[start:start + depth])
        start += depth
    return grouped


# --------------------------------------------------------------------------------------------
# building blocks


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of a channels-first [B, C, H, W] tensor."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)  # B, H, W, C
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # B, C, H, W


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, drop_prob: float = 0.0, layer_scale_init: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)  # a 1x1 conv, written as Linear on channels-last
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        # layer scale: a per-channel gain that starts tiny, so each block starts near identity
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path = DropPath(drop_prob)

    def forward(self, x):  # B, C, H, W
        y = self.dwconv(x).permute(0, 2, 3, 1)  # B, H, W, C
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)  # B, C, H, W
        return x + self.drop_path(y)


# --------------------------------------------------------------------------------------------
# the tower


class ConvNeXt(nn.Module):
    """ConvNeXt image tower: images [B, 3, S, S] -> CLIP features [B, output_dim]."""

    supports_masking = False

    def __init__(self, *, image_size: int, output_dim: int, depths=(3, 3, 9, 3),
                 dims=(96, 192, 384, 768), drop_path_rate: float = 0.1,
                 layer_scale_init: float = 1e-6):
        super().__init__()
        depths, dims = tuple(int(d) for d in depths), tuple(int(d) for d in dims)
        if len(depths) != len(dims):
            raise ValueError(f"convnext needs one dim per stage; got depths {depths}, dims {dims}")
        # the stem divides by 4 and each later stage by 2 again: 224 -> 56, 28, 14, 7
        stride = 4 * 2 ** (len(dims) - 1)
        if image_size % stride:
            raise ValueError(f"convnext needs image_size divisible by {stride} "
                             f"(stem 4 x {len(dims) - 1} downsamplings of 2); got {image_size}")
        self.image_size = image_size
        self.width = dims[-1]
        self.output_dim = output_dim
        self.grad_checkpointing = False

        # stem (downsample_layers[0]) and the three LN + 2x2-conv downsamplings between stages
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))])
        for i in range(1, len(dims)):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i - 1], eps=1e-6),
                nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2)))
        rates = linear_drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dim, p, layer_scale_init) for p in stage_rates])
            for dim, stage_rates in zip(dims, rates))
        self.norm = nn.LayerNorm(self.width, eps=1e-6)
        self.proj = nn.Parameter(torch.empty(self.width, output_dim))
        self.init_weights()

    def init_weights(self):
        # as in the official code: truncated normal (std 0.02) for conv/linear weights, zero biases
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.proj, std=self.width ** -0.5)

    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0) -> torch.Tensor:
        if mask_ratio > 0:
            raise ValueError("FLIP masking (mask_ratio > 0) needs a ViT image tower; "
                             "convnext is a CNN")
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = downsample(x)  # B, C_i, H_i, W_i
            for block in stage:
                if self.grad_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        x = self.norm(x.mean(dim=(2, 3)))  # B, width
        return x @ self.proj  # B, output_dim
