"""Tests for the paper's other image towers: ConvNeXt (tinyclip/convnext.py), Swin
(tinyclip/swin.py) and MLP-Mixer (tinyclip/mixer.py).

Checks: output shapes and tower attributes of the tiny presets; every parameter receives a
gradient; Swin's shifted-window attention mask equals a direct construction from image positions,
and a shifted block never lets a token see the far-border tokens it was rolled next to; the
relative position index on a 2x2 window (known answer); parameter counts (on the meta device) and
forward GMACs at 224px against the published figures; one-line errors for image sizes a tower
cannot be built for, for a Mixer checkpoint of another size, and (from CLIP.encode_image, which
checks every tower's input) for FLIP masking and other image sizes; gradient checkpointing gives
the same gradients as plain backprop (with stochastic depth on, so the RNG replay is checked too);
stochastic depth (tinyclip/transformer.py's DropPath) keeps or zeroes whole samples.
"""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tinyclip import model as clip_model
from tinyclip.convnext import ConvNeXt
from tinyclip.mixer import MlpMixer
from tinyclip.swin import (SwinBlock, SwinTransformer, relative_position_index,
                           shifted_window_attention_mask)
from tinyclip.transformer import DropPath

TOWERS = {"convnext": ConvNeXt, "swin": SwinTransformer, "mixer": MlpMixer}

# the same kwargs as the towers of these presets in tinyclip/model.py
PRESETS = {
    "convnext-t": dict(kind="convnext", depths=[3, 3, 9, 3], dims=[96, 192, 384, 768],
                       drop_path_rate=0.1),
    "swin-t": dict(kind="swin", patch_size=4, window_size=7, base_width=96, depths=[2, 2, 6, 2],
                   heads=[3, 6, 12, 24], drop_path_rate=0.2),
    "mixer-b-32": dict(kind="mixer", patch_size=32, width=768, layers=12, token_mlp_dim=384,
                       channel_mlp_dim=3072),
    "convnext-test": dict(kind="convnext", depths=[1, 1, 2, 1], dims=[8, 16, 32, 64],
                          drop_path_rate=0.0),
    "swin-test": dict(kind="swin", patch_size=2, window_size=2, base_width=8, depths=[2, 2, 2, 2],
                      heads=[1, 2, 2, 4], drop_path_rate=0.0),
    "mixer-test": dict(kind="mixer", patch_size=8, width=32, layers=2, token_mlp_dim=16,
                       channel_mlp_dim=64),
}
TINY = ["convnext-test", "swin-test", "mixer-test"]


def build(name, image_size=32, output_dim=24, **overrides):
    kwargs = {**PRESETS[name], **overrides}
    return TOWERS[kwargs.pop("kind")](**kwargs, image_size=image_size, output_dim=output_dim)


# --------------------------------------------------------------------------------------------
# shapes and gradients


@pytest.mark.parametrize("name,width", [("convnext-test", 64), ("swin-test", 64), ("mixer-test", 32)])
def test_tiny_shapes_and_attributes(name, width):
    torch.manual_seed(0)
    tower = build(name)
    out = tower(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 24)
    assert tower.image_size == 32 and tower.width == width and tower.supports_masking is False
    assert tower.proj.shape == (width, 24)
    # derived buffers (masks, position indices) are rebuilt from the config, never stored
    assert set(tower.state_dict()) == {n for n, _ in tower.named_parameters()}


@pytest.mark.parametrize("name", TINY)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    tower = build(name).train()
    tower(torch.randn(2, 3, 32, 32)).square().sum().backward()
    for n, p in tower.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", TINY)
def test_grad_checkpointing_matches_plain_backprop(name):
    torch.manual_seed(0)
    tower = build(name, **({} if name == "mixer-test" else {"drop_path_rate": 0.5})).train()
    x = torch.randn(4, 3, 32, 32)

    def grads(checkpointing):
        tower.set_grad_checkpointing(checkpointing)
        tower.zero_grad()
        torch.manual_seed(1)  # same stochastic-depth draws in both runs
        tower(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in tower.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], msg=n)


def test_drop_path_keeps_or_zeroes_whole_samples():
    x = torch.randn(1000, 4, 3) + 5.0
    drop_path = DropPath(0.3)
    assert torch.equal(drop_path.eval()(x), x)
    torch.manual_seed(0)
    y = drop_path.train()(x)
    kept = (y != 0).flatten(1).all(1)
    dropped = (y == 0).flatten(1).all(1)
    assert bool((kept | dropped).all())
    torch.testing.assert_close(y[kept], x[kept] / 0.7)
    assert 0.25 < dropped.float().mean().item() < 0.35


# --------------------------------------------------------------------------------------------
# Swin: relative positions and the shifted-window mask


def test_relative_position_index_window_2():
    # index = (dy + 1) * 3 + (dx + 1) with (dy, dx) = pos_query - pos_key, positions row-major
    expected = torch.tensor([[4, 3, 1, 0],
                             [5, 4, 2, 1],
                             [7, 6, 4, 3],
                             [8, 7, 5, 4]])
    assert torch.equal(relative_position_index(2), expected)
    assert relative_position_index(7).max().item() == 13 ** 2 - 1


@pytest.mark.parametrize("size,window,shift", [(8, 4, 2), (12, 4, 2), (6, 3, 1), (12, 6, 3), (4, 2, 1)])
def test_shifted_window_mask_equals_direct_construction(size, window, shift):
    # After rolling by -shift, rolled position (r, c) holds image position ((r+shift) % size, ...).
    # Two tokens may attend iff they share a window of the rolled grid and are really close in the
    # image (less than a window apart on both axes, i.e. not joined by the wrap-around).
    n_side = size // window
    expected = torch.zeros(n_side * n_side, window * window, window * window, dtype=torch.bool)
    for wr in range(n_side):
        for wc in range(n_side):
            cells = [(wr * window + i, wc * window + j) for i in range(window) for j in range(window)]
            image = [((r + shift) % size, (c + shift) % size) for r, c in cells]
            for a, (ra, ca) in enumerate(image):
                for b, (rb, cb) in enumerate(image):
                    near = abs(ra - rb) < window and abs(ca - cb) < window
                    expected[wr * n_side + wc, a, b] = near
    assert torch.equal(shifted_window_attention_mask(size, window, shift), expected)


def test_shifted_block_never_attends_across_the_wrap():
    # Perturb the top-left image token: rolling puts it in one window with the bottom-right
    # corner, but only the top-left shift x shift corner (its true neighbours) may change.
    torch.manual_seed(0)
    size, window, shift, dim = 8, 4, 2, 8
    block = SwinBlock(dim, size, heads=2, window=window, shift=shift).eval()
    x = torch.randn(1, size * size, dim)
    x2 = x.clone()
    x2[0, 0] += torch.randn(dim)  # random, not constant: LayerNorm would remove a constant shift
    changed = (block(x2) - block(x)).abs().amax(-1).view(size, size) > 1e-6
    expected = torch.zeros(size, size, dtype=torch.bool)
    expected[:shift, :shift] = True
    assert torch.equal(changed, expected)


def test_swin_shift_only_where_the_grid_has_several_windows():
    tower = build("swin-test")  # grids 16, 8, 4, 2 with window 2: the last stage is one window
    assert [[b.shift for b in stage.blocks] for stage in tower.layers] == [[0, 1], [0, 1], [0, 1], [0, 0]]


# --------------------------------------------------------------------------------------------
# published sizes at 224px


# published totals include an ImageNet head Linear(768, 1000) = 769,000 parameters; towers here
# end in a bias-free proj [768, output_dim] instead, so compare backbone + 769,000.
# (params M, GMACs): ConvNeXt paper Table 1; Swin paper Table 1; Mixer-B/32 60.29M / 3.24 GMACs
# as listed by timm (the Mixer paper rounds to 60M).
PUBLISHED = {"convnext-t": (28.6, 4.5), "swin-t": (28.3, 4.5), "mixer-b-32": (60.29, 3.24)}
EXACT_PARAMS = {"convnext-t": 28_589_128, "swin-t": 28_288_354}  # the official code's counts


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_params_and_gmacs_at_224(name):
    with torch.device("meta"):
        tower = build(name, image_size=224, output_dim=512)
        with FlopCounterMode(display=False) as counter:
            tower(torch.empty(1, 3, 224, 224))
    backbone = sum(p.numel() for p in tower.parameters()) - tower.proj.numel()
    with_head = backbone + 768 * 1000 + 1000
    params_m, gmacs = PUBLISHED[name]
    assert with_head / 1e6 == pytest.approx(params_m, rel=0.01)
    if name in EXACT_PARAMS:
        assert with_head == EXACT_PARAMS[name]
    # FlopCounterMode counts a multiply-add as 2 FLOPs; published figures are MACs
    backbone_gmacs = (counter.get_total_flops() / 2 - tower.proj.numel()) / 1e9
    assert backbone_gmacs == pytest.approx(gmacs, rel=0.03)


# --------------------------------------------------------------------------------------------
# errors


def test_bad_image_sizes_give_one_line_errors():
    with torch.device("meta"):
        with pytest.raises(ValueError, match=r"^swin needs image_size divisible by 224 "
                                             r"\(patch 4 x window 7 x 8\); got 200$"):
            build("swin-t", image_size=200)
        with pytest.raises(ValueError, match=r"divisible by 32 \(patch 2 x window 2 x 8\); got 48$"):
            build("swin-test", image_size=48)
        with pytest.raises(ValueError, match=r"^convnext needs image_size divisible by 32 .*got 200$"):
            build("convnext-t", image_size=200)
        with pytest.raises(ValueError, match=r"^mixer needs image_size divisible by its patch 32; got 200$"):
            build("mixer-b-32", image_size=200)
        assert build("mixer-b-32", image_size=256).num_tokens == 64  # a fresh tower at 256 is fine


def test_mixer_checkpoint_of_another_size_is_a_value_error():
    small, large = build("mixer-test", image_size=32), build("mixer-test", image_size=48)
    with pytest.raises(ValueError, match=r"^mixer has a fixed token count: the checkpoint was "
                                         r"trained at image_size 32, .*image_size=32$"):
        large.load_state_dict(small.state_dict())
    build("mixer-test", image_size=32).load_state_dict(small.state_dict())  # same size loads


@pytest.mark.parametrize("name", TINY)
def test_model_refuses_masking_and_other_image_sizes(name):
    # CLIP.encode_image checks the input of every tower (the towers themselves do not)
    model = clip_model.create_model(name)
    with pytest.raises(ValueError, match="^FLIP masking .* needs a ViT image tower; "):
        model.encode_image(torch.randn(1, 3, 32, 32), mask_ratio=0.5)
    # swin's masks and mixer's token-mixing weights fix the size; the model refuses others for every tower
    with pytest.raises(ValueError, match=r"^images must be \[batch, 3, 32, 32\] .*\(1, 3, 64, 64\)$"):
        model.encode_image(torch.randn(1, 3, 64, 64))


# --------------------------------------------------------------------------------------------
# through the CLIP registry (tinyclip/model.py)


def test_registry_builds_these_towers():
    assert {n: clip_model.PRESETS[n]["vision"] for n in PRESETS} == PRESETS  # a missing preset fails
    assert {k: clip_model.VISION_TOWERS[k] for k in TOWERS} == TOWERS
    for name, width in [("convnext-test", 64), ("swin-test", 64), ("mixer-test", 32)]:
        model = clip_model.create_model(name)
        assert model.visual.width == width
        assert model.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, model.config.embed_dim)
