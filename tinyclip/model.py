"""CLIP: an image tower, a text tower and a learned temperature (Radford et al. 2021, "Learning
Transferable Visual Models From Natural Language Supervision").

Both towers map their input to the same `embed_dim`-wide space; training pulls matching image and
text features together (losses.py). A new image tower is one file, one VISION_TOWERS entry and one
preset row. SLIP's projection head is part of the model when the config asks for it; load_openai
reads OpenAI (TorchScript or state_dict) and open_clip checkpoints of these shapes.
"""

import copy
import dataclasses
import math
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.distributed as dist
import torch.nn.functional as F

from tinyclip.convnext import ConvNeXt
from tinyclip.losses import clip_loss, distributed, gather_with_grad, sigmoid_loss, simclr_loss
from tinyclip.mixer import MlpMixer
from tinyclip.resnet import ModifiedResNet
from tinyclip.swin import SwinTransformer
from tinyclip.transformer import TextTransformer
from tinyclip.vit import VisionTransformer, resize_positional_embedding

# ---------------------------------------------------------------------------------------------
# precision

# What --precision names (train.py, eval.py, scripts/bench.py): the autocast dtype, None for plain fp32.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device, precision: str):
    """The autocast context of a precision name; "fp32" runs without autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


# ---------------------------------------------------------------------------------------------
# registry and presets

VISION_TOWERS = {"vit": VisionTransformer, "resnet": ModifiedResNet,
                 "convnext": ConvNeXt, "swin": SwinTransformer, "mixer": MlpMixer}

TEXT_TOWERS = {  # text_arch -> width, layers, heads; parameters with a 512-wide projection
    "openai": dict(text_width=512, text_layers=12, text_heads=8),  # OpenAI's ViT-B and RN pairing, 63.4M
    "vit-b": dict(text_width=768, text_layers=12, text_heads=12),  # the paper's fixed text tower, 123.5M
    "small": dict(text_width=256, text_layers=4, text_heads=4),  # CPU-friendly, 16.0M (mostly the token table)
    "test": dict(text_width=32, text_layers=2, text_heads=2),  # 1.6M
}

# Each preset is a whole model: image tower, input size, joint embedding width and text tower
# (create_model(name, **overrides) changes any of these); parameters counted with that text tower.
# Most rows pair with OpenAI's text tower as OpenAI did, so their parameter counts reproduce OpenAI's;
# the paper fixes a ViT-B-sized one (Li et al. 2024): text_arch="vit-b".
OPENAI_224 = dict(image_size=224, embed_dim=512, text_arch="openai")
TINY_32 = dict(image_size=32, embed_dim=32, text_arch="test")
PRESETS = {
    # the paper's ViTs (Li et al. 2024) and OpenAI's; heads = width / 64
    "vit-ti-16": dict(vision=dict(kind="vit", width=192, layers=12, heads=3, patch_size=16), **OPENAI_224),  # 69.1M
    "vit-s-16": dict(vision=dict(kind="vit", width=384, layers=12, heads=6, patch_size=16), **OPENAI_224),  # 85.3M
    "vit-b-32": dict(vision=dict(kind="vit", width=768, layers=12, heads=12, patch_size=32),
                     **OPENAI_224),  # 151.3M = OpenAI's
    "vit-b-16": dict(vision=dict(kind="vit", width=768, layers=12, heads=12, patch_size=16),
                     **OPENAI_224),  # 149.6M = OpenAI's
    "vit-l-16": dict(vision=dict(kind="vit", width=1024, layers=24, heads=16, patch_size=16),
                     image_size=224, embed_dim=768, text_arch="vit-b"),  # 427.7M
    "vit-l-14": dict(vision=dict(kind="vit", width=1024, layers=24, heads=16, patch_size=14),
                     image_size=224, embed_dim=768, text_arch="vit-b"),  # 427.6M = OpenAI's
    # CLIP's modified ResNets
    "rn50": dict(vision=dict(kind="resnet", layers=[3, 4, 6, 3], width=64), image_size=224, embed_dim=1024,
                 text_arch="openai"),  # 102.0M = OpenAI's
    "rn101": dict(vision=dict(kind="resnet", layers=[3, 4, 23, 3], width=64), **OPENAI_224),  # 119.7M = OpenAI's
    # the paper's other towers for its CNN-vs-transformer study (drop-path: the official ImageNet values)
    "convnext-t": dict(vision=dict(kind="convnext", depths=[3, 3, 9, 3], dims=[96, 192, 384, 768], drop_path_rate=0.1),
                       **OPENAI_224),  # 91.6M
    "swin-t": dict(vision=dict(kind="swin", patch_size=4, window_size=7, base_width=96, depths=[2, 2, 6, 2],
                               heads=[3, 6, 12, 24], drop_path_rate=0.2), **OPENAI_224),  # 91.3M
    "mixer-b-32": dict(vision=dict(kind="mixer", patch_size=32, width=768, layers=12, token_mlp_dim=384,
                                   channel_mlp_dim=3072), **OPENAI_224),  # 123.3M
    # micro ViTs shaped like the paper's Ti/S/B family (same depth, width 1:2:4) for scripts/reproduce.py
    "vit-ti-micro": dict(vision=dict(kind="vit", width=32, layers=4, heads=1, patch_size=8), **TINY_32),  # 1.7M
    "vit-s-micro": dict(vision=dict(kind="vit", width=64, layers=4, heads=2, patch_size=8), **TINY_32),  # 1.8M
    "vit-b-micro": dict(vision=dict(kind="vit", width=128, layers=4, heads=4, patch_size=8), **TINY_32),  # 2.4M
    # the paper's other towers at the micro ViT-B's training FLOPs (0.084 image GFLOPs per sample at 32 px, each
    # within 7%: tinyclip/flops.py), as its ResNet-50/ConvNeXt-T/Swin-T/Mixer-B/32 match ViT-B/32's
    "rn-micro": dict(vision=dict(kind="resnet", layers=[1, 1, 1, 1], width=28), **TINY_32),  # 5.6M
    "convnext-micro": dict(vision=dict(kind="convnext", depths=[1, 1, 2, 1], dims=[40, 80, 160, 320],
                                       drop_path_rate=0.0), **TINY_32),  # 3.2M
    "swin-micro": dict(vision=dict(kind="swin", patch_size=2, window_size=2, base_width=23, depths=[2, 2, 2, 2],
                                   heads=[1, 2, 2, 4], drop_path_rate=0.0), **TINY_32),  # 2.8M
    "mixer-micro": dict(vision=dict(kind="mixer", patch_size=8, width=152, layers=4, token_mlp_dim=76,
                                    channel_mlp_dim=608), **TINY_32),  # 2.4M
    # tiny towers for tests and CPU smoke runs (swin: patch 2 x window 2 x 8 = 32; rn: a 2x2 grid to pool)
    "vit-test": dict(vision=dict(kind="vit", width=64, layers=2, heads=2, patch_size=8), **TINY_32),  # 1.7M
    "rn-test": dict(vision=dict(kind="resnet", layers=[1, 1, 1, 1], width=8), image_size=64, embed_dim=32,
                    text_arch="test"),  # 1.9M
    "convnext-test": dict(vision=dict(kind="convnext", depths=[1, 1, 2, 1], dims=[8, 16, 32, 64], drop_path_rate=0.0),
                          **TINY_32),  # 1.7M
    "swin-test": dict(vision=dict(kind="swin", patch_size=2, window_size=2, base_width=8, depths=[2, 2, 2, 2],
                                  heads=[1, 2, 2, 4], drop_path_rate=0.0), **TINY_32),  # 1.8M
    "mixer-test": dict(vision=dict(kind="mixer", patch_size=8, width=32, layers=2, token_mlp_dim=16,
                                   channel_mlp_dim=64), **TINY_32),  # 1.6M
}
ALIASES = {"vit-ti": "vit-ti-16", "vit-s": "vit-s-16", "vit-b": "vit-b-16", "vit-l": "vit-l-16"}
LOG_MAX_LOGIT_SCALE = math.log(100)  # the temperature may not fall below 1/100 (CLIP, section 2.5)


def list_models() -> list[str]:
    """Every name create_model accepts: the presets, then the aliases."""
    return list(PRESETS) + list(ALIASES)


@dataclasses.dataclass
class CLIPConfig:
    """Everything needed to rebuild a CLIP; dataclasses.asdict(config) holds only plain types."""

    arch: str  # the preset it came from (informational once built)
    vision: dict  # kind + the tower's constructor kwargs, e.g. {"kind": "vit", "width": 768, ...}
    image_size: int = 224
    embed_dim: int = 512
    text_arch: str = "openai"  # informational; the text_* fields below are what is built
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408
    quick_gelu: bool = False  # OpenAI's weights were trained with QuickGELU (text tower and ViT)
    ssl_mlp_dim: int = 0  # SLIP's SimCLR head: hidden width (SLIP: 4096); 0 = no head
    ssl_emb_dim: int = 256  # its output width (SLIP: 256)
    ssl_norm: str = "batch"  # "batch" (SLIP's, global-batch statistics) or "layer" (batch-free)
    loss: str = "softmax"  # CLIP's InfoNCE, or "sigmoid": SigLIP's, which adds a learned logit bias


LOSSES = ("softmax", "sigmoid")
OVERRIDES = ("image_size", "embed_dim", "text_arch", "context_length", "vocab_size", "quick_gelu",
             "ssl_mlp_dim", "ssl_emb_dim", "ssl_norm", "loss")


def make_config(arch: str, **overrides) -> CLIPConfig:
    """The CLIPConfig of a preset (see PRESETS), with any of OVERRIDES changed (None: keep the preset's)."""
    name = ALIASES.get(arch, arch)
    if name not in PRESETS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(list_models())}")
    unknown = set(overrides) - set(OVERRIDES)
    if unknown:
        raise TypeError(f"create_model got unknown overrides {sorted(unknown)}; valid: {', '.join(OVERRIDES)}")
    fields = copy.deepcopy(PRESETS[name])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if fields["text_arch"] not in TEXT_TOWERS:
        raise ValueError(f"unknown text_arch {fields['text_arch']!r}; valid: {', '.join(TEXT_TOWERS)}")
    if fields.get("loss", "softmax") not in LOSSES:
        raise ValueError(f"unknown loss {fields['loss']!r}; valid: {', '.join(LOSSES)}")
    return CLIPConfig(arch=name, **fields, **TEXT_TOWERS[fields["text_arch"]])


# ---------------------------------------------------------------------------------------------
# SLIP's projection head (Mu et al. 2021, "SLIP: Self-supervision meets Language-Image Pre-training")


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the global batch across ranks.

    What SyncBatchNorm (SLIP's choice) does, written with losses.gather_with_grad so it runs on any
    backend (torch's SyncBatchNorm is GPU-only; the CPU tests use gloo) and only per-channel sums
    travel. On a single process it is nn.BatchNorm1d.
    """

    def forward(self, x):  # n, C
        if not (self.training and distributed()) or x.device.type == "meta":  # meta: FLOP counting, no data
            return super().forward(x)
        count = x.shape[0] * dist.get_world_size()
        xf = x.float()
        # Two passes (mean, then squared deviations), as BatchNorm itself computes them: the
        # one-pass E[x^2] - E[x]^2 loses digits that SLIP's low temperature then amplifies.
        mean = gather_with_grad(xf.sum(0)[None]).sum(0) / count  # C
        var = gather_with_grad(((xf - mean) ** 2).sum(0)[None]).sum(0) / count  # C, biased
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * count / max(count - 1, 1))  # unbiased, as BatchNorm
            self.num_batches_tracked += 1
        y = (x - mean.to(x.dtype)) * torch.rsqrt(var + self.eps).to(x.dtype)
        return y * self.weight + self.bias


class SimCLRHead(nn.Sequential):
    """SLIP's 3-layer MLP projector: Linear-Norm-ReLU, Linear-Norm-ReLU, Linear (SLIP: 4096 hidden, 256 out).

    It reads the image tower's feature before CLIP's projection (SLIP's `image_mlp(visual(aug))`).
    norm="batch" is SLIP's BatchNorm with global-batch statistics; BatchNorm over a handful of
    samples per GPU collapses, so norm="layer" is a batch-free alternative for small batches."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, norm: str = "batch"):
        if norm not in ("batch", "layer"):
            raise ValueError(f"unknown SSL head norm {norm!r}; valid: batch, layer")
        Norm = GlobalBatchNorm1d if norm == "batch" else nn.LayerNorm
        super().__init__(nn.Linear(in_dim, hidden_dim), Norm(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, hidden_dim), Norm(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


# ---------------------------------------------------------------------------------------------
# the model


class CLIP(TextTransformer):
    """Image tower (`visual`) + text tower + logit scale (+ SigLIP's `logit_bias`, SLIP's head `ssl_head`
    when the config asks).

    A TextTransformer subclass, so the text tower's parameters sit at the top level with OpenAI's
    names (token_embedding, positional_embedding, transformer, ln_final, text_projection) and
    encode_text comes from there. Three verbs, as MAE's: encode_image / encode_text, forward (both,
    unit-normalised) and loss."""

    def __init__(self, config: CLIPConfig):
        super().__init__(width=config.text_width, layers=config.text_layers,
                         heads=config.text_heads, context_length=config.context_length,
                         vocab_size=config.vocab_size, output_dim=config.embed_dim,
                         quick_gelu=config.quick_gelu)
        self.config = config
        vision = dict(config.vision)
        kind = vision.pop("kind", None)
        if kind not in VISION_TOWERS:
            raise ValueError(f"unknown vision tower kind {kind!r}; valid: {', '.join(VISION_TOWERS)}")
        if kind == "vit":  # the one tower built of CLIP's transformer blocks, whose activation OpenAI's weights fix
            vision["quick_gelu"] = config.quick_gelu
        self.visual = VISION_TOWERS[kind](**vision, image_size=config.image_size, output_dim=config.embed_dim)
        # log of the inverse temperature, initialised to 1/0.07 as in CLIP (SigLIP: 10, with a bias of -10,
        # so that the N^2 - N negatives start near zero loss); train.py clamps it to [0, ln 100] after each
        # optimiser step, as OpenAI, open_clip and SLIP do
        sigmoid = config.loss == "sigmoid"
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10 if sigmoid else 1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0)) if sigmoid else None
        self.ssl_head = (SimCLRHead(self.visual.width, config.ssl_mlp_dim, config.ssl_emb_dim, config.ssl_norm)
                         if config.ssl_mlp_dim else None)
        self.image_locked = False  # lock_image() sets it (LiT)

    def encode_image(self, images: torch.Tensor, mask_ratio: float = 0.0, normalize: bool = False,
                     project: bool = True) -> torch.Tensor:
        """[B, 3, S, S] -> [B, E] (or the tower's own feature [B, W] with project=False: what SLIP's head reads)."""
        S = self.visual.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2:] != (S, S):
            raise ValueError(f"images must be [batch, 3, {S}, {S}] for this model, got shape {tuple(images.shape)}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if mask_ratio > 0 and not self.visual.supports_masking:
            raise ValueError(f"FLIP masking (mask_ratio={mask_ratio}) needs a ViT image tower; "
                             f"{self.config.arch} is a {self.config.vision.get('kind')} tower with no tokens to drop")
        images = images.to(self.logit_scale.dtype)  # a model held in bf16/fp16 takes its own dtype
        x = self.visual(images, mask_ratio=mask_ratio, project=project)  # B, E (or B, W)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask_ratio: float = 0.0, views=None):
        """-> (unit image features [B, E], unit text features [B, E], logit scale (a scalar)); with SLIP's
        views [2B, 3, S, S] (rows 2i, 2i+1: the two views of sample i) also their tower features [2B, W]."""
        outputs = (self.encode_image(images, mask_ratio=mask_ratio, normalize=True),
                   self.encode_text(ids, normalize=True), self.logit_scale.exp())
        return outputs if views is None else (*outputs, self.encode_image(views, project=False))

    def loss(self, image_features, text_features, logit_scale, view_features=None, ssl_scale: float = 1.0,
             label_smoothing: float = 0.0) -> dict:
        """The training loss of forward's outputs: CLIP's InfoNCE (or SigLIP's sigmoid loss, for a config
        with loss="sigmoid") over the global batch; with SLIP's view features also ssl_scale x SimCLR's
        NT-Xent on the head's projections of the two views, the head run on each view apart as SLIP runs
        it. -> {"loss", "clip"[, "ssl"]}."""
        if self.logit_bias is not None:
            terms = sigmoid_loss(image_features, text_features, logit_scale, self.logit_bias)
        else:
            terms = clip_loss(image_features, text_features, logit_scale, label_smoothing)
        if view_features is None:
            return terms
        ssl = simclr_loss(self.ssl_head(view_features[0::2]), self.ssl_head(view_features[1::2]))["ssl"]
        return {"loss": terms["clip"] + ssl_scale * ssl, "clip": terms["clip"], "ssl": ssl}

    def set_grad_checkpointing(self, enable: bool = True):
        """Recompute activations in the backward pass, in both towers (saves memory)."""
        self.grad_checkpointing = enable  # the text tower's, which encode_text reads
        self.visual.set_grad_checkpointing(enable)

    def resize_image(self, image_size: int):
        """Take images of another size from now on, in place: the ViT's positional embedding is interpolated
        to the new grid (CLIPA's full-size tuning after training at a low resolution). The parameter keeps
        its identity, so an optimiser still holds it; its moments no longer fit and must be dropped."""
        if self.config.vision.get("kind") != "vit":
            raise ValueError(f"resizing needs a ViT image tower; {self.config.arch} is a "
                             f"{self.config.vision.get('kind')} tower")
        patch = self.config.vision["patch_size"]
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        pos = self.visual.positional_embedding  # .data: the new values are set outside autograd
        pos.data = resize_positional_embedding(pos.data, image_size // patch)
        self.visual.image_size = self.config.image_size = image_size

    def lock_image(self):
        """LiT's locked image tower (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text
        Tuning"): no gradient for any of its weights (so no image backward is recorded, and an optimiser
        built afterwards holds no state for them) and its norms in eval mode, whatever train() is told."""
        self.visual.requires_grad_(False)
        self.image_locked = True
        return self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.image_locked:
            self.visual.eval()
        return self


def build_model(config) -> CLIP:
    """A fresh CLIP from a CLIPConfig or its dataclasses.asdict() dict (e.g. from a checkpoint)."""
    if isinstance(config, dict):
        names = {f.name for f in dataclasses.fields(CLIPConfig)}
        unknown = set(config) - names
        if unknown:
            raise ValueError(f"unknown CLIPConfig fields {sorted(unknown)}; valid: {sorted(names)}")
        config = CLIPConfig(**config)
    return CLIP(dataclasses.replace(config, vision=copy.deepcopy(config.vision)))


def create_model(arch: str, **overrides) -> CLIP:
    """A fresh CLIP from a preset name and any OVERRIDES (see make_config): create_model("vit-b", loss="sigmoid")."""
    return build_model(make_config(arch, **overrides))


# ---------------------------------------------------------------------------------------------
# OpenAI / open_clip checkpoints


OPENAI_BUFFERS = ("input_resolution", "context_length", "vocab_size", "attn_mask")  # OpenAI's buffers, not weights


def read_state_dict(path) -> dict:
    """The dict in a TorchScript archive (OpenAI's release format) or a torch.save file (a state_dict,
    open_clip's {"state_dict": ...} or a tinyclip checkpoint), without DDP's "module." prefix or OPENAI_BUFFERS."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    scripted = False  # TorchScript archives are zip files with compiled code under <name>/code/__torch__/
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            scripted = any("/code/__torch__/" in name for name in archive.namelist())
    if scripted:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is OpenAI's format
            warnings.simplefilter("ignore", DeprecationWarning)
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state_dict")
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    return {k: v for k, v in state_dict.items() if k not in OPENAI_BUFFERS}


def read_weights(path) -> tuple:
    """(state_dict, quick_gelu) of a tinyclip checkpoint, or of OpenAI/open_clip weights, which are taken to
    need QuickGELU as OpenAI's do (see load_openai): the starting weights of train.py --init."""
    state_dict = read_state_dict(path)
    if isinstance(state_dict.get("model"), dict) and isinstance(state_dict.get("config"), dict):  # tinyclip's
        return state_dict["model"], bool(state_dict["config"].get("quick_gelu", False))
    return state_dict, True


def count_blocks(state_dict: dict, prefix: str) -> int:
    """Number of distinct N in keys '<prefix>N.<...>'."""
    return len({k.removeprefix(prefix).split(".")[0] for k in state_dict if k.startswith(prefix)})


def load_openai(path, image_size: int | None = None, quick_gelu: bool = True) -> CLIP:
    """Load an OpenAI CLIP checkpoint (TorchScript archive or state_dict; open_clip state_dicts of
    the same architectures too) into a float32 CLIP in eval mode.

    image_size: build for another resolution; positional embeddings are resized bicubically.
    quick_gelu: OpenAI's weights need QuickGELU (the default). The activation cannot be read from
    the weights: open_clip models trained without it (e.g. its LAION ViT-B-32) need False."""
    sd = read_state_dict(path)
    # the architecture from weight shapes, as OpenAI's build_model infers it (heads = width / 64)
    if "visual.proj" in sd:
        width, _, stride, _ = sd["visual.conv1.weight"].shape
        layers = count_blocks(sd, "visual.transformer.resblocks.")
        vision = dict(kind="vit", width=width, layers=layers, heads=width // 64, patch_size=stride)
        pos_key = "visual.positional_embedding"
    elif "visual.attnpool.positional_embedding" in sd:
        stages = [count_blocks(sd, f"visual.layer{i}.") for i in (1, 2, 3, 4)]
        vision = dict(kind="resnet", layers=stages, width=sd["visual.layer1.0.conv1.weight"].shape[0])
        stride, pos_key = 32, "visual.attnpool.positional_embedding"
    else:
        raise ValueError("not an OpenAI CLIP state_dict: found neither visual.proj (ViT) nor "
                         "visual.attnpool.positional_embedding (ResNet)")
    text_width = sd["ln_final.weight"].shape[0]
    text = dict(text_width=text_width, text_layers=count_blocks(sd, "transformer.resblocks."),
                text_heads=text_width // 64)
    arch = next((n for n, row in PRESETS.items() if row["vision"] == vision), "openai-custom")
    text_arch = next((n for n, v in TEXT_TOWERS.items() if v == text), "custom")
    trained_size = stride * math.isqrt(sd[pos_key].shape[0] - 1)  # positions: one per grid cell, plus one
    image_size = trained_size if image_size is None else image_size
    if image_size % stride:
        raise ValueError(f"image_size {image_size} is not a multiple of the tower's stride {stride}")
    if image_size != trained_size:
        sd[pos_key] = resize_positional_embedding(sd[pos_key], image_size // stride)
    model = build_model(CLIPConfig(arch=arch, vision=vision, image_size=image_size,
                                   embed_dim=sd["text_projection"].shape[1], text_arch=text_arch, **text,
                                   context_length=sd["positional_embedding"].shape[0],
                                   vocab_size=sd["token_embedding.weight"].shape[0], quick_gelu=quick_gelu))
    model.load_state_dict(sd, strict=True)  # copies into float32 parameters
    return model.eval()
