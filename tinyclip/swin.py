"""Swin Transformer image tower for CLIP: "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows" (Liu, Lin, Cao, Hu, Wei, Zhang, Lin, Guo; ICCV 2021, arXiv 2103.14030), one of the
towers in the CNN-vs-transformer study of "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024).

Layout (Swin-T: patch 4, window 7, C = 96, depths 2-2-6-2, heads 3-6-12-24, MLP ratio 4):

    patch_embed: 4x4 conv stride 4 -> LayerNorm                 # tokens on an (S/4) x (S/4) grid
    4 stages; stage i has C * 2**i channels; after stages 0-2, patch merging:
        concat each 2x2 neighbourhood (4C) -> LayerNorm -> Linear 4C -> 2C (no bias)
    block: x + attn(LN(x)),  x + MLP(LN(x))   with attention inside non-overlapping W x W windows;
           odd blocks first roll the grid by W // 2 ("shifted windows") so information crosses
           window borders; a mask stops tokens that were rolled around the border from attending
           to tokens they are not next to in the image
    attention logits get a learned relative position bias: a (2W-1)^2 x heads table, indexed by
           the (dy, dx) offset between the two tokens of the window
    head: LayerNorm -> average over tokens -> x @ proj              # proj: [width, output_dim]

Parameter names follow the official Swin code, `proj` in place of its classifier `head`. At 224px
Swin-T has 27.52M parameters without the head (the published 28.3M includes the 768x1000 + 1000
classifier) and 4.5 GMACs.

Every stage's grid must be a whole number of windows, so image_size must be divisible by
patch x window x 8 (224 for Swin-T). A stage whose grid is exactly one window does not shift
(nothing to shift across), as in the official code. The attention masks are built for the
construction-time image size, so a tower only accepts that size.
"""
import torch
import torch.nn as nn

from tinyclip.transformer import DropPath, ImageTower, Mlp, linear_drop_path_rates, run_blocks

# --------------------------------------------------------------------------------------------
# windows, relative positions, the shifted-window mask


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * num_windows, window * window, C], windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)


def window_reverse(windows: torch.Tensor, window: int, size: int) -> torch.Tensor:
    """Inverse of window_partition: [B * num_windows, window * window, C] -> [B, size, size, C]."""
    C = windows.shape[-1]
    x = windows.view(-1, size // window, size // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, size, size, C)


def relative_position_index(window: int) -> torch.Tensor:
    """[window^2, window^2] index into the (2*window-1)^2-row bias table: the entry for query i
    and key j encodes (dy, dx) = pos_i - pos_j, each shifted into [0, 2*window-2]."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # 2, N
    offset = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2, N, N
    return offset[0] * (2 * window - 1) + offset[1]  # N, N


def shifted_window_attention_mask(size: int, window: int, shift: int) -> torch.Tensor:
    """Which tokens may attend to which after the size x size grid is rolled by (-shift, -shift).

    Returns a bool tensor [num_windows, window^2, window^2], True where attention is allowed.
    Rolling moves the first `shift` rows/columns to the bottom/right, so the last window row and
    column mix tokens from opposite image borders. Label every position of the rolled grid by
    the region it came from (per axis: the untouched part [0, size - window), the part of the last
    window that did not wrap [size - window, size - shift), the wrapped part [size - shift, size));
    two tokens of one window may attend only if they carry the same label.
    """
    region = torch.zeros(size, dtype=torch.long)
    region[size - window:] = 1
    region[size - shift:] = 2
    labels = region[:, None] * 3 + region[None, :]  # H, W
    labels = window_partition(labels[None, :, :, None], window).squeeze(-1)  # num_windows, N
    return labels[:, :, None] == labels[:, None, :]  # num_windows, N, N


# --------------------------------------------------------------------------------------------
# blocks


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a relative position bias."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"swin stage width {dim} is not divisible by its {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        # derived from the window size alone, so not part of the state_dict
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        Bw, N, C = x.shape  # Bw = B * num_windows, N = window^2
        q, k, v = self.qkv(x).view(Bw, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # Bw, heads, N, N
        bias = self.relative_position_bias_table[self.relative_position_index]  # N, N, heads
        attn = attn + bias.permute(2, 0, 1)  # + heads, N, N
        if allowed is not None:  # allowed: nW, N, N
            attn = attn.view(-1, allowed.shape[0], self.heads, N, N)  # B, nW, heads, N, N
            attn = attn.masked_fill(~allowed[None, :, None], float("-inf")).view(Bw, -1, N, N)
        x = attn.softmax(dim=-1) @ v  # Bw, heads, N, C / heads
        return self.proj(x.transpose(1, 2).reshape(Bw, N, C))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, drop_prob: float = 0.0):
        super().__init__()
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.drop_path = DropPath(drop_prob)
        mask = shifted_window_attention_mask(resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B, H*W, C
        B, L, C = x.shape
        y = self.norm1(x).view(B, self.resolution, self.resolution, C)  # B, H, W, C
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), self.attn_mask)  # B*nW, window^2, C
        y = window_reverse(y, self.window, self.resolution)  # B, H, W, C
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(B, L, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))  # B, H*W, C


class PatchMerging(nn.Module):
    """Halve the grid, double the width: each 2x2 neighbourhood (4C) -> LayerNorm -> Linear -> 2C."""

    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):  # B, H*W, C
        B, L, C = x.shape
        x = x.view(B, self.resolution, self.resolution, C)
        # the official order: (even row, even col), (odd, even), (even, odd), (odd, odd)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(B, L // 4, 4 * C)))  # B, H*W/4, 2C


class SwinStage(nn.Module):
    """`blocks` (every second one shifted), then `downsample` (patch merging; Identity in the last stage)."""

    def __init__(self, dim, resolution, heads, window, drop_probs, downsample):
        super().__init__()
        shift = window // 2 if resolution > window else 0  # a grid of one window has nothing to shift across
        self.blocks = nn.ModuleList(SwinBlock(dim, resolution, heads, window, shift if i % 2 else 0, p)
                                    for i, p in enumerate(drop_probs))
        self.downsample = PatchMerging(dim, resolution) if downsample else nn.Identity()


# --------------------------------------------------------------------------------------------
# the tower


class SwinTransformer(ImageTower):
    """Swin image tower; its feature (project=False) is the normalised, pooled one."""

    def __init__(self, *, image_size: int, output_dim: int, patch_size: int, window_size: int,
                 base_width: int, depths, heads, drop_path_rate: float):
        super().__init__()
        if len(depths) != len(heads):
            raise ValueError(f"swin needs one head count per stage; got depths {depths}, heads {heads}")
        merges = 2 ** (len(depths) - 1)
        multiple = patch_size * window_size * merges
        if image_size % multiple:
            raise ValueError(f"swin needs image_size divisible by {multiple} (patch {patch_size} x "
                             f"window {window_size} x {merges}); got {image_size}")
        self.image_size, self.width = image_size, base_width * merges
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, base_width, kernel_size=patch_size, stride=patch_size)
        self.patch_embed.norm = nn.LayerNorm(base_width)
        rates = linear_drop_path_rates(drop_path_rate, depths)
        self.layers = nn.ModuleList(
            SwinStage(base_width * 2 ** i, image_size // patch_size // 2 ** i, heads[i], window_size,
                      rates[i], downsample=i < len(depths) - 1)
            for i in range(len(depths)))
        self.norm = nn.LayerNorm(self.width)
        self.proj = nn.Parameter(torch.empty(self.width, output_dim))
        # as in the official code: truncated normal (std 0.02) for linear weights and bias tables
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)
        nn.init.normal_(self.proj, std=self.width ** -0.5)

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0, project: bool = True) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # B, H*W, C
        x = self.patch_embed.norm(x)
        for stage in self.layers:
            x = run_blocks(stage.blocks, x, self.grad_checkpointing)  # B, H*W, C
            x = stage.downsample(x)  # B, H*W/4, 2C (the last stage: unchanged)
        x = self.norm(x).mean(dim=1)  # B, width
        return x @ self.proj if project else x  # B, output_dim (or B, width)
