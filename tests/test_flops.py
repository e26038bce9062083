"""Tests for tinyclip/flops.py: compute per sample, measured with FlopCounterMode on the meta device.

Checks the counts against closed-form multiply-add formulas (ViT, text tower), against published
forward costs (ViT-B/32 4.4 GMACs, ViT-S/16 4.6 GMACs, and CLIP's RN50 as torchvision's 4.09
GMACs ResNet-50 plus CLIP's three changes), that training costs 3x the forward, that FLIP at 0.5
halves the image tower, that SLIP triples it, that a real CPU model is counted without being
touched, that the micro towers of the architecture study cost what the micro ViT-B costs, and the errors
for bad arguments.
"""

import pytest
import torch

from tinyclip.flops import gflops_per_sample, gmacs_per_sample
from tinyclip.model import create_model
from tinyclip.vit import num_kept_tokens


def meta_model(name, **overrides):
    with torch.device("meta"):
        return create_model(name, **overrides)


def vit_macs(width, layers, patch, image_size, embed_dim, mask_ratio=0.0):
    """Forward multiply-adds of CLIP's ViT tower: patch embedding on every patch, then
    12 T D^2 (qkv 3, out 1, MLP 8) + 2 T^2 D (scores, weighted sum) per layer on the T kept
    tokens, then the class token's projection."""
    N = (image_size // patch) ** 2
    T = num_kept_tokens(N, mask_ratio) + 1 if mask_ratio else N + 1
    D = width
    return N * D * 3 * patch ** 2 + layers * (12 * T * D * D + 2 * T * T * D) + D * embed_dim


def text_macs(width, layers, context_length, embed_dim):
    """The same for the text tower (the causal mask does not skip work in this count)."""
    T, D = context_length, width
    return layers * (12 * T * D * D + 2 * T * T * D) + D * embed_dim


# ---------------------------------------------------------------------------------------------
# known answers


@pytest.mark.parametrize("name, width, layers, patch", [
    ("vit-b-32", 768, 12, 32), ("vit-s-16", 384, 12, 16), ("vit-l-14", 1024, 24, 14)])
def test_vit_and_text_forward_macs_equal_closed_form(name, width, layers, patch):
    model = meta_model(name)
    c = model.config
    macs = gmacs_per_sample(model, train=False)
    assert macs["image"] * 1e9 == pytest.approx(vit_macs(width, layers, patch, 224, c.embed_dim),
                                                rel=1e-9)
    assert macs["text"] * 1e9 == pytest.approx(
        text_macs(c.text_width, c.text_layers, 77, c.embed_dim), rel=1e-9)
    assert macs["total"] == pytest.approx(macs["image"] + macs["text"])


@pytest.mark.parametrize("name, published_gmacs, tolerance", [
    ("vit-b-32", 4.4, 0.03),  # ViT-B/32 at 224px (CLIP paper, timm)
    ("vit-s-16", 4.6, 0.03),  # DeiT-S / ViT-S/16 at 224px
    # CLIP's RN50 is not torchvision's (4.09 GMACs): its 3-conv stem adds 0.24, running the 3x3
    # conv before the 2x2 pool in three downsampling blocks adds 3 x 0.347, and the attention pool
    # instead of avg pool + fc adds 0.42 (k, v over 50 tokens at width 2048) -> 5.79
    ("rn50", 4.09 + 0.2396 + 3 * 0.3468 + 0.4240, 0.02),
])
def test_image_tower_forward_macs_match_published_figures(name, published_gmacs, tolerance):
    measured = gmacs_per_sample(meta_model(name), train=False)["image"]
    assert measured == pytest.approx(published_gmacs, rel=tolerance)


@pytest.mark.parametrize("name", ["rn-micro", "convnext-micro", "swin-micro", "mixer-micro"])
def test_the_micro_towers_are_flop_matched_to_the_micro_vit_b(name):
    # the paper compares its other towers with ViT-B/32 at similar FLOPs; the micro ones are held to 7%
    reference = gflops_per_sample(meta_model("vit-b-micro"))["image"]
    assert gflops_per_sample(meta_model(name))["image"] == pytest.approx(reference, rel=0.07)


def test_text_tower_of_openai_size_is_about_3_gmacs():
    # OpenAI's 512-wide, 12-layer text tower on 77 tokens: ~2.98 GMACs (open_clip lists 2.96)
    assert gmacs_per_sample(meta_model("rn50"), train=False)["text"] == pytest.approx(2.98, abs=0.01)


# ---------------------------------------------------------------------------------------------
# strategies


def test_training_costs_three_forwards():
    # backward = 2x forward (grads of inputs and weights), except that the images need no
    # gradient, so the patch embedding's backward is one matmul instead of two
    model = meta_model("vit-b-32")
    forward = gflops_per_sample(model, train=False)
    train = gflops_per_sample(model, train=True)
    patch_embed = 2 * 49 * 768 * 3 * 32 ** 2 / 1e9
    assert train["text"] == pytest.approx(3 * forward["text"], rel=1e-9)
    assert train["image"] == pytest.approx(3 * forward["image"] - patch_embed, rel=1e-9)


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_flip_masking_cuts_image_tower_compute(ratio):
    model = meta_model("vit-b-16")
    clip = gflops_per_sample(model, strategy="clip", train=False)
    flip = gflops_per_sample(model, strategy="flip", mask_ratio=ratio, train=False)
    assert flip["image"] * 1e9 == pytest.approx(
        2 * vit_macs(768, 12, 16, 224, 512, mask_ratio=ratio), rel=1e-9)
    assert flip["image"] / clip["image"] == pytest.approx(1 - ratio, abs=0.03)
    assert flip["text"] == clip["text"]
    # the mask ratio is ignored by the other strategies
    tiny = meta_model("vit-test")
    assert gflops_per_sample(tiny, strategy="clip-aug", mask_ratio=ratio) == \
        gflops_per_sample(tiny, strategy="clip")


def test_slip_counts_two_more_views_through_the_tower_and_its_head():
    with torch.device("meta"):
        model = create_model("vit-test", ssl_mlp_dim=48, ssl_emb_dim=16)  # tower width 64, embedding 32
    clip = gflops_per_sample(model, strategy="clip", train=False)
    slip = gflops_per_sample(model, strategy="slip", train=False)
    projection = 2 * 64 * 32 / 1e9  # the CLIP projection, which SLIP's views skip (the head reads the feature)
    head = 2 * (64 * 48 + 48 * 48 + 48 * 16) / 1e9  # SLIP's three linear layers, per view
    assert slip["image"] == pytest.approx(clip["image"] + 2 * (clip["image"] - projection + head))
    assert slip["text"] == clip["text"]
    with pytest.raises(ValueError, match="needs a model with SLIP's head"):
        gflops_per_sample(meta_model("vit-test"), strategy="slip")


def test_real_model_is_counted_without_being_touched():
    model = create_model("vit-test").eval()
    expected = gflops_per_sample(meta_model("vit-test"))
    assert gflops_per_sample(model) == expected
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert next(model.parameters()).device.type == "cpu"


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown strategy 'mae'; valid: clip, clip-aug, flip, slip"):
        gflops_per_sample(meta_model("vit-test"), strategy="mae")
    with pytest.raises(ValueError, match="mask_ratio must be in \\[0, 1\\), got 1.0"):
        gflops_per_sample(meta_model("vit-test"), strategy="flip", mask_ratio=1.0)
    with pytest.raises(ValueError, match="needs a ViT image tower"):
        gflops_per_sample(meta_model("rn-test"), strategy="flip")
