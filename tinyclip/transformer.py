"""The layers CLIP's towers share, the transformer they are built of, and CLIP's text tower.

A pre-LayerNorm transformer (Vaswani et al. 2017, "Attention Is All You Need"; pre-LN as in GPT-2)
laid out exactly as in OpenAI's CLIP (Radford et al. 2021, "Learning Transferable Visual Models From
Natural Language Supervision"), so that OpenAI's weights load without a renaming table:

    resblocks.N.ln_1 -> attn (in_proj_weight, in_proj_bias, out_proj) -> residual
    resblocks.N.ln_2 -> mlp (c_fc -> GELU -> c_proj)                  -> residual

Attention runs through F.scaled_dot_product_attention, which picks a fused kernel (flash /
memory-efficient) where one exists. Activations are batch-first (B, N, D); OpenAI's code is
sequence-first, which changes no weight.

Every image tower starts from ImageTower (the contract CLIP relies on) and runs its blocks through
`run_blocks` (gradient checkpointing); stochastic depth and timm's two-layer MLP are here too.
"""

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# ---------------------------------------------------------------------------------------------
# small layers, stochastic depth, the block loop and what an image tower provides


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, so a model held in fp16/bf16 normalises stably."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI trained CLIP with. Their weights need it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Sequential):
    """Linear -> GELU -> Linear with timm's names (fc1, fc2): Swin's MLP and both of Mixer's."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(OrderedDict(fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim)))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"): in training,
    drop the whole residual branch for a random subset of samples; kept samples are scaled by
    1/keep so the expectation is unchanged."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        # one Bernoulli draw per sample, broadcast over every other dimension
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def linear_drop_path_rates(drop_path_rate: float, depths) -> list[list[float]]:
    """Per-block drop probabilities rising linearly from 0 to drop_path_rate over all blocks
    (the schedule of ConvNeXt and Swin), grouped by stage."""
    total = sum(depths)
    rates = iter([drop_path_rate * i / max(total - 1, 1) for i in range(total)])
    return [[next(rates) for _ in range(depth)] for depth in depths]


def run_blocks(blocks, x: torch.Tensor, grad_checkpointing: bool, *args) -> torch.Tensor:
    """x through each block in turn, `block(x, *args)`. With gradient checkpointing (and gradients
    on) each block's activations are recomputed in the backward pass instead of stored, trading
    ~1/3 more compute for activation memory that no longer grows with depth."""
    for block in blocks:
        if grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, *args, use_reentrant=False)
        else:
            x = block(x, *args)
    return x


class ImageTower(nn.Module):
    """What CLIP asks of an image tower: `image_size`, `width` and forward(images [B, 3, S, S],
    mask_ratio, project) -> [B, E], or with project=False the feature before the projection
    [B, width] (what SLIP's head reads). The projection is a bias-free `proj` [width, E] as in
    CLIP's ViT (ConvNeXt, Swin and Mixer have it in place of their ImageNet classifier `head`),
    or the ResNet attention pool's c_proj."""

    supports_masking = False  # only a ViT has tokens to drop (CLIP.encode_image refuses mask_ratio > 0)
    grad_checkpointing = False  # what the tower passes to run_blocks

    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable


# ---------------------------------------------------------------------------------------------
# attention and the residual block


class MultiheadSelfAttention(nn.Module):
    """Self-attention with nn.MultiheadAttention's parameter layout (in_proj_weight holds q, k, v
    stacked as [3D, D]; out_proj is a Linear), computed with scaled_dot_product_attention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        # nn.MultiheadAttention's own initialisation (OpenAI's vision tower keeps it)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
        B, N, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # B, N, 3D
        q, k, v = qkv.view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # B, H, N, d each
        # is_causal: token i sees tokens 0..i, the same as OpenAI's additive -inf mask above the diagonal
        x = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)  # B, H, N, d
        return self.out_proj(x.transpose(1, 2).reshape(B, N, D))  # B, N, D


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); the MLP is 4x wide."""

    def __init__(self, width: int, heads: int, quick_gelu: bool = False):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width),
                                             gelu=QuickGELU() if quick_gelu else nn.GELU(),
                                             c_proj=nn.Linear(4 * width, width)))

    def forward(self, x: torch.Tensor, is_causal: bool = False) -> torch.Tensor:  # B, N, D
        x = x + self.attn(self.ln_1(x), is_causal=is_causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual blocks (`resblocks`), run by run_blocks (its owner says whether checkpointed)."""

    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool = False):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, quick_gelu) for _ in range(layers)])

    def forward(self, x: torch.Tensor, is_causal: bool = False, grad_checkpointing: bool = False):  # B, N, D
        return run_blocks(self.resblocks, x, grad_checkpointing, is_causal)


# ---------------------------------------------------------------------------------------------
# the text tower


class TextTransformer(nn.Module):
    """CLIP's text encoder: token + positional embeddings, a causal transformer, ln_final, and the
    feature at the end-of-text token projected by `text_projection` to the joint embedding space.

    Token ids are [B, L] with L <= context_length (shorter sequences use the first L positions,
    as OpenAI's code allows)."""

    grad_checkpointing = False  # what encode_text passes to run_blocks; CLIP.set_grad_checkpointing sets it

    def __init__(self, width: int, layers: int, heads: int, context_length: int, vocab_size: int,
                 output_dim: int, quick_gelu: bool = False):
        super().__init__()
        self.context_length, self.vocab_size = context_length, vocab_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, quick_gelu=quick_gelu)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        # OpenAI's initialisation (CLIP's initialize_parameters): small embeddings; attention and MLP
        # weights scaled by width, output projections also by depth (GPT-2 style), so the residual
        # stream's variance stays put as layers are added
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def encode_text(self, ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        # cheap checks with one-line errors; the value range is skipped on meta tensors and under
        # torch.compile (it reads the values back to the host)
        if ids.dim() != 2:
            raise ValueError(f"token ids must be [batch, length], got shape {tuple(ids.shape)}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"token ids must be an integer tensor, got {ids.dtype}")
        if ids.shape[1] > self.context_length:
            raise ValueError(f"token ids have length {ids.shape[1]} but the text tower's "
                             f"context_length is {self.context_length}")
        if ids.device.type != "meta" and ids.numel() and not torch.compiler.is_compiling():
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.vocab_size:
                raise ValueError(f"token id out of range [0, {self.vocab_size}): got min {low}, max {high}")
        B, L = ids.shape
        x = self.token_embedding(ids)  # B, L, D
        x = x + self.positional_embedding[:L].to(x.dtype)
        x = self.transformer(x, is_causal=True, grad_checkpointing=self.grad_checkpointing)  # B, L, D
        x = self.ln_final(x)
        # B, D: the end-of-text token, whose id (49407) is the largest in CLIP's vocabulary
        x = x[torch.arange(B, device=x.device), ids.argmax(dim=-1)]
        x = x @ self.text_projection  # B, E
        return F.normalize(x, dim=-1) if normalize else x
