"""Image transforms for CLIP training, written by hand on PIL images and torch tensors.

"Scaling (Down) CLIP" (Li, Xie, Cubuk 2024) trains plain CLIP without augmentation (resize, pixels
in [-1, 1]), evaluates with a 0.875 centre crop, and proposes "CLIP + Data Augmentation": crop &
flip, RandAugment (Cubuk et al. 2020) or Stacked RandAugment (Khosla et al. 2020, SupCon:
RandAugment followed by SimCLR's colour distortion). SLIP (Mu et al. 2021) adds two SimCLR views
(Chen et al. 2020) per image. Every one of those transforms is here, as PIL operations.

A transform is a callable `t(img, rng) -> FloatTensor[3, S, S]`. All randomness is drawn from
`rng` (a `random.Random`), never from global generators, so a per-sample seed makes an image's
augmentation reproducible and independent of the number of data-loader workers.
Random semantics follow torchvision where it has the op (RandomResizedCrop's 10 attempts and
centre fallback, ColorJitter's random order); RandAugment uses the RandAugment paper's scale.
"""
import math

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUGMENT_PRESETS = ("none", "flip", "crop", "crop-flip", "randaug", "stacked-randaug", "stacked-randaug-no-color",
                   "simclr")

# SLIP trains its CLIP view with RandomResizedCrop(scale=(0.5, 1)) and no flip (SLIP's main.py): strong
# enough to help in the multi-epoch regime, mild enough that the crop still matches its caption
# (captions often name several objects; SimCLR's 0.08 would cut most of them out). crop-flip adds a flip.
CROP_FLIP_SCALE = (0.5, 1.0)
SIMCLR_SCALE = (0.08, 1.0)
ASPECT_RATIO = (3 / 4, 4 / 3)
GREY_FILL = (128, 128, 128)  # what geometric RandAugment ops expose (the TF reference's value)
# normalisation as (pixel - shift) / scale on 0..255 values; "pm1" maps 0 -> -1 and 255 -> 1 exactly
_NORMALIZE = {"clip": (torch.tensor(CLIP_MEAN).view(3, 1, 1) * 255.0, torch.tensor(CLIP_STD).view(3, 1, 1) * 255.0),
              "pm1": (127.5, 127.5)}
NORMALIZATIONS = tuple(_NORMALIZE)

# --- conversion: any PIL mode -> RGB, RGB -> normalised float tensor ------------------------------

def to_rgb(img):
    """Convert any PIL image to RGB as a viewer shows it: transparent pixels (RGBA, LA, a palette's
    transparency) composited over white; 16-bit integer modes (I;16, I;16B, I;16L and I, which older
    Pillow gives a 16-bit PNG) scaled from 0..65535 and float images (F) from 0..1 to 0..255, where
    PIL's own conversion clips them (a 16-bit mid grey would come out white); CMYK by PIL's formula."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(img).__name__}")
    if img.mode == "RGB":
        return img
    if img.mode == "F" or img.mode.startswith("I"):
        scale = 255.0 if img.mode == "F" else 255 / 65535
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) * scale + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL warns if a palette with transparency goes straight to RGB
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def to_tensor(img, normalize="clip"):
    """RGB PIL image -> FloatTensor[3, H, W]; "clip": CLIP's mean/std, "pm1": pixels in [-1, 1]."""
    shift, scale = _NORMALIZE[normalize]
    pixels = torch.from_numpy(np.asarray(img, dtype=np.float32))  # H, W, 3 (a fresh float copy)
    x = pixels.permute(2, 0, 1).contiguous()  # 3, H, W
    return x.sub_(shift).div_(scale)  # in place: no further copies


# --- crop boxes (PIL boxes: left, top, right, bottom) ---------------------------------------------

def resized_shorter_size(width, height, size):
    """(w, h) after resizing the shorter side to `size`, the longer side truncated (torchvision)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def centre_crop_box(width, height, size):
    """The centred size x size square, with torchvision's rounding."""
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def random_resized_crop_box(width, height, rng, scale=CROP_FLIP_SCALE, ratio=ASPECT_RATIO):
    """torchvision's RandomResizedCrop box: area fraction ~ U(scale), aspect ~ log-U(ratio);
    10 attempts, then the largest centred box whose aspect lies in `ratio`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    image_aspect = width / height
    if image_aspect < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif image_aspect > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


# --- colour ops (factor 1 = unchanged, as PIL's ImageEnhance and torchvision) ---------------------

def adjust_brightness(img, factor):
    return ImageEnhance.Brightness(img).enhance(factor)


def adjust_contrast(img, factor):
    return ImageEnhance.Contrast(img).enhance(factor)


def adjust_saturation(img, factor):
    return ImageEnhance.Color(img).enhance(factor)


def adjust_hue(img, hue_factor):
    """Rotate hue by hue_factor in [-0.5, 0.5] of a turn (PIL's HSV hue is a wrapping uint8)."""
    shift = int(hue_factor * 255) % 256
    if shift == 0:
        return img
    h, s, v = img.convert("HSV").split()
    h = h.point([(i + shift) % 256 for i in range(256)])
    return Image.merge("HSV", (h, s, v)).convert("RGB")


# --- RandAugment ----------------------------------------------------------------------------------
# RandAugment (Cubuk et al. 2020): N ops drawn uniformly with replacement, all at magnitude M.
# M is on the RandAugment paper's scale: 0..10, where 10 is each op's AutoAugment maximum
# (rotate 30 deg, shear 0.3, translate 45% of the side, enhance factor 1 +- 0.9, posterize to 4 bits,
# solarize threshold 0); M > 10 extrapolates, as the paper's EfficientNet settings do. torchvision
# divides the same maxima into 31 bins (its M=30 is our M=10). Strength grows with M for every op
# (the TF reference's posterize and solarize ran backwards). Signed ops flip sign with p=0.5.

RANDAUG_OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
               "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")
RANDAUG_MAX_MAGNITUDE = 10.0
_ENHANCE = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
            "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}
# the ops that change an image's colours (its hue, saturation or tones), which a caption naming colours may
# then contradict: left out by the stacked-randaug-no-color preset
COLOR_OPS = ("autocontrast", "equalize", "solarize", "color", "posterize", "contrast", "brightness")
_GEOMETRIC_MAX = {"rotate": 30.0, "shear_x": 0.3, "shear_y": 0.3, "translate_x": 0.45, "translate_y": 0.45}


def _check_op(name):
    if name not in RANDAUG_OPS:
        raise ValueError(f"unknown RandAugment op {name!r}; valid: {', '.join(RANDAUG_OPS)}")


def randaug_op_value(name, magnitude, sign=1.0):
    """The op's argument at `magnitude`: degrees, shear factor, translate fraction, enhance factor,
    posterize bits or solarize threshold; None for the ops without one."""
    _check_op(name)
    m = magnitude / RANDAUG_MAX_MAGNITUDE
    if name in _GEOMETRIC_MAX:
        return sign * _GEOMETRIC_MAX[name] * m
    if name in _ENHANCE:
        return max(0.0, 1.0 + sign * 0.9 * m)
    if name == "posterize":
        return min(8, max(1, 8 - round(4 * m)))
    if name == "solarize":
        return min(256, max(0, round(256 * (1 - m))))
    return None  # identity, autocontrast, equalize


def apply_randaug_op(img, name, value, fill=GREY_FILL):
    """Apply one RandAugment op with the argument from randaug_op_value. Geometric ops sample the
    nearest neighbour, as torchvision's RandAugment (about 15x faster than bilinear in PIL)."""
    _check_op(name)
    if name in _ENHANCE:
        return _ENHANCE[name](img).enhance(value)
    if name == "rotate":
        return img.rotate(value, resample=Image.NEAREST, fillcolor=fill)
    if name in _GEOMETRIC_MAX:
        # PIL's AFFINE maps each output (x, y) to input (a x + b y + c, d x + e y + f); translate
        # moves right / down by value * side pixels (negative: left / up)
        dx, dy = round(value * img.size[0]), round(value * img.size[1])
        abcdef = {"shear_x": (1, value, 0, 0, 1, 0), "shear_y": (1, 0, 0, value, 1, 0),
                  "translate_x": (1, 0, -dx, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, -dy)}[name]
        return img.transform(img.size, Image.AFFINE, abcdef, Image.NEAREST, fillcolor=fill)
    if name == "solarize":
        return ImageOps.solarize(img, value)  # invert every channel value >= value
    if name == "posterize":
        return ImageOps.posterize(img, value)  # keep the top `value` bits
    if name in ("autocontrast", "equalize"):
        return getattr(ImageOps, name)(img)
    return img  # identity


# --- pipeline steps: step(img, rng) -> img; classes (not closures) so transforms pickle to workers ---

class _Step:
    is_random = True

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ResizeCentreCrop(_Step):
    """Resize the shorter side to `resize` (bicubic), then take the centred size x size square."""
    is_random = False
    INTERPOLATION = Image.Resampling.BICUBIC  # eval JSONs name it (tinyclip.evaluation.preprocessing)

    def __init__(self, resize, size):
        self.resize, self.size = resize, size

    def __call__(self, img, rng=None):
        new_size = resized_shorter_size(*img.size, self.resize)
        if new_size != img.size:
            img = img.resize(new_size, self.INTERPOLATION)
        return img.crop(centre_crop_box(*img.size, self.size))  # PIL pads with black past the edges


class RandomResizedCrop(_Step):
    def __init__(self, size, scale=CROP_FLIP_SCALE, ratio=ASPECT_RATIO):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)

    def __call__(self, img, rng):
        box = random_resized_crop_box(*img.size, rng, self.scale, self.ratio)
        # crop and resample in one pass (PIL resizes the box region straight to size x size; its
        # filter may read pixels just outside the box, where crop-then-resize would clamp)
        return img.resize((self.size, self.size), Image.BICUBIC, box=box)


class RandomHorizontalFlip(_Step):
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img, rng):
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < self.p else img


class RandomGrayscale(_Step):
    def __init__(self, p=0.2):
        self.p = p

    def __call__(self, img, rng):
        return img.convert("L").convert("RGB") if rng.random() < self.p else img  # ITU-R 601 luma


class RandomApply(_Step):
    def __init__(self, step, p):
        self.step, self.p = step, p

    def __call__(self, img, rng):
        return self.step(img, rng) if rng.random() < self.p else img


class RandAugment(_Step):
    """RandAugment (Cubuk et al. 2020): num_ops ops at `magnitude` on the paper's 0..10 scale, drawn from `ops`."""

    def __init__(self, num_ops=2, magnitude=10.0, fill=GREY_FILL, ops=RANDAUG_OPS):
        self.num_ops, self.magnitude, self.fill, self.ops = int(num_ops), float(magnitude), tuple(fill), tuple(ops)
        for name in self.ops:
            _check_op(name)

    def choose_ops(self, rng):
        """The [(op name, argument)] this rng picks; __call__ applies exactly these, in order."""
        chosen = []
        for _ in range(self.num_ops):
            name = rng.choice(self.ops)
            sign = -1.0 if rng.random() < 0.5 else 1.0
            chosen.append((name, randaug_op_value(name, self.magnitude, sign)))
        return chosen

    def __call__(self, img, rng):
        for name, value in self.choose_ops(rng):
            img = apply_randaug_op(img, name, value, self.fill)
        return img


class ColorJitter(_Step):
    """Brightness, contrast, saturation factors ~ U[max(0, 1 - s), 1 + s] and hue ~ U[-h, h],
    applied in a random order (torchvision's semantics); a zero strength skips that op."""

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def choose_ops(self, rng):
        """[(adjust function, factor)] in the order __call__ applies them."""
        order = [0, 1, 2, 3]
        rng.shuffle(order)
        strengths = (self.brightness, self.contrast, self.saturation, self.hue)
        factors = [rng.uniform(max(0.0, 1 - s), 1 + s) for s in strengths[:3]]
        factors.append(rng.uniform(-self.hue, self.hue))
        ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        return [(ops[i], factors[i]) for i in order if strengths[i] > 0]

    def __call__(self, img, rng):
        for adjust, factor in self.choose_ops(rng):
            img = adjust(img, factor)
        return img


class GaussianBlur(_Step):
    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = tuple(sigma)

    def __call__(self, img, rng):
        return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*self.sigma)))  # radius: the std dev


class Compose:
    """A whole transform: convert to RGB, run the steps, convert to a normalised tensor."""

    def __init__(self, steps, normalize="clip"):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.steps, self.normalize = list(steps), normalize
        self.is_random = any(step.is_random for step in self.steps)

    def __call__(self, img, rng=None):
        if rng is None and self.is_random:
            raise TypeError("this transform is random: pass rng=random.Random(seed)")
        img = to_rgb(img)
        for step in self.steps:
            img = step(img, rng)
        return to_tensor(img, self.normalize)

    def __repr__(self):
        lines = "".join(f"\n    {step!r}," for step in self.steps)
        return f"Compose([{lines}\n], normalize={self.normalize!r})"


# --- presets --------------------------------------------------------------------------------------

def _check_size(image_size):
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise TypeError(f"image_size must be an int, got {type(image_size).__name__}")
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")


def make_transform(preset, image_size, normalize="clip"):
    """A training transform by name (AUGMENT_PRESETS):
    none             resize shorter side + centre crop: the paper's plain CLIP preprocessing
    flip             none + horizontal flip (crop-flip without its crop)
    crop             RandomResizedCrop(0.5, 1): SLIP's CLIP view
    crop-flip        RandomResizedCrop(0.5, 1) + horizontal flip
    randaug          crop-flip, then RandAugment(N=2, M=10 of 10)
    stacked-randaug  randaug, then SimCLR colour jitter / grayscale / blur (SupCon)
    stacked-randaug-no-color  stacked-randaug without an op that changes colours (COLOR_OPS, jitter, grayscale)
    simclr           SLIP's SimCLR view: RandomResizedCrop(0.08, 1), colour distortion, flip
    """
    _check_size(image_size)
    crop, flip = RandomResizedCrop(image_size, CROP_FLIP_SCALE), RandomHorizontalFlip()
    # SimCLR's colour distortion as SLIP and SupCon use it. Blur sigma (0.1, 2.0) is in pixels of a
    # 224-px view, so it is scaled with image_size to blur a small view by the same fraction of its width.
    k = image_size / 224
    colour = [RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8), RandomGrayscale(p=0.2),
              RandomApply(GaussianBlur((0.1 * k, 2.0 * k)), p=0.5)]
    presets = {
        "none": [ResizeCentreCrop(image_size, image_size)],
        "flip": [ResizeCentreCrop(image_size, image_size), flip],
        "crop": [crop],
        "crop-flip": [crop, flip],
        "randaug": [crop, flip, RandAugment()],
        "stacked-randaug": [crop, flip, RandAugment(), *colour],
        "stacked-randaug-no-color": [crop, flip, RandAugment(ops=[op for op in RANDAUG_OPS if op not in COLOR_OPS]),
                                     colour[-1]],
        "simclr": [RandomResizedCrop(image_size, SIMCLR_SCALE), *colour, flip],
    }
    if preset not in presets:
        raise ValueError(f"unknown augmentation preset {preset!r}; valid: {', '.join(AUGMENT_PRESETS)}")
    return Compose(presets[preset], normalize)


def eval_size(image_size, crop_ratio=0.875):
    """Shorter side to resize to before the eval centre crop: floor(S / crop_ratio), as timm."""
    if not 0 < crop_ratio <= 1:
        raise ValueError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
    return int(math.floor(image_size / crop_ratio))


def eval_transform(image_size, normalize="clip", crop_ratio=0.875):
    """The paper's evaluation preprocessing: resize shorter side to S / crop_ratio, centre crop S.
    Deterministic: call it as t(img) or t(img, rng)."""
    _check_size(image_size)
    return Compose([ResizeCentreCrop(eval_size(image_size, crop_ratio), image_size)], normalize)
