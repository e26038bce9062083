"""CLIP's Vision Transformer image tower, with FLIP's token masking built in.

ViT (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"): cut the image into patches, embed
each with one strided convolution, prepend a class token, add positional embeddings and run a
transformer; the class token's output is the image feature. The layout is OpenAI CLIP's (Radford
et al. 2021): conv1 (no bias), class_embedding, positional_embedding, ln_pre, transformer, ln_post,
and `proj` to the joint embedding space.

FLIP (Li et al. 2023, "Scaling Language-Image Pre-training via Masking") drops a random
`mask_ratio` of the patch tokens before the transformer: the encoder sees fewer tokens, so each
image costs less and the batch can grow for the same compute. Masking follows MAE's
`random_masking` (He et al. 2022): per-sample uniform noise, argsort, keep the first len_keep.
Positional embeddings are added before masking, so a kept token remembers where it came from;
the class token is never dropped. Randomness comes from torch.rand on the input's device, so the
global RNG state (torch.manual_seed) controls it.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyclip.transformer import ImageTower, LayerNorm, Transformer

# ---------------------------------------------------------------------------------------------
# FLIP masking and positional-embedding resizing


def num_kept_tokens(num_tokens: int, mask_ratio: float) -> int:
    """How many of `num_tokens` patch tokens FLIP keeps: round((1 - r) * N), at least one."""
    return max(1, round((1.0 - mask_ratio) * num_tokens))


def random_masking(x: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """[B, N, D] patch tokens (positional embedding already added) -> [B, N_keep, D]: a random subset of
    num_kept_tokens(N, mask_ratio) tokens per sample."""
    B, N, D = x.shape
    len_keep = num_kept_tokens(N, mask_ratio)
    noise = torch.rand(B, N, device=x.device)  # B, N: one independent draw per sample and token
    ids_keep = noise.argsort(dim=1)[:, :len_keep]  # B, N_keep: the tokens with the smallest noise
    return x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, D))  # B, N_keep, D


def resize_positional_embedding(pos_embed: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Bicubic-resize a [1 + g*g, D] positional embedding to a grid_size x grid_size grid.

    Used when loading weights into a model built for another image size (ViT pos embeddings, and
    the ResNet attention pool's, which has the same layout). The leading token (the class token,
    or the pool's mean) is kept as it is."""
    first, grid = pos_embed[:1], pos_embed[1:]
    old_size = math.isqrt(grid.shape[0])
    if old_size * old_size != grid.shape[0]:
        raise ValueError(f"positional embedding of {grid.shape[0]} grid tokens is not a square grid")
    if old_size == grid_size:
        return pos_embed
    grid = grid.reshape(1, old_size, old_size, -1).permute(0, 3, 1, 2)  # 1, D, g, g
    grid = F.interpolate(grid.float(), size=(grid_size, grid_size), mode="bicubic",
                         align_corners=False, antialias=grid_size < old_size)  # 1, D, G, G
    grid = grid.permute(0, 2, 3, 1).reshape(grid_size * grid_size, -1).to(pos_embed.dtype)
    return torch.cat([first, grid], dim=0)  # 1 + G*G, D


# ---------------------------------------------------------------------------------------------
# the tower


class VisionTransformer(ImageTower):
    """CLIP's ViT image tower; its feature (project=False) is the class token's."""

    supports_masking = True

    def __init__(self, width: int, layers: int, heads: int, patch_size: int, image_size: int,
                 output_dim: int, quick_gelu: bool = False):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        self.image_size, self.width = image_size, width
        num_patches = (image_size // patch_size) ** 2
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5  # OpenAI's initialisation for the embeddings and the projection
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(num_patches + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, quick_gelu)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0, project: bool = True) -> torch.Tensor:
        B = x.shape[0]
        x = self.conv1(x)  # B, D, g, g
        x = x.flatten(2).transpose(1, 2)  # B, N, D (patches in row-major order)
        x = x + self.positional_embedding[1:].to(x.dtype)  # B, N, D
        if mask_ratio > 0:
            x = random_masking(x, mask_ratio)  # B, N_keep, D
        cls = (self.class_embedding + self.positional_embedding[0]).to(x.dtype)  # D
        x = torch.cat([cls.expand(B, 1, -1), x], dim=1)  # B, 1 + N_keep, D
        x = self.ln_pre(x)
        x = self.transformer(x, grad_checkpointing=self.grad_checkpointing)  # B, 1 + N_keep, D
        x = self.ln_post(x[:, 0])  # B, D: the class token
        return x @ self.proj if project else x  # B, E (or B, D: the feature SLIP's head reads)
