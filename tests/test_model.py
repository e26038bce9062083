"""Tests for the model zoo: tinyclip/model.py, vit.py, resnet.py, transformer.py.

Checks that every preset builds with the right output shapes (tiny presets on CPU, full sizes on
the meta device); that parameter counts equal OpenAI's; that every parameter gets a gradient;
FLIP masking's invariants (token count, per-sample randomness, class token kept, a full "mask"
equals the plain path, mask_ratio=0 draws no random numbers); numerical parity with OpenAI's own
CLIP code on stored tiny ViT and ResNet fixtures (state_dict, TorchScript and open_clip-style
files); config round-trips (SigLIP's bias included); gradient checkpointing; the initialisation
scheme; resizing a ViT's input in place (CLIPA) and locking the image tower (LiT); and the one-line
errors for bad input.
"""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tinyclip.model import CLIP, PRESETS, build_model, create_model, list_models, load_openai
from tinyclip.transformer import MultiheadSelfAttention, QuickGELU
from tinyclip.vit import num_kept_tokens, random_masking, resize_positional_embedding

FIXTURES = Path(__file__).parent / "fixtures"
TINY = ["vit-test", "rn-test"]
FULL = [name for name, row in PRESETS.items() if row["image_size"] == 224]


def inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    S, L = model.visual.image_size, model.context_length
    images = torch.randn(batch, 3, S, S, generator=g)
    ids = torch.randint(1, model.vocab_size - 1, (batch, L), generator=g)
    ids[:, L // 2] = model.vocab_size - 1  # the end-of-text token (largest id) mid-sequence
    return images, ids


# ---------------------------------------------------------------------------------------------
# presets, shapes, parameter counts


@pytest.mark.parametrize("name, expected", [
    ("vit-b-32", 151_277_313), ("vit-b-16", 149_620_737), ("vit-l-14", 427_616_513),
    ("rn50", 102_007_137), ("rn101", 119_688_033),
])
def test_parameter_counts_equal_openai(name, expected):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("name", FULL)
def test_full_size_presets_shapes_on_meta(name):
    with torch.device("meta"):
        model = create_model(name)
        images = torch.randn(2, 3, 224, 224)
        ids = torch.zeros(2, 77, dtype=torch.long)
    E = model.config.embed_dim
    image_features, text_features, scale = model(images, ids)
    assert image_features.shape == text_features.shape == (2, E)
    assert scale.shape == ()
    if model.visual.supports_masking:
        assert model.encode_image(images, mask_ratio=0.5).shape == (2, E)


@pytest.mark.parametrize("name", TINY)
def test_tiny_presets_forward_on_cpu(name):
    model = create_model(name)
    images, ids = inputs(model, batch=3)
    image_features, text_features, scale = model(images, ids)
    assert image_features.shape == text_features.shape == (3, model.config.embed_dim)
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(3))
    assert scale.item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        model.logit_scale.fill_(5.0)  # above ln(100): the forward does not clamp (train_step clamps the parameter)
    assert model(images, ids)[2].item() == pytest.approx(math.exp(5.0))


def test_aliases_and_default_text_towers():
    assert {"vit-ti", "vit-s", "vit-b", "vit-l", "vit-b-32", "rn50", "vit-test"} <= set(list_models())
    with torch.device("meta"):
        assert create_model("vit-b").config.vision["patch_size"] == 16
        assert create_model("vit-l-14").config.text_width == 768  # OpenAI's ViT-L/14 pairing
        assert create_model("rn50").config.embed_dim == 1024
        paper = create_model("vit-s", text_arch="vit-b")  # the paper's fixed ViT-B text tower
    assert (paper.config.text_width, paper.config.text_layers, paper.config.text_heads) == (768, 12, 12)


def test_overrides_change_the_model():
    model = create_model("vit-test", image_size=48, context_length=16, vocab_size=1000,
                         embed_dim=24, text_arch="small", quick_gelu=True)
    assert model.visual.positional_embedding.shape == (36 + 1, 64)
    assert model.positional_embedding.shape == (16, 256)
    assert model.token_embedding.weight.shape == (1000, 256)
    assert any(isinstance(m, QuickGELU) for m in model.modules())
    images, ids = inputs(model)
    assert model.encode_image(images).shape == model.encode_text(ids).shape == (2, 24)


# ---------------------------------------------------------------------------------------------
# gradients, checkpointing, initialisation


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("slip, loss", [(False, "softmax"), (True, "softmax"), (False, "sigmoid")])
def test_every_parameter_receives_a_gradient(name, slip, loss):
    torch.manual_seed(0)
    model = create_model(name, vocab_size=1000, ssl_mlp_dim=16 if slip else 0, ssl_emb_dim=8, loss=loss)
    for m in model.modules():  # bn3 starts at zero, which would stop gradients into its branch
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
    images, ids = inputs(model, batch=4)
    views = torch.cat([images.flip(0), images]) if slip else None  # any 2B images will do
    loss = model.loss(*model(images, ids, views=views))["loss"]
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", TINY)
def test_grad_checkpointing_recomputes_and_matches(name):
    torch.manual_seed(0)
    model = create_model(name, vocab_size=1000)
    images, ids = inputs(model, batch=2)
    calls, block = [], model.transformer.resblocks[0]
    block_forward = block.forward

    def counted_forward(*args, **kwargs):  # (forward hooks do not fire when recomputing)
        calls.append(1)
        return block_forward(*args, **kwargs)

    block.forward = counted_forward

    def run():
        calls.clear()
        model.zero_grad()
        image_features, text_features, _ = model(images, ids)
        (image_features * text_features).sum().backward()
        return image_features.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                        if p.grad is not None}

    out_plain, grads_plain = run()
    assert len(calls) == 1
    model.set_grad_checkpointing(True)
    out_ckpt, grads_ckpt = run()
    assert len(calls) == 2  # forward, then recomputed in the backward pass
    torch.testing.assert_close(out_ckpt, out_plain)
    for n in grads_plain:
        torch.testing.assert_close(grads_ckpt[n], grads_plain[n], msg=n)


def test_initialisation_follows_openai():
    torch.manual_seed(0)
    model = create_model("rn-test", text_arch="small")  # text width 256, 4 layers
    width, layers = 256, 4
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    for tensor, std in [(model.token_embedding.weight, 0.02), (model.positional_embedding, 0.01),
                        (model.text_projection, width ** -0.5),
                        (model.transformer.resblocks[0].attn.in_proj_weight, width ** -0.5),
                        (model.transformer.resblocks[0].mlp.c_proj.weight,
                         width ** -0.5 * (2 * layers) ** -0.5),
                        (model.visual.attnpool.q_proj.weight, model.visual.width ** -0.5)]:
        assert tensor.std().item() == pytest.approx(std, rel=0.05)
    assert all((block.bn3.weight == 0).all() for block in model.visual.layer2)


def test_attention_equals_torch_multihead_attention_with_causal_mask():
    torch.manual_seed(0)
    ours, theirs = MultiheadSelfAttention(64, 4), nn.MultiheadAttention(64, 4, batch_first=True)
    ours.load_state_dict(theirs.state_dict())  # same parameter names and shapes
    x = torch.randn(3, 10, 64)
    mask = torch.full((10, 10), float("-inf")).triu(1)  # OpenAI's causal mask
    expected = theirs(x, x, x, attn_mask=mask, need_weights=False)[0]
    torch.testing.assert_close(ours(x, is_causal=True), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours(x), theirs(x, x, x, need_weights=False)[0], atol=1e-6, rtol=1e-5)


def test_model_held_in_bfloat16_runs_close_to_float32():
    torch.manual_seed(0)
    model = create_model("vit-test").eval()
    images, ids = inputs(model)
    with torch.no_grad():
        reference = model(images, ids)
        low = model.to(torch.bfloat16)(images, ids)  # images are cast to the model's dtype
    for a, b in zip(low[:2], reference[:2]):
        assert a.dtype == torch.bfloat16
        assert nn.functional.cosine_similarity(a.float(), b).min() > 0.99


# ---------------------------------------------------------------------------------------------
# FLIP masking


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.9])
def test_random_masking_keeps_round_of_tokens_per_sample(ratio):
    B, N = 8, 49
    x = torch.arange(N, dtype=torch.float).view(1, N, 1).expand(B, N, 3)  # token i holds value i
    kept = random_masking(x, ratio)
    assert kept.shape == (B, round((1 - ratio) * N), 3) == (B, num_kept_tokens(N, ratio), 3)
    ids = kept[..., 0].long()
    assert all(len(set(row.tolist())) == ids.shape[1] for row in ids)  # no token twice
    assert len({tuple(sorted(row.tolist())) for row in ids}) > 1  # samples differ


def test_vit_masking_keeps_class_token_and_sequence_length():
    torch.manual_seed(0)
    model = create_model("vit-test")  # 32px, patch 8: N = 16 patches
    visual = model.visual
    seen = {}
    visual.ln_pre.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    images, _ = inputs(model, batch=4)
    model.encode_image(images, mask_ratio=0.5)
    assert seen["x"].shape == (4, round(0.5 * 16) + 1, 64)
    cls = visual.class_embedding + visual.positional_embedding[0]
    torch.testing.assert_close(seen["x"][:, 0], cls.expand(4, -1))
    model.encode_image(images, mask_ratio=0.75)
    assert seen["x"].shape[1] == round(0.25 * 16) + 1


def test_masking_that_keeps_every_token_equals_the_plain_path():
    # ratio 0.01 keeps round(0.99 * 16) = 16 tokens, only shuffled; attention without a mask is
    # order-free and positions travel with the tokens, so the feature must not change
    torch.manual_seed(0)
    model = create_model("vit-test").eval()
    images, _ = inputs(model, batch=3)
    with torch.no_grad():
        plain = model.encode_image(images)
        shuffled = model.encode_image(images, mask_ratio=0.01)
    torch.testing.assert_close(shuffled, plain, atol=1e-5, rtol=1e-5)


def test_mask_ratio_zero_is_deterministic_and_masking_follows_the_global_seed():
    model = create_model("vit-test").eval()
    images, _ = inputs(model, batch=3)
    with torch.no_grad():
        state = torch.get_rng_state()
        a = model.encode_image(images, mask_ratio=0.0)
        assert torch.equal(torch.get_rng_state(), state)  # the plain path draws nothing
        torch.manual_seed(1)
        m1 = model.encode_image(images, mask_ratio=0.5)
        torch.manual_seed(1)
        m2 = model.encode_image(images, mask_ratio=0.5)
        m3 = model.encode_image(images, mask_ratio=0.5)
    assert torch.equal(a, model.encode_image(images).detach())
    assert torch.equal(m1, m2) and not torch.allclose(m1, m3)


# ---------------------------------------------------------------------------------------------
# OpenAI parity and loading


@pytest.mark.parametrize("fixture", ["openai_tiny_vit.pt", "openai_tiny_rn.pt"])
def test_features_equal_openai_implementation(fixture, tmp_path):
    data = torch.load(FIXTURES / fixture, weights_only=True)
    torch.save(data["state_dict"], tmp_path / "model.pt")  # a plain (fp16) state_dict
    model = load_openai(tmp_path / "model.pt")
    assert not model.training and model.config.quick_gelu
    assert model.token_embedding.weight.dtype == torch.float32
    with torch.no_grad():
        image_features = model.encode_image(data["images"])
        text_features = model.encode_text(data["ids"])
    torch.testing.assert_close(image_features, data["image_features"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text_features, data["text_features"], atol=1e-5, rtol=1e-5)


def test_load_openai_torchscript_archive():
    data = torch.load(FIXTURES / "openai_tiny_vit.pt", weights_only=True)
    model = load_openai(FIXTURES / "openai_tiny_vit_jit.pt")  # has input_resolution etc. too
    with torch.no_grad():
        image_features = model.encode_image(data["images"])
    torch.testing.assert_close(image_features, data["image_features"], atol=1e-5, rtol=1e-5)


def test_load_open_clip_style_checkpoint(tmp_path):
    data = torch.load(FIXTURES / "openai_tiny_rn.pt", weights_only=True)
    wrapped = {"epoch": 3, "state_dict": {"module." + k: v for k, v in data["state_dict"].items()}}
    torch.save(wrapped, tmp_path / "epoch_3.pt")
    model = load_openai(tmp_path / "epoch_3.pt")
    assert model.config.vision == {"kind": "resnet", "layers": [1, 2, 1, 1], "width": 4}
    assert (model.config.image_size, model.config.context_length) == (64, 16)
    with torch.no_grad():
        text_features = model.encode_text(data["ids"])
    torch.testing.assert_close(text_features, data["text_features"], atol=1e-5, rtol=1e-5)
    # weights trained with plain GELU (most of open_clip's) load the same, and then differ
    gelu = load_openai(tmp_path / "epoch_3.pt", quick_gelu=False)
    assert not gelu.config.quick_gelu
    with torch.no_grad():
        assert not torch.allclose(gelu.encode_text(data["ids"]), text_features, atol=1e-3)


def test_load_openai_at_another_image_size(tmp_path):
    data = torch.load(FIXTURES / "openai_tiny_vit.pt", weights_only=True)
    torch.save(data["state_dict"], tmp_path / "model.pt")
    model = load_openai(tmp_path / "model.pt", image_size=48)  # grid 4x4 -> 6x6
    old = data["state_dict"]["visual.positional_embedding"].float()
    new = model.visual.positional_embedding.detach()
    assert new.shape == (37, 64)
    torch.testing.assert_close(new[0], old[0])  # the class token's embedding is kept
    assert model.encode_image(torch.randn(2, 3, 48, 48)).shape == (2, 32)
    # resizing to the same grid is the identity; a constant grid stays constant
    assert resize_positional_embedding(old, 4) is old
    constant = torch.ones(1 + 16, 8)
    torch.testing.assert_close(resize_positional_embedding(constant, 7), torch.ones(1 + 49, 8))


def test_load_openai_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_openai(tmp_path / "missing.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an OpenAI CLIP state_dict"):
        load_openai(tmp_path / "other.pt")


@pytest.mark.parametrize("name, loss", [(n, "softmax") for n in TINY] + [("vit-test", "sigmoid")])
def test_config_round_trip_rebuilds_the_same_model(name, loss):
    torch.manual_seed(0)
    model = create_model(name, vocab_size=1000, loss=loss).eval()
    config = dataclasses.asdict(model.config)
    config = json.loads(json.dumps(config))  # only plain types
    clone = build_model(config).eval()
    assert isinstance(clone, CLIP) and clone.config == model.config
    clone.load_state_dict(model.state_dict(), strict=True)
    images, ids = inputs(model)
    with torch.no_grad():
        for a, b in zip(model(images, ids), clone(images, ids)):
            assert torch.equal(a, b)


def test_sigmoid_loss_starts_from_siglips_temperature_and_bias():
    model = create_model("vit-test", loss="sigmoid")
    assert model.logit_scale.exp().item() == pytest.approx(10.0) and model.logit_bias.item() == -10.0
    assert create_model("vit-test").logit_bias is None


def test_resize_image_interpolates_the_positional_embedding_in_place():
    torch.manual_seed(0)
    model = create_model("vit-test", image_size=16)  # a 2 x 2 grid of 8-px patches
    pos = model.visual.positional_embedding
    with torch.no_grad():
        pos[1:] = torch.arange(64.0)  # the same vector at every grid cell: interpolation must keep it
    cls = pos[0].clone()
    model.resize_image(32)
    assert model.visual.positional_embedding is pos  # the same parameter, so an optimiser still holds it
    assert pos.shape == (1 + 16, 64) and model.config.image_size == model.visual.image_size == 32
    assert torch.equal(pos[0], cls) and torch.allclose(pos[1:], torch.arange(64.0).expand(16, 64), atol=1e-5)
    assert model.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        model.resize_image(36)
    with pytest.raises(ValueError, match="needs a ViT"):
        create_model("rn-test").resize_image(32)


def test_locked_image_tower_has_no_gradient_and_stays_in_eval_mode():
    model = create_model("rn-test").lock_image()
    model.train()
    assert not model.visual.training and model.transformer.training  # its BatchNorm statistics stay put
    assert not any(p.requires_grad for p in model.visual.parameters())
    images, ids = inputs(model, batch=4)
    features = model(images, ids)
    assert not features[0].requires_grad and features[1].requires_grad  # no image graph is recorded
    before = [b.clone() for b in model.visual.buffers()]
    model(images, ids)
    assert all(torch.equal(a, b) for a, b in zip(before, model.visual.buffers()))


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("build, match", [
    (lambda: create_model("vit-xl"), "unknown arch 'vit-xl'; valid: .*vit-b-32"),
    (lambda: create_model("vit-test", text_arch="huge"), "unknown text_arch 'huge'; valid: openai"),
    (lambda: create_model("vit-test", image_size=36), "image_size 36 is not divisible by patch_size 8"),
    (lambda: create_model("rn-test", image_size=48), "multiple of 32"),
    (lambda: build_model({"arch": "x", "vision": {"kind": "vit"}, "depth": 3}), "unknown CLIPConfig"),
    (lambda: build_model({"arch": "x", "vision": {"kind": "cnn"}}), "unknown vision tower kind"),
    (lambda: create_model("vit-test", loss="hinge"), "unknown loss 'hinge'; valid: softmax, sigmoid"),
])
def test_bad_model_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_unknown_override_is_a_type_error():
    with pytest.raises(TypeError, match="unknown overrides \\['depth'\\]"):
        create_model("vit-test", depth=3)


@pytest.fixture(scope="module")
def tiny_models():
    return {name: create_model(name) for name in TINY}


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 3, 40, 40), (3, 32, 32)])
def test_bad_image_shapes(tiny_models, name, shape):
    model = tiny_models[name]
    S = model.visual.image_size
    shape = tuple(S if s == 32 else s for s in shape)
    with pytest.raises(ValueError, match=f"images must be \\[batch, 3, {S}, {S}\\].*{shape[-1]}"):
        model.encode_image(torch.randn(shape))


@pytest.mark.parametrize("ids, match", [
    (torch.full((2, 77), 49408), "out of range \\[0, 49408\\): got min 49408, max 49408"),
    (torch.full((2, 77), -1), "out of range"),
    (torch.zeros(2, 78, dtype=torch.long), "length 78 but .* context_length is 77"),
    (torch.zeros(77, dtype=torch.long), "\\[batch, length\\], got shape \\(77,\\)"),
    (torch.zeros(2, 77), "integer tensor"),
])
def test_bad_token_ids(tiny_models, ids, match):
    with pytest.raises(ValueError, match=match):
        tiny_models["vit-test"].encode_text(ids)


def test_bad_mask_ratios(tiny_models):
    with pytest.raises(ValueError, match="FLIP masking .* needs a ViT image tower; rn-test"):
        tiny_models["rn-test"].encode_image(torch.randn(2, 3, 64, 64), mask_ratio=0.5)
    with pytest.raises(ValueError, match="mask_ratio must be in \\[0, 1\\), got 1.0"):
        tiny_models["vit-test"].encode_image(torch.randn(2, 3, 32, 32), mask_ratio=1.0)
