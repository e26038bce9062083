"""Tests for tinyclip/augment.py: hand-written image transforms and the named presets.

Checked on small hand-made images: flips mirror exactly; grayscale has equal channels; crops stay
in bounds and keep the requested size; RandomResizedCrop's box has an area fraction inside the
scale range and an aspect inside the ratio range (and the known fallback box); "crop" (SLIP's CLIP
view) is crop-flip's crop, never mirrored; normalisation hits
[-1, 1] exactly for "pm1" and the known CLIP mean/std values for a constant image; every preset is
reproducible from its rng alone (same seed -> identical tensor, different seed -> different, global
RNGs neither used nor disturbed) and survives pickling; RandAugment applies exactly the N ops that
`choose_ops` reports; every RandAugment op but identity changes a textured image; solarize,
posterize, hue and the magnitude scale give known answers; the eval transform equals resize to
S / 0.875 then the known centre-crop box; other PIL modes become RGB, and files come out as a
viewer shows them (EXIF orientation applied; 16-bit and float images scaled to 8 bits; palette
transparency, LA and CMYK: known pixels); bad input raises clearly.
"""
import io
import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

from tinyclip import augment as A
from tinyclip.sources import decode_image


def textured(width=48, height=40, seed=0, low=30, high=200):
    """A random RGB texture whose values avoid the extremes (so autocontrast has work to do)."""
    pixels = np.random.default_rng(seed).integers(low, high, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def as_array(img):
    return np.asarray(img, dtype=np.int64)


# --- geometry


def test_hflip_mirrors_exactly():
    img = textured(17, 9)
    flipped = A.RandomHorizontalFlip(p=1.0)(img, random.Random(0))
    assert np.array_equal(as_array(flipped), as_array(img)[:, ::-1])
    assert A.RandomHorizontalFlip(p=0.0)(img, random.Random(0)) is img


def test_grayscale_has_equal_channels():
    grayscale = A.RandomGrayscale(p=1.0)
    gray_img = grayscale(textured(), random.Random(0))
    gray = as_array(gray_img)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    # ITU-R 601 luma: 0.299 * 200 + 0.587 * 50 + 0.114 * 10 = 90.4
    assert grayscale(Image.new("RGB", (2, 2), (200, 50, 10)), random.Random(0)).getpixel((0, 0)) == (90, 90, 90)
    x = A.make_transform("none", 16, normalize="pm1")(gray_img)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


@pytest.mark.parametrize("size", [(300, 20), (20, 300), (37, 101), (5, 5), (1000, 1)])
def test_random_resized_crop_box_in_bounds_and_output_size(size):
    width, height = size
    rng = random.Random(1)
    for scale in [(0.08, 1.0), (0.5, 1.0), (0.9, 1.0)]:
        for _ in range(200):
            left, top, right, bottom = A.random_resized_crop_box(width, height, rng, scale)
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
    img = textured(width, height)
    out = A.RandomResizedCrop(24, (0.08, 1.0))(img, random.Random(3))
    box = A.random_resized_crop_box(width, height, random.Random(3), (0.08, 1.0))
    assert out.size == (24, 24)
    assert np.array_equal(as_array(out), as_array(img.resize((24, 24), Image.BICUBIC, box=box)))


def test_random_resized_crop_area_and_aspect_within_range():
    width, height, scale, ratio = 1000, 800, (0.3, 0.6), (3 / 4, 4 / 3)
    rng = random.Random(0)
    fractions, aspects = [], []
    for _ in range(500):
        left, top, right, bottom = A.random_resized_crop_box(width, height, rng, scale, ratio)
        w, h = right - left, bottom - top
        fractions.append(w * h / (width * height))
        aspects.append(w / h)
    # rounding w and h to integers moves a fraction by < 0.3% on a 1000 x 800 image
    assert min(fractions) >= scale[0] - 0.003 and max(fractions) <= scale[1] + 0.003
    assert min(aspects) >= ratio[0] - 0.01 and max(aspects) <= ratio[1] + 0.01
    assert min(fractions) < 0.33 and max(fractions) > 0.57  # the whole range is sampled
    assert min(aspects) < 0.8 and max(aspects) > 1.25


def test_random_resized_crop_falls_back_to_centre_box():
    # a 1000 x 10 strip: no box of >= 90% of its area has an aspect in [3/4, 4/3], so all 10
    # attempts fail and the fallback is the centred box of aspect 4/3 at full height
    assert A.random_resized_crop_box(1000, 10, random.Random(0), (0.9, 1.0)) == (493, 0, 506, 10)
    # and for the 10 x 1000 strip, full width and h = round(10 / (3/4)) = 13
    assert A.random_resized_crop_box(10, 1000, random.Random(0), (0.9, 1.0)) == (0, 493, 10, 506)
    # h = round(10 / 0.6) = 17, not 16
    assert A.random_resized_crop_box(10, 1000, random.Random(0), (0.9, 1.0), (0.6, 1.0)) == (0, 491, 10, 508)


def test_random_resized_crop_aspect_is_log_uniform_and_retries():
    rng = random.Random(2)
    aspects = []
    for _ in range(1000):
        left, top, right, bottom = A.random_resized_crop_box(1000, 1000, rng, (0.01, 0.02), (1 / 4, 4))
        aspects.append((right - left) / (bottom - top))
    # log-uniform on [1/4, 4] puts half the mass below 1 (uniform would put a fifth there)
    assert 0.45 < np.mean(np.array(aspects) < 1) < 0.55
    # on a square image with scale (0.9, 1) an attempt fits only for aspects near 1 (about one in
    # five); with 10 attempts ~10% fall back, with one attempt ~80% would
    fallbacks = sum(A.random_resized_crop_box(100, 100, rng, (0.9, 1.0)) == (0, 0, 100, 100)
                    for _ in range(300))
    assert fallbacks < 0.5 * 300


def test_crop_is_crop_flips_crop_and_never_mirrored():
    # scale >= 0.5 with an aspect in [3/4, 4/3] keeps the centre of a square image in every crop, so an
    # unflipped crop of a red-left / blue-right image is red on its left edge and blue on its right
    pixels = np.zeros((40, 40, 3), np.uint8)
    pixels[:, :20], pixels[:, 20:] = (255, 0, 0), (0, 0, 255)
    img = Image.fromarray(pixels)
    crop, crop_flip = A.make_transform("crop", 32, "pm1"), A.make_transform("crop-flip", 32, "pm1")
    mirrored = 0
    for seed in range(20):
        x, y = crop(img, random.Random(seed)), crop_flip(img, random.Random(seed))
        assert (x[0, :, 0] > x[2, :, 0]).all() and (x[2, :, -1] > x[0, :, -1]).all(), seed
        assert torch.equal(x, y) or torch.equal(x, y.flip(-1)), seed  # the same crop drawn
        mirrored += not torch.equal(x, y)
    assert 0 < mirrored < 20  # crop-flip flips some of them


def test_resize_and_centre_crop_sizes():
    assert A.resized_shorter_size(400, 300, 64) == (85, 64)  # 64 * 400 / 300 = 85.3, truncated
    assert A.resized_shorter_size(300, 400, 64) == (64, 85)
    assert A.resized_shorter_size(350, 300, 64) == (74, 64)  # 74.7, truncated like torchvision
    assert A.centre_crop_box(85, 64, 64) == (10, 0, 74, 64)  # (85 - 64) / 2 = 10.5 rounds to even
    assert A.centre_crop_box(87, 64, 64) == (12, 0, 76, 64)  # 11.5 rounds to even, upwards
    img = textured(400, 300)
    expected = img.resize((85, 64), Image.BICUBIC).crop((10, 0, 74, 64))
    assert np.array_equal(as_array(A.ResizeCentreCrop(64, 64)(img)), as_array(expected))
    small = textured(85, 64)  # already the right size: cropped only
    assert np.array_equal(as_array(A.ResizeCentreCrop(64, 64)(small)), as_array(small.crop((10, 0, 74, 64))))


def test_eval_transform_is_resize_to_size_over_ratio_then_known_centre_box():
    img = textured(400, 300, seed=3)
    assert A.eval_size(64) == 73 and A.eval_size(224) == 256 and A.eval_size(64, 0.8) == 80
    assert A.eval_size(224, 0.9) == 248  # 248.9, floored as timm does
    # 64 / 0.875 = 73.1 -> shorter side 73, longer int(73 * 4 / 3) = 97; box from (97 - 64) / 2 = 16.5
    # and (73 - 64) / 2 = 4.5, both rounded half to even
    expected = img.resize((97, 73), Image.BICUBIC).crop((16, 4, 80, 68))
    t = A.eval_transform(64, normalize="pm1")
    assert torch.equal(t(img), A.to_tensor(expected, "pm1"))
    assert torch.equal(t(img), t(img, random.Random(5)))  # deterministic, rng optional
    assert A.centre_crop_box(*A.resized_shorter_size(500, 375, 256), 224) == (58, 16, 282, 240)


# --- normalisation


def test_pm1_normalisation_is_exact():
    black_white = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    x = A.to_tensor(black_white, "pm1")
    assert x.dtype == torch.float32 and x.shape == (3, 1, 2)
    assert torch.equal(x[:, 0, 0], torch.full((3,), -1.0)) and torch.equal(x[:, 0, 1], torch.ones(3))
    y = A.make_transform("randaug", 32, normalize="pm1")(textured(seed=1), random.Random(0))
    assert y.min() >= -1.0 and y.max() <= 1.0


def test_clip_normalisation_maps_constant_image_to_known_value():
    x = A.to_tensor(Image.new("RGB", (4, 3), (255, 128, 0)), "clip")
    expected = [(255 / 255 - 0.48145466) / 0.26862954, (128 / 255 - 0.4578275) / 0.26130258,
                (0 / 255 - 0.40821073) / 0.27577711]
    assert x.shape == (3, 3, 4)
    for channel in range(3):
        assert torch.allclose(x[channel], torch.full((3, 4), expected[channel]), atol=1e-6)


# --- presets: shape, determinism, independence from global RNGs, pickling


@pytest.mark.parametrize("preset", A.AUGMENT_PRESETS)
@pytest.mark.parametrize("normalize", A.NORMALIZATIONS)
def test_preset_is_reproducible_from_rng_alone(preset, normalize):
    t = A.make_transform(preset, 32, normalize=normalize)
    img = textured(57, 43, seed=2)
    first = t(img, random.Random(123))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)  # global RNGs must not matter
    again = t(img, random.Random(123))
    assert first.shape == (3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, again)
    others = [t(img, random.Random(seed)) for seed in range(4)]
    if preset == "none":
        assert all(torch.equal(first, other) for other in others)
    elif preset == "flip":  # two outcomes only: the image or its mirror
        others += [t(img, random.Random(seed)) for seed in range(4, 20)]
        assert all(torch.equal(first, other) or torch.equal(first.flip(-1), other) for other in others)
        assert any(not torch.equal(first, other) for other in others)
    else:
        assert not any(torch.equal(first, other) for other in others)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    t(img, random.Random(7))
    assert random.getstate() == random.Random(9).getstate()  # untouched by the transform
    assert np.random.randint(1 << 30) == np.random.RandomState(9).randint(1 << 30)
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(9)))
    restored = pickle.loads(pickle.dumps(t))  # data-loader workers may receive it by pickling
    assert torch.equal(restored(img, random.Random(123)), first)


def test_presets_are_made_of_the_documented_steps():
    def steps(preset):
        return [repr(step) for step in A.make_transform(preset, 224).steps]

    crop_flip = ["RandomResizedCrop(size=224, scale=(0.5, 1.0), ratio=(0.75, 1.3333333333333333))",
                 "RandomHorizontalFlip(p=0.5)"]
    randaug = f"RandAugment(num_ops=2, magnitude=10.0, fill=(128, 128, 128), ops={A.RANDAUG_OPS!r})"
    shape_ops = tuple(op for op in A.RANDAUG_OPS if op not in A.COLOR_OPS)
    colour = ["RandomApply(step=ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1), p=0.8)",
              "RandomGrayscale(p=0.2)", "RandomApply(step=GaussianBlur(sigma=(0.1, 2.0)), p=0.5)"]
    assert steps("none") == ["ResizeCentreCrop(resize=224, size=224)"]
    assert steps("flip") == steps("none") + crop_flip[1:]
    assert steps("crop") == crop_flip[:1]
    assert steps("crop-flip") == crop_flip
    assert steps("randaug") == crop_flip + [randaug]
    assert steps("stacked-randaug") == crop_flip + [randaug] + colour
    assert steps("stacked-randaug-no-color") == crop_flip + [randaug.replace(repr(A.RANDAUG_OPS), repr(shape_ops)),
                                                             colour[-1]]
    simclr_crop = "RandomResizedCrop(size=224, scale=(0.08, 1.0), ratio=(0.75, 1.3333333333333333))"
    assert steps("simclr") == [simclr_crop] + colour + ["RandomHorizontalFlip(p=0.5)"]
    assert [repr(s) for s in A.eval_transform(224).steps] == ["ResizeCentreCrop(resize=256, size=224)"]
    blur = A.make_transform("simclr", 112).steps[3].step
    assert blur.sigma == pytest.approx((0.05, 1.0))  # sigma scales with the view size


def test_unknown_preset_and_bad_arguments():
    with pytest.raises(ValueError, match="none, flip, crop, crop-flip, randaug, stacked-randaug, stacked-randaug-no-color, "
                                         "simclr"):
        A.make_transform("autoaugment", 32)
    with pytest.raises(ValueError, match="normalize"):
        A.make_transform("none", 32, normalize="imagenet")
    with pytest.raises(TypeError, match="image_size"):
        A.make_transform("none", 32.0)
    with pytest.raises(ValueError, match="image_size"):
        A.eval_transform(0)
    with pytest.raises(TypeError, match="rng"):
        A.make_transform("crop-flip", 32)(textured())
    with pytest.raises(TypeError, match="PIL"):
        A.make_transform("none", 32)(np.zeros((8, 8, 3), np.uint8), random.Random(0))


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "CMYK", "1", "I"])
def test_other_modes_become_rgb(mode):
    img = textured(30, 20).convert(mode)
    x = A.make_transform("stacked-randaug", 16)(img, random.Random(0))
    assert x.shape == (3, 16, 16)
    if mode in ("L", "1"):
        y = A.make_transform("none", 16, "pm1")(img, random.Random(0))
        assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])


def test_transparency_composites_over_white():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert A.to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert A.to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)


def decoded(image, **save_options):
    """`image` written to a file in memory and read back as training reads files."""
    buffer = io.BytesIO()
    image.save(buffer, **save_options)
    return decode_image(buffer.getvalue())


def close(pixel, expected, tolerance=1):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


def test_high_depth_images_scale_to_8_bits():
    """A 16-bit value v shows as v * 255 / 65535 (PIL's own conversion clips it: mid grey came out white)."""
    values = np.array([[0, 4112, 32768, 65535]], dtype=np.uint16)  # 4112 = 16 * 257
    png = decoded(Image.fromarray(values), format="PNG")
    assert png.mode == "I;16"
    assert [A.to_rgb(png).getpixel((x, 0)) for x in range(4)] == [(0,) * 3, (16,) * 3, (128,) * 3, (255,) * 3]
    big_endian = Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes())
    as_int32 = Image.fromarray(values.astype(np.int32))  # mode I: what older Pillow gives a 16-bit PNG
    floats = Image.fromarray(values.astype(np.float32) / 65535)  # mode F: floats in 0..1
    for image in (big_endian, as_int32, floats):
        assert [A.to_rgb(image).getpixel((x, 0))[0] for x in range(4)] == [0, 16, 128, 255], image.mode
    grey = A.make_transform("none", 4, "pm1")(Image.fromarray(np.full((8, 8), 32768, np.uint16)))
    assert torch.allclose(grey, torch.full((3, 4, 4), 0.5 / 127.5))  # (128 - 127.5) / 127.5, not 1


def test_exif_orientation_is_applied_when_decoding():
    """Orientation 6 (rotate 90 degrees clockwise to show) puts the stored left half on top; 8 at the bottom."""
    stored = Image.new("RGB", (16, 8), (255, 0, 0))  # left half red, right half blue
    stored.paste((0, 0, 255), (8, 0, 16, 8))
    for orientation, top, bottom in ((6, "red", "blue"), (8, "blue", "red")):
        exif = Image.Exif()
        exif[0x0112] = orientation
        image = decoded(stored, format="JPEG", quality=95, exif=exif)
        assert image.size == (8, 16) and image.format == "JPEG"
        colour = lambda xy: "red" if image.getpixel(xy)[0] > 200 > image.getpixel(xy)[2] else "blue"
        assert (colour((4, 3)), colour((4, 12))) == (top, bottom)


def test_palette_la_and_cmyk_files_become_rgb_as_shown():
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0])
    palette.putdata([0, 1, 2])
    opaque = decoded(palette, format="PNG")
    assert [A.to_rgb(opaque).getpixel((x, 0)) for x in range(3)] == [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    see_through = decoded(palette, format="PNG", transparency=bytes([0, 128, 255]))  # alpha per palette entry
    assert see_through.mode == "P" and "transparency" in see_through.info
    shown = [A.to_rgb(see_through).getpixel((x, 0)) for x in range(3)]
    # over white: alpha * colour + (1 - alpha) * 255, alpha = 0, 128/255, 1
    assert shown[0] == (255, 255, 255) and close(shown[1], (127, 127, 255)) and shown[2] == (0, 255, 0)
    grey_alpha = decoded(Image.new("LA", (2, 2), (0, 128)), format="PNG")
    assert close(A.to_rgb(grey_alpha).getpixel((0, 0)), (127, 127, 127))
    cmyk = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # pure magenta + yellow: red
    cmyk.paste((128, 0, 0, 128), (8, 0, 16, 8))
    jpeg = decoded(cmyk, format="JPEG", quality=95)
    assert jpeg.mode == "CMYK"
    # a viewer without colour management: R = (255 - C) * (255 - K) / 255, and so on
    assert close(A.to_rgb(jpeg).getpixel((3, 4)), (255, 0, 0), 4)
    assert close(A.to_rgb(jpeg).getpixel((12, 4)), (63, 127, 127), 4)


# --- colour ops


def test_colour_ops_known_answers():
    red = Image.new("RGB", (2, 2), (255, 0, 0))
    assert A.adjust_hue(red, 1 / 3).getpixel((0, 0)) == (0, 255, 0)
    assert A.adjust_hue(red, 0.0) is red
    assert A.adjust_brightness(textured(), 0.0).getextrema() == ((0, 0),) * 3
    img = textured()
    assert np.array_equal(as_array(A.ColorJitter(0, 0, 0, 0)(img, random.Random(0))), as_array(img))
    jittered = {A.ColorJitter()(img, random.Random(s)).tobytes() for s in range(5)}
    assert len(jittered) == 5


def test_colour_jitter_random_order_and_ranges():
    jitter, img = A.ColorJitter(0.4, 0.3, 0.2, 0.1), textured(seed=7)
    orders = set()
    for seed in range(300):
        chosen = jitter.choose_ops(random.Random(seed))
        orders.add(tuple(op.__name__ for op, _ in chosen))
        factors = {op.__name__: f for op, f in chosen}
        assert 0.6 <= factors["adjust_brightness"] <= 1.4 and 0.7 <= factors["adjust_contrast"] <= 1.3
        assert 0.8 <= factors["adjust_saturation"] <= 1.2 and -0.1 <= factors["adjust_hue"] <= 0.1
        if seed < 10:  # __call__ applies exactly these, in this order
            expected = img
            for op, factor in chosen:
                expected = op(expected, factor)
            assert np.array_equal(as_array(jitter(img, random.Random(seed))), as_array(expected))
    assert len(orders) == 24  # every permutation of the four ops occurs
    brightness_only = A.ColorJitter(0.4, 0, 0, 0).choose_ops(random.Random(0))
    assert [op.__name__ for op, _ in brightness_only] == ["adjust_brightness"]


def test_gaussian_blur_smooths():
    img = textured(64, 64)
    assert as_array(A.GaussianBlur((2.0, 2.0))(img, random.Random(0))).std() < 0.5 * as_array(img).std()


def grey_row(values):
    return Image.fromarray(np.array([[[v] * 3 for v in values]], dtype=np.uint8))


def test_solarize_known_answer():
    row = grey_row([0, 100, 127, 128, 200, 255])
    assert as_array(A.apply_randaug_op(row, "solarize", 128))[0, :, 0].tolist() == [0, 100, 127, 127, 55, 0]
    assert A.randaug_op_value("solarize", 0) == 256  # nothing inverted
    assert A.randaug_op_value("solarize", 5) == 128
    assert A.randaug_op_value("solarize", 10) == 0  # full negative


def test_posterize_known_answer():
    row = grey_row([0, 15, 16, 200, 255])
    assert as_array(A.apply_randaug_op(row, "posterize", 4))[0, :, 0].tolist() == [0, 0, 16, 192, 240]
    assert as_array(A.apply_randaug_op(row, "posterize", 1))[0, :, 0].tolist() == [0, 0, 0, 128, 128]
    assert [A.randaug_op_value("posterize", m) for m in (0, 4, 5, 10, 30)] == [8, 6, 6, 4, 1]


# --- RandAugment


def test_randaug_magnitude_scale():
    assert A.randaug_op_value("rotate", 10, -1.0) == pytest.approx(-30.0)
    assert A.randaug_op_value("shear_x", 5) == pytest.approx(0.15)
    assert A.randaug_op_value("translate_y", 10, -1.0) == pytest.approx(-0.45)
    assert A.randaug_op_value("brightness", 10, -1.0) == pytest.approx(0.1)
    assert A.randaug_op_value("contrast", 10, 1.0) == pytest.approx(1.9)
    assert A.randaug_op_value("color", 20, -1.0) == 0.0  # extrapolated, clamped at 0
    assert A.randaug_op_value("equalize", 10) is None
    with pytest.raises(ValueError, match="translate_x"):
        A.randaug_op_value("cutout", 10)


def test_randaug_applies_exactly_the_chosen_ops():
    img = textured(seed=4)
    seen, signs = set(), set()
    for num_ops in (0, 1, 2, 3):
        augment = A.RandAugment(num_ops=num_ops, magnitude=10)
        for seed in range(30):
            chosen = augment.choose_ops(random.Random(seed))
            assert len(chosen) == num_ops
            seen.update(name for name, _ in chosen)
            signs.update(value > 0 for name, value in chosen if name in ("rotate", "shear_x", "shear_y"))
            expected = img
            for name, value in chosen:
                expected = A.apply_randaug_op(expected, name, value)
            assert np.array_equal(as_array(augment(img, random.Random(seed))), as_array(expected))
    assert seen == set(A.RANDAUG_OPS)  # every op is drawn
    assert signs == {True, False}  # signed ops come in both directions
    assert A.RandAugment(num_ops=0)(img, random.Random(0)) is img


@pytest.mark.parametrize("name", A.RANDAUG_OPS)
def test_each_randaug_op_changes_a_textured_image(name):
    img = textured(seed=5)
    for magnitude in (5, 10):
        for sign in (-1.0, 1.0):
            out = A.apply_randaug_op(img, name, A.randaug_op_value(name, magnitude, sign))
            assert out.size == img.size and out.mode == "RGB"
            changed = not np.array_equal(as_array(out), as_array(img))
            assert changed == (name != "identity"), (name, magnitude, sign)


def test_affine_ops_known_geometry():
    img = textured(20, 10, seed=6)
    arr = as_array(img)
    moved = as_array(A.apply_randaug_op(img, "translate_x", 0.25, fill=(0, 0, 0)))  # 5 pixels right
    assert np.array_equal(moved[:, 5:], arr[:, :-5]) and (moved[:, :5] == 0).all()
    moved = as_array(A.apply_randaug_op(img, "translate_y", -0.3, fill=(0, 0, 0)))  # 3 pixels up
    assert np.array_equal(moved[:-3], arr[3:]) and (moved[-3:] == 0).all()
    assert np.array_equal(as_array(A.apply_randaug_op(textured(8, 8), "rotate", 0.0)), as_array(textured(8, 8)))


def test_the_no_color_preset_keeps_a_solid_colour_on_the_line_to_the_fill_grey():
    """stacked-randaug-no-color changes geometry and sharpness only: a solid red image comes out as red, the grey
    that rotations and shears fill with, and their blends (crop resampling and blur mix the two), never another
    hue, except for the halo that sharpening draws along the edges between them; stacked-randaug with its colour
    ops does leave that line."""
    red, grey = np.array([215.0, 35.0, 35.0]), np.array(A.GREY_FILL, dtype=float)
    image = Image.new("RGB", (48, 48), tuple(int(c) for c in red))

    def off_the_line(preset, seed):  # the share of output pixels more than 3 levels (of 255) from the segment
        out = A.make_transform(preset, 32, normalize="pm1")(image, random.Random(seed))  # 3, 32, 32 in [-1, 1]
        pixels = ((out.permute(1, 2, 0).reshape(-1, 3) + 1) * 127.5).double().numpy()
        t = np.clip((pixels - red) @ (grey - red) / ((grey - red) @ (grey - red)), 0, 1)
        return (np.abs(pixels - (red + t[:, None] * (grey - red))).max(axis=1) > 3).mean()

    assert max(off_the_line("stacked-randaug-no-color", seed) for seed in range(40)) < 0.1
    assert max(off_the_line("stacked-randaug", seed) for seed in range(40)) > 0.9
