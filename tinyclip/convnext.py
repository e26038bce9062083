"""ConvNeXt image tower for CLIP: "A ConvNet for the 2020s" (Liu, Mao, Wu, Feichtenhofer, Darrell,
Xie; CVPR 2022, arXiv 2201.03545), one of the towers in the CNN-vs-transformer study of "Scaling
(Down) CLIP" (Li, Xie, Cubuk 2024), where ConvNeXt-T is compared with ViT-B/32, ResNet-50, Swin-T
and Mixer-B/32 under one text tower.

Layout (ConvNeXt-T: depths 3-3-9-3, dims 96-192-384-768):

    stem: 4x4 conv stride 4 -> LayerNorm                      # "patchify" stem
    4 stages of blocks; between stages LayerNorm -> 2x2 conv stride 2 (halves H, W; doubles C)
    block: 7x7 depthwise conv -> LayerNorm -> Linear C->4C -> GELU -> Linear 4C->C
           -> layer scale (init 1e-6) -> stochastic depth -> + residual
    head:  global average pool -> LayerNorm -> x @ proj            # proj: [width, output_dim]

Parameter names follow the official ConvNeXt code (downsample_layers, stages, dwconv, pwconv1,
pwconv2, gamma, norm), `proj` in place of its classifier `head`. At 224px ConvNeXt-T has 27.82M
parameters without the head (the published 28.6M includes the 768x1000 + 1000 classifier) and
4.5 GMACs.
"""
import torch
import torch.nn as nn

from tinyclip.transformer import DropPath, ImageTower, linear_drop_path_rates, run_blocks

# --------------------------------------------------------------------------------------------
# blocks


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of a channels-first [B, C, H, W] tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B, C, H, W
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # normalised over C


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, drop_prob: float):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)  # a 1x1 conv, written as Linear on channels-last
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        # layer scale: a per-channel gain that starts tiny, so each block starts near identity
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))
        self.drop_path = DropPath(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B, C, H, W
        y = self.dwconv(x).permute(0, 2, 3, 1)  # B, H, W, C
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)  # B, C, H, W
        return x + self.drop_path(y)


# --------------------------------------------------------------------------------------------
# the tower


class ConvNeXt(ImageTower):
    """ConvNeXt image tower; its feature (project=False) is the pooled, normalised one."""

    def __init__(self, *, image_size: int, output_dim: int, depths, dims, drop_path_rate: float):
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"convnext needs one dim per stage; got depths {depths}, dims {dims}")
        # the stem divides by 4 and each later stage by 2 again: 224 -> 56, 28, 14, 7
        stride = 4 * 2 ** (len(dims) - 1)
        if image_size % stride:
            raise ValueError(f"convnext needs image_size divisible by {stride} "
                             f"(stem 4 x {len(dims) - 1} downsamplings of 2); got {image_size}")
        self.image_size, self.width = image_size, dims[-1]
        # the stem (downsample_layers[0]), then an LN + 2x2-conv downsampling before each later stage
        stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        self.downsample_layers = nn.ModuleList([stem] + [
            nn.Sequential(LayerNorm2d(c_in, eps=1e-6), nn.Conv2d(c_in, c_out, kernel_size=2, stride=2))
            for c_in, c_out in zip(dims, dims[1:])])
        rates = linear_drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dim, p) for p in stage_rates])
            for dim, stage_rates in zip(dims, rates))
        self.norm = nn.LayerNorm(self.width, eps=1e-6)
        self.proj = nn.Parameter(torch.empty(self.width, output_dim))
        # as in the official code: truncated normal (std 0.02) for conv/linear weights, zero biases
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.proj, std=self.width ** -0.5)

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0, project: bool = True) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = downsample(x)  # B, C_i, H_i, W_i
            x = run_blocks(stage, x, self.grad_checkpointing)  # B, C_i, H_i, W_i
        x = self.norm(x.mean(dim=(2, 3)))  # B, width
        return x @ self.proj if project else x  # B, output_dim (or B, width)
