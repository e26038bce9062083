"""MLP-Mixer image tower for CLIP: "MLP-Mixer: An all-MLP Architecture for Vision" (Tolstikhin,
Houlsby, Kolesnikov, Beyer, Zhai, Unterthiner, Yung, Steiner, Keysers, Uszkoreit, Lucic,
Dosovitskiy; NeurIPS 2021, arXiv 2105.01601), one of the towers in the CNN-vs-transformer study of
"Scaling (Down) CLIP" (Li, Xie, Cubuk 2024), which finds Mixer-B/32 good at linear probing under
100M samples and worst at retrieval.

Layout (Mixer-B/32: patch 32, 12 blocks, width 768, token MLP 384, channel MLP 3072):

    stem: 32x32 conv stride 32                                  # (S/32)^2 tokens of width C
    block: x + token_mlp(LN(x)^T)^T     # mixes across tokens: Linear N -> 384 -> N, per channel
           x + channel_mlp(LN(x))       # mixes across channels: Linear C -> 3072 -> C, per token
           (each MLP: Linear -> GELU -> Linear)
    head: LayerNorm -> average over tokens -> x @ proj          # proj: [width, output_dim]

Parameter names follow timm's Mixer (blocks.N.norm1, mlp_tokens.fc1, ...), `proj` in place of its
classifier `head`. At 224px Mixer-B/32 has 59.52M parameters without the head (the published 60M
is 60.29M with the 768x1000 + 1000 classifier) and 3.24 GMACs.

A fixed token count: the token-mixing MLP's weights have one row/column per token, so a tower
built at any size divisible by the patch (a fresh 256px tower has 64 tokens) takes only images of
that size, and loading a checkpoint trained at another size is a ValueError naming the size to
build with (not a silent resize: there is no meaningful way to interpolate token-mixing weights).
"""
import math

import torch
import torch.nn as nn

from tinyclip.transformer import ImageTower, Mlp, run_blocks

# --------------------------------------------------------------------------------------------
# blocks


class MixerBlock(nn.Module):
    def __init__(self, num_tokens: int, width: int, token_mlp_dim: int, channel_mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.mlp_tokens = Mlp(num_tokens, token_mlp_dim)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp_channels = Mlp(width, channel_mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B, N, C
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # mix over N
        return x + self.mlp_channels(self.norm2(x))  # mix over C


# --------------------------------------------------------------------------------------------
# the tower


class MlpMixer(ImageTower):
    """MLP-Mixer image tower; its feature (project=False) is the normalised, pooled one."""

    def __init__(self, *, image_size: int, output_dim: int, patch_size: int, width: int, layers: int,
                 token_mlp_dim: int, channel_mlp_dim: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"mixer needs image_size divisible by its patch {patch_size}; got {image_size}")
        self.image_size, self.patch_size, self.width = image_size, patch_size, width
        self.num_tokens = (image_size // patch_size) ** 2
        self.stem = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(
            MixerBlock(self.num_tokens, width, token_mlp_dim, channel_mlp_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.proj = nn.Parameter(torch.empty(width, output_dim))
        # Xavier-uniform linear weights, zero biases (as timm's Mixer); the stem keeps PyTorch's init
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.proj, std=width ** -0.5)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint from another image size would otherwise fail with a generic size-mismatch
        key = prefix + "blocks.0.mlp_tokens.fc1.weight"
        if key in state_dict and state_dict[key].shape[-1] != self.num_tokens:
            size = math.isqrt(state_dict[key].shape[-1]) * self.patch_size
            raise ValueError(f"mixer has a fixed token count: the checkpoint was trained at "
                             f"image_size {size}, this model was built for {self.image_size}; "
                             f"build it with image_size={size}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0, project: bool = True) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # B, N, C
        x = run_blocks(self.blocks, x, self.grad_checkpointing)  # B, N, C
        x = self.norm(x).mean(dim=1)  # B, width
        return x @ self.proj if project else x  # B, output_dim (or B, width)
