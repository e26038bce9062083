"""CLIP's modified ResNet image tower (Radford et al. 2021, section 2.4).

A ResNet with bottleneck blocks (He et al. 2016, "Deep Residual Learning for Image Recognition")
and three changes made by CLIP:
  - a stem of three 3x3 convolutions with an average pool, instead of one 7x7 convolution and a
    max pool;
  - anti-aliased downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"):
    every stride-2 step is a 2x2 average pool followed by a stride-1 convolution, both in the
    residual branch (after conv2) and in the shortcut;
  - attention pooling: the final global average pool becomes one layer of multi-head attention
    whose query is the mean of the feature map (`attnpool`, with its own positional embedding).

The parameter names are OpenAI's (conv1..3/bn1..3 stem, layer1..4, attnpool.{q,k,v,c}_proj), so
their RN50/RN101 weights load unchanged. Total stride 32: image_size must be a multiple of 32.
"""

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyclip.transformer import ImageTower, run_blocks

# ---------------------------------------------------------------------------------------------
# blocks


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> (2x2 avg pool if strided) -> 1x1 expand (x4), plus a shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # OpenAI's init: bn3 starts at zero, so each block starts as its shortcut (Goyal et al. 2017)
        nn.init.zeros_(self.bn3.weight)
        self.downsample = nn.Identity()  # the shortcut is x itself, unless the shape changes
        if stride > 1 or inplanes != out_planes:  # OpenAI's names: "-1" the pool (no weights), "0" conv, "1" norm
            self.downsample = nn.Sequential(OrderedDict([("-1", nn.AvgPool2d(stride)),
                                                         ("0", nn.Conv2d(inplanes, out_planes, 1, bias=False)),
                                                         ("1", nn.BatchNorm2d(out_planes))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B, C_in, H, W
        out = F.relu(self.bn1(self.conv1(x)))  # B, P, H, W
        out = F.relu(self.bn2(self.conv2(out)))  # B, P, H, W
        out = self.avgpool(out)  # B, P, H/s, W/s
        out = self.bn3(self.conv3(out))  # B, 4P, H/s, W/s
        return F.relu(out + self.downsample(x))


class AttentionPool2d(nn.Module):
    """Pool a [B, C, H, W] feature map with one multi-head attention layer: the query is the mean
    feature, keys and values are the mean plus every position (all with positional embeddings)."""

    def __init__(self, spatial_size: int, width: int, heads: int, output_dim: int):
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(spatial_size ** 2 + 1, width) / width ** 0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, output_dim)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):  # OpenAI's init: N(0, 1/width)
            nn.init.normal_(proj.weight, std=width ** -0.5)

    def forward(self, x: torch.Tensor, project: bool = True) -> torch.Tensor:
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)  # B, HW, C
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # B, 1 + HW, C
        x = x + self.positional_embedding.to(x.dtype)
        h, d = self.heads, C // self.heads
        q = self.q_proj(x[:, :1]).view(B, 1, h, d).transpose(1, 2)  # B, h, 1, d
        k = self.k_proj(x).view(B, -1, h, d).transpose(1, 2)  # B, h, 1 + HW, d
        v = self.v_proj(x).view(B, -1, h, d).transpose(1, 2)  # B, h, 1 + HW, d
        x = F.scaled_dot_product_attention(q, k, v)  # B, h, 1, d
        x = x.transpose(1, 2).reshape(B, C)  # B, C
        return self.c_proj(x) if project else x  # B, E (or B, C: the feature before the projection)


# ---------------------------------------------------------------------------------------------
# the tower


class ModifiedResNet(ImageTower):
    """CLIP's ResNet image tower; its feature (project=False) is the attention pool's, before c_proj.

    layers: bottleneck blocks per stage, e.g. (3, 4, 6, 3) for RN50. width: the stem's output
    channels (64 for RN50); stage i has width * 2**i planes, and the attention pool sees
    width * 32 channels (`self.width`) with OpenAI's width * 32 // 64 heads.

    Gradient checkpointing recomputes each stage in the backward pass; BatchNorm then updates its
    running statistics twice per training step (a known, harmless side effect)."""

    def __init__(self, layers, width: int, image_size: int, output_dim: int):
        super().__init__()
        if image_size % 32:
            raise ValueError(f"ResNet image_size must be a multiple of 32 (total stride), got {image_size}")
        if len(layers) != 4:
            raise ValueError(f"ResNet needs 4 stage depths, got layers={tuple(layers)}")
        self.image_size = image_size
        self.width = width * 32  # feature width entering the attention pool
        # the three-convolution stem, then a 2x2 average pool: total stride 4
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        # four stages; the last three halve the resolution: total stride 32
        inplanes, stages = width, []
        for i, blocks in enumerate(layers):
            planes, stride = width * 2 ** i, 1 if i == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(image_size // 32, self.width, self.width // 64, output_dim)

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0, project: bool = True) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # B, w/2, S/2, S/2: the stem
        x = F.relu(self.bn2(self.conv2(x)))  # B, w/2, S/2, S/2
        x = F.relu(self.bn3(self.conv3(x)))  # B, w, S/2, S/2
        x = self.avgpool(x)  # B, w, S/4, S/4
        stages = (self.layer1, self.layer2, self.layer3, self.layer4)
        x = run_blocks(stages, x, self.grad_checkpointing)  # B, 32w, S/32, S/32 (one checkpoint a stage)
        return self.attnpool(x, project)  # B, E (or B, width with project=False)
