"""How tinyclip.synthetic's scenes become pixels: the shapes, the faint background textures, and the styles
that redraw a scene under a distribution shift for robustness evaluation, each held out from training as the
paper's robustness sets are from ImageNet (its robustness number is the unweighted mean over them):

- "photo": the training distribution;
- "sketch" (as ImageNet-Sketch): outlines in the object's colour on white, no fill, no texture;
- "texture" (as ImageNet-R's renditions): striped fills on a background family never trained on;
- "corrupt" (as ImageNet-C): Gaussian noise, Gaussian blur or heavy JPEG, one per image;
- "hard" (as ImageNet-A): smaller, faded objects on a background of double contrast.

A scene is synthetic._scene's (objects with centre, radius, rotation and colour as fractions of the side,
and a background); every drawing is deterministic, the styles' randomness coming from the rng passed in.
"""
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

STYLES = ("photo", "sketch", "texture", "corrupt", "hard")
SUPERSAMPLE = 2  # draw at 2x and box-downsample: anti-aliased edges for little cost

# --- shapes and backgrounds --------------------------------------------------------------------------------------

_W = 0.34  # half-width of a cross's arm
UNIT_SHAPES = {  # y grows downwards; each stays within [-1, 1] on both axes even when rotated
    "square": [(-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78)],
    "diamond": [(0, -1), (0.75, 0), (0, 1), (-0.75, 0)],
    "triangle": [(0, -0.9), (0.85, 0.72), (-0.85, 0.72)],
    "star": [((1, 0.45)[k % 2] * math.sin(math.pi * k / 5), -(1, 0.45)[k % 2] * math.cos(math.pi * k / 5))
             for k in range(10)],  # five points, inner radius 0.45
    "cross": [(x * 0.95, y * 0.95) for x, y in [
        (-_W, -1), (_W, -1), (_W, -_W), (1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1), (-_W, _W),
        (-1, _W), (-1, -_W), (-_W, -_W)]],
}


def _draw_background(draw, side, background, ink=None):
    kind, tone = background["kind"], background["tone"]
    if kind == "plain":
        return
    ink = ink or tuple(c - 32 for c in tone)  # faint: texture, never a competing object
    period = max(4, round(background["period"] * side))
    offset = round(background["phase"] * period) - period
    if kind == "striped":
        half = period // 2
        for t in range(offset, 2 * side, period):
            if background["direction"] == "horizontal":
                draw.rectangle([0, t, side, t + half - 1], fill=ink)
            elif background["direction"] == "vertical":
                draw.rectangle([t, 0, t + half - 1, side], fill=ink)
            else:
                draw.line([(t - side, 0), (t, side)], fill=ink, width=half)
    elif kind == "dotted":
        dot = period * 0.18
        for y in range(offset + period // 2, side + period, period):
            for x in range(offset + period // 2, side + period, period):
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=ink)
    elif kind == "concentric":  # the texture style's family: rings around a point that the phase places
        centre = background["phase"] * side
        for radius in range(period, 2 * side, period):
            draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], outline=ink,
                         width=max(1, period // 3))
    else:  # checkered
        for i, y in enumerate(range(offset, side, period)):
            for x in range(offset + (i % 2) * period, side, 2 * period):
                draw.rectangle([x, y, x + period - 1, y + period - 1], fill=ink)


# The shifted styles' settings (fractions of the side where they are lengths).
SKETCH_LINE = 0.03  # outline width, of the side (1 px at 32 px)
RING_HOLE = 0.62  # a sketched ring is two circles: its inner edge, of the radius
TEXTURE_TONES = ((236, 226, 246), (226, 242, 228), (246, 236, 222))  # lavender, mint, sand: not in training
TEXTURE_PERIOD = 0.07  # stripes inside an object
HARD_RADIUS, HARD_FADE, HARD_INK = 0.6, 0.45, 64  # of the radius; blend towards the background; background contrast
NOISE_SIGMA, BLUR_RADIUS, JPEG_QUALITY = 40.0, 0.025, 8  # noise in 0-255 levels; blur of the side


def _outline(obj, cx, cy, r):
    """The object's polygon (None for the round shapes), rotated, scaled to radius r and moved to (cx, cy)."""
    if obj["shape"] in ("circle", "ring"):
        return None
    a = math.radians(obj["rotation"])
    cos, sin = math.cos(a), math.sin(a)
    return [(cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos)) for x, y in UNIT_SHAPES[obj["shape"]]]


def _draw_object(draw, obj, side, rgb, radius_scale=1.0, line=None):
    """One object, filled (line=None) or as outlines `line` pixels wide."""
    cx, cy, r = obj["x"] * side, obj["y"] * side, obj["radius"] * side * radius_scale
    box, points = [cx - r, cy - r, cx + r, cy + r], _outline(obj, cx, cy, r)
    if line:
        draw.ellipse(box, outline=rgb, width=line) if points is None else draw.polygon(points, outline=rgb, width=line)
        if obj["shape"] == "ring":
            hole = RING_HOLE * r
            draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], outline=rgb, width=line)
    elif obj["shape"] == "circle":
        draw.ellipse(box, fill=rgb)
    elif obj["shape"] == "ring":
        draw.ellipse(box, outline=rgb, width=max(1, round(0.38 * r)))
    else:
        draw.polygon(points, fill=rgb)


def _stripes(rgb, side, period, vertical):
    """A side x side image of the colour striped with its tint (half-way to white)."""
    tint = tuple((c + 255) // 2 for c in rgb)
    image = Image.new("RGB", (side, side), rgb)
    draw = ImageDraw.Draw(image)
    for t in range(0, side, 2 * period):
        draw.rectangle([t, 0, t + period - 1, side] if vertical else [0, t, side, t + period - 1], fill=tint)
    return image


def _corrupt(image, rng):
    """One of ImageNet-C's kinds, chosen by rng: Gaussian noise, Gaussian blur or JPEG."""
    kind = rng.choice(("noise", "blur", "jpeg"))
    if kind == "noise":
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, NOISE_SIGMA, (image.height, image.width, 3))
        return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS * image.width))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def render(objects, background, image_size, style="photo", rng=None):
    """The scene at image_size pixels in `style` (rng: the style's own randomness)."""
    side = image_size * SUPERSAMPLE
    if style == "sketch":
        background = {**background, "kind": "plain", "tone": (255, 255, 255)}
    elif style == "texture":
        background = {**background, "kind": "concentric", "tone": rng.choice(TEXTURE_TONES)}
    image = Image.new("RGB", (side, side), background["tone"])
    draw = ImageDraw.Draw(image)
    _draw_background(draw, side, background, tuple(c - HARD_INK for c in background["tone"]) if style == "hard" else None)
    for obj in objects:
        if style == "sketch":
            _draw_object(draw, obj, side, obj["rgb"], line=max(1, round(SKETCH_LINE * side)))
        elif style == "texture":
            mask = Image.new("L", (side, side), 0)
            _draw_object(ImageDraw.Draw(mask), obj, side, 255)
            image.paste(_stripes(obj["rgb"], side, max(2, round(TEXTURE_PERIOD * side)), rng.random() < 0.5),
                        mask=mask)
        elif style == "hard":
            faded = tuple(round((1 - HARD_FADE) * c + HARD_FADE * t) for c, t in zip(obj["rgb"], background["tone"]))
            _draw_object(draw, obj, side, faded, radius_scale=HARD_RADIUS)
        else:
            _draw_object(draw, obj, side, obj["rgb"])
    image = image.reduce(SUPERSAMPLE)
    return _corrupt(image, rng) if style == "corrupt" else image
