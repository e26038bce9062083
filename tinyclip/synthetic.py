"""The built-in captioned-image generator: tinyclip's default training and evaluation dataset.

"Scaling (Down) CLIP" (Li, Xie, Cubuk; arXiv 2404.08197, TMLR 2024) studies CLIP along three axes:
data quantity, data quality and compute. Its data (WebLI) is private, and any web-scale set is far
too big for a CPU smoke run, so tinyclip ships a procedural stand-in:

- no download, no files: every sample is drawn with Pillow's ImageDraw when it is first asked for
  (and the last few thousand kept per process, since epochs ask again);
- deterministic: a sample is a pure function of (seed, split, index), through its own
  `random.Random` seeded by a stable integer mix (never the global RNG, never `hash()`), so any
  DataLoader worker renders the same bytes, and the object pickles as a few plain fields;
- learnable by tiny models in minutes: few, salient concepts (7 shapes, 7 well-separated colours,
  2 sizes, 1-3 copies, 9 positions, 4 faint background textures) on a 64 px canvas;
- the quality axis: `noise` gives a fraction of pairs a wrong caption (another scene's, or the right
  scene with one attribute changed), the way low-quality web alt-text is, so filtering by image-text
  similarity (the paper's top-40% finding) can be tried for real. The noisy subset is nested: a
  sample that is noisy at noise=0.2 is noisy at every higher level, and images never depend on noise.

The `train` and `val` splits draw from different seed streams of the same attribute distribution.
`style` renders the same scenes under a distribution shift (tinyclip/render.py draws them: "photo" is
the training distribution; sketch, texture, corrupt and hard stand in for ImageNet-Sketch, -R, -C and
-A), held out from training as the paper's robustness sets are from ImageNet.

`color_words=0` gives captions that never name a colour, for testing whether colour-changing
augmentation hurts because the text names the colours it changes (zero-shot then uses `label_set="shape"`).

Each image has several faithful phrasings (`captions`, five, as COCO has for retrieval), and the
zero-shot label sets (`label_set`) describe the main object with words the captions use. Every
vocabulary word starts with a consonant, so a template "a {}." is always grammatical.
"""
import functools
import math
import operator
import random

from tinyclip.render import STYLES, render

# --- vocabulary ----------------------------------------------------------------------------------

SHAPES = ("circle", "ring", "square", "diamond", "triangle", "star", "cross")
PLURALS = {"cross": "crosses"}  # every other shape takes a plain "s"
COLORS = {  # far apart in RGB, and none close to the light neutral backgrounds
    "red": (215, 35, 35), "yellow": (240, 200, 20), "green": (40, 155, 60), "blue": (35, 75, 215),
    "purple": (135, 50, 185), "pink": (250, 115, 190), "black": (25, 25, 25),
}
SIZES = ("small", "large")
COUNTS = (1, 2, 3)
POSITIONS = ("top left", "top", "top right", "left", "centre", "right",
             "bottom left", "bottom", "bottom right")  # a 3x3 grid, row-major
BACKGROUNDS = ("plain", "striped", "dotted", "checkered")
SPLITS = {"train": 0, "val": 1}
DEFAULT_SIZES = {"train": 100_000, "val": 2_000}
CAPTIONS_PER_IMAGE = 5

COUNT_WORDS = {1: ("a", "a", "one", "a single"), 2: ("two", "two", "a pair of"), 3: ("three",)}
SIZE_WORDS = {"small": ("small", "small", "little", "tiny"), "large": ("large", "large", "big")}
BACKGROUND_WORDS = {"plain": ("plain", "blank"), "striped": ("striped",), "dotted": ("dotted", "polka-dot", "spotted"),
                    "checkered": ("checkered", "checkerboard")}
POSITION_PHRASES = {
    **{p: (f"at the {p}", f"in the {p} corner") for p in ("top left", "top right", "bottom left", "bottom right")},
    **{p: (f"at the {p}", f"near the {p}") for p in ("top", "bottom")},
    **{p: (f"on the {p}", f"on the {p} side") for p in ("left", "right")},
    "centre": ("in the centre", "in the middle"),
}
PREFIXES = ("", "", "a photo of ", "an image of ", "a picture of ", "a drawing of ", "there is ")

# Geometry as fractions of the image side, so every image_size draws the same scene.
RADIUS = {"small": 0.125, "large": 0.23}  # an upper bound: drawn radii are 90-100% of it
CELL_CENTRES = (0.2, 0.5, 0.8)
JITTER = 0.04
GAP = 0.03  # minimum clearance between objects
COUNT_WEIGHTS = (2, 1, 1)  # a single object half the time, so positions get described often
SECOND_OBJECT_P = 0.25  # chance of a second, distinct (always small) object
MISMATCH_SHARE = 0.5  # of the noisy pairs; the rest are 'partial' (one attribute changed)
PARTIAL_ATTRIBUTES = {"shape": SHAPES, "color": tuple(COLORS), "count": COUNTS, "size": SIZES}  # and their values
BACKGROUND_TONES = ((246, 246, 246), (226, 226, 226), (240, 232, 214), (222, 230, 238))

_SCENE_STREAM, _NOISE_STREAM, _CAPTION_STREAM, _STYLE_STREAM = 1, 2, 3, 4
_MASK64 = (1 << 64) - 1


# --- deterministic randomness ---------------------------------------------------------------------

def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _stream(seed, split, index, stream):
    """A random.Random seeded by a stable mix of (seed, split, index, stream): no hash(), so the same everywhere."""
    h = 0
    for part in (seed, SPLITS[split], index, stream):
        h = _splitmix64(h ^ (part & _MASK64))
    return random.Random(h)


# --- scenes ---------------------------------------------------------------------------------------

def _sample_attributes(rng):
    """The attributes a caption can state: the main object (repeated `count` times) and scene."""
    shape, color, size = rng.choice(SHAPES), rng.choice(tuple(COLORS)), rng.choice(SIZES)
    count = rng.choices(COUNTS, weights=COUNT_WEIGHTS)[0]
    position = rng.choice(POSITIONS) if count == 1 else None  # only a single object has a place
    background = rng.choice(BACKGROUNDS)
    second = None
    if rng.random() < SECOND_OBJECT_P:
        second = {"shape": rng.choice([s for s in SHAPES if s != shape]),
                  "color": rng.choice([c for c in COLORS if c != color]), "size": "small"}
    return {"shape": shape, "color": color, "size": size, "count": count, "position": position,
            "background": background, "second": second}


def _truth(seed, split, index):
    """The true attributes, and the rng that goes on to lay out and colour the scene."""
    rng = _stream(seed, split, index, _SCENE_STREAM)
    return _sample_attributes(rng), rng


def _cell_centre(position):
    row, col = divmod(POSITIONS.index(position), 3)
    return CELL_CENTRES[col], CELL_CENTRES[row]


def _layout(radii, position, rng):
    """Centres (fractions of the side) for objects of these radii, the first in the cell `position`
    names if it is not None, the rest in random other cells: no two overlap."""

    def place(cell, r):  # the cell's centre, jittered, then the whole object kept inside the canvas
        x, y = _cell_centre(cell)
        x, y = x + rng.uniform(-JITTER, JITTER), y + rng.uniform(-JITTER, JITTER)
        return min(max(x, r), 1 - r), min(max(y, r), 1 - r)

    fixed = [place(position, radii[0])] if position else []
    free = [p for p in POSITIONS if p != position]
    for _ in range(30):
        cells = rng.sample(free, len(radii) - len(fixed))
        centres = fixed + [place(c, r) for c, r in zip(cells, radii[len(fixed):])]
        if all(math.dist(centres[i], centres[j]) >= radii[i] + radii[j] + GAP
               for i in range(len(centres)) for j in range(i)):
            return centres
    # Rare fallback, always valid: the remaining objects go to corners, farthest first.
    near, far = RADIUS["large"], 1 - RADIUS["large"]
    corners = [(near, near), (far, near), (near, far), (far, far)]
    if fixed:
        corners.sort(key=lambda c: -math.dist(c, fixed[0]))
        return fixed + corners[:len(radii) - 1]
    rng.shuffle(corners)
    return corners[:len(radii)]


def _scene(attrs, rng):
    """Everything needed to draw: objects with colour/rotation jitter and the background pattern."""
    kinds = [(attrs["shape"], attrs["color"], attrs["size"])] * attrs["count"]
    if attrs["second"]:
        kinds.append((attrs["second"]["shape"], attrs["second"]["color"], "small"))
    objects = []
    centres = _layout([RADIUS[size] for _, _, size in kinds], attrs["position"], rng)
    for (shape, color, size), (x, y) in zip(kinds, centres):
        rgb = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in COLORS[color])
        radius = RADIUS[size] * rng.uniform(0.9, 1.0)
        rotation = 0.0 if shape in ("circle", "ring") else rng.uniform(-12, 12)
        objects.append({"shape": shape, "color": color, "size": size, "x": x, "y": y,
                        "radius": radius, "rotation": rotation, "rgb": rgb})
    background = {"kind": attrs["background"], "tone": rng.choice(BACKGROUND_TONES),
                  "period": rng.choice((0.125, 0.16, 0.2)), "phase": rng.random(),
                  "direction": rng.choice(("horizontal", "vertical", "diagonal"))}
    return objects, background


# --- captions -------------------------------------------------------------------------------------

def _noun_phrase(rng, shape, color, size, count, with_color, with_size):
    words = [rng.choice(COUNT_WORDS[count])]
    if with_size:
        words.append(rng.choice(SIZE_WORDS[size]))
    noun = shape if count == 1 else PLURALS.get(shape, shape + "s")
    if with_color and rng.random() < 0.25:  # "three stars in blue"
        return " ".join(words + [noun, "in", color])
    return " ".join(words + ([color] if with_color else []) + [noun])


def _caption(attrs, rng, forced=None, color_words=True):
    """One faithful phrasing of `attrs`; the attribute named `forced` is always stated, and colours only
    with color_words."""
    main = _noun_phrase(rng, attrs["shape"], attrs["color"], attrs["size"], attrs["count"],
                        (forced == "color" or rng.random() < 0.8) and color_words,
                        forced == "size" or rng.random() < 0.5)
    if attrs["position"] and attrs["count"] == 1 and rng.random() < 0.5:
        main += " " + rng.choice(POSITION_PHRASES[attrs["position"]])
    texture = rng.choice(BACKGROUND_WORDS[attrs["background"]]) if rng.random() < 0.35 else None
    background_first = texture is not None and rng.random() < 0.3  # "a striped background with ..."
    second = attrs["second"]
    if second and rng.random() < 0.75:
        joins = (" and ", ", and ") if background_first else (" and ", " with ", ", and ")
        main += rng.choice(joins) + _noun_phrase(
            rng, second["shape"], second["color"], "small", 1, rng.random() < 0.8 and color_words, rng.random() < 0.5)
    if background_first:
        text = rng.choice(("", "a photo of ", "an image of ")) + f"a {texture} background with {main}"
    elif texture:
        text = f"{main} {rng.choice(('on', 'against'))} a {texture} background"
    else:
        prefix = rng.choice(PREFIXES)
        text = ("there are " if prefix == "there is " and attrs["count"] > 1 else prefix) + main
    return text + rng.choice(("", "."))


def _described(seed, split, noise, index, true):
    """(noise kind, attributes the caption states, attribute forced into every phrasing)."""
    rng = _stream(seed, split, index, _NOISE_STREAM)
    noisy, kind_draw = rng.random() < noise, rng.random()  # drawn whatever noise is
    if not noisy:
        return "clean", true, None
    if kind_draw < MISMATCH_SHARE:  # another scene's caption: a different main object
        while True:
            other = _sample_attributes(rng)
            if (other["shape"], other["color"]) != (true["shape"], true["color"]):
                return "mismatch", other, None
    attribute = rng.choice(tuple(PARTIAL_ATTRIBUTES))
    described = dict(true)
    described[attribute] = rng.choice([v for v in PARTIAL_ATTRIBUTES[attribute] if v != true[attribute]])
    return "partial", described, attribute


# --- the dataset ----------------------------------------------------------------------------------

class SyntheticPairs:
    """Map-style captioned images, deterministic from (seed, split, index).

    `dataset[i]` and `pair(i)` give (PIL image, caption); `captions(i)` five phrasings of what the
    caption describes; `meta(i)` the key, the true attributes, the described ones and the noise kind.
    """

    def __init__(self, split="train", size=None, seed=0, noise=0.0, image_size=64, style="photo", color_words=1):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        if int(image_size) < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        size = DEFAULT_SIZES[split] if size is None else int(size)
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.split, self.size, self.seed = split, size, int(seed)
        self.noise, self.image_size, self.style = float(noise), int(image_size), style
        self.color_words = bool(color_words)  # 0: captions never name a colour (a 'partial' colour edit is unseen)

    def __len__(self):
        return self.size

    def __repr__(self):
        return (f"SyntheticPairs(split={self.split!r}, size={self.size}, seed={self.seed}, noise={self.noise}, "
                f"image_size={self.image_size}, style={self.style!r}, color_words={int(self.color_words)})")

    def _index(self, index):
        """index as a Python int: numpy and torch integers are welcome; anything else is a one-line error."""
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        index = operator.index(index)
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.split} split of size {self.size}")
        return index

    def key(self, index):
        """The name a score file gives the pair (meta's "key"), without laying out its scene."""
        return f"{self.split}/{self._index(index):08d}"

    def meta(self, index):
        index = self._index(index)
        true, rng = _truth(self.seed, self.split, index)
        objects, background = _scene(true, rng)
        kind, described, _ = _described(self.seed, self.split, self.noise, index, true)
        return {"key": self.key(index), "split": self.split, "index": index,
                "clean": kind == "clean", "noise_kind": kind, "true": true,
                "described": described, "objects": objects, "background": background}

    def captions(self, index):
        """CAPTIONS_PER_IMAGE distinct phrasings of the described attributes (the same for every call; kept
        per process, as the drawings are: _phrased)."""
        return list(_phrased(self.seed, self.split, self.noise, self.color_words, self._index(index)))

    def image(self, index):
        """The scene drawn; a copy of the process's cache (_drawn), so a transform never alters the next one."""
        return _drawn(self.seed, self.split, self.image_size, self.style, self._index(index)).copy()

    def pair(self, index):
        """(image, caption): the caption is the first of captions(index)."""
        return self.image(index), self.captions(index)[0]

    __getitem__ = pair


# Drawing and phrasing are most of a micro run's data time, and every epoch (and every run of
# scripts/reproduce.py in one process) asks for the same samples again, so each process keeps the last
# DRAWN_KEPT of each: about 12 KB an image at 64 px, 200 MB at most. Both are pure functions of their
# arguments (an image never depends on noise, nor either on the split's size).
DRAWN_KEPT = 16_384


@functools.lru_cache(maxsize=DRAWN_KEPT)
def _drawn(seed, split, image_size, style, index):
    objects, background = _scene(*_truth(seed, split, index))
    return render(objects, background, image_size, style, _stream(seed, split, index, _STYLE_STREAM))


@functools.lru_cache(maxsize=DRAWN_KEPT)
def _phrased(seed, split, noise, color_words, index) -> tuple:
    true, _ = _truth(seed, split, index)
    _, described, forced = _described(seed, split, noise, index, true)
    rng, found = _stream(seed, split, index, _CAPTION_STREAM), []
    for _ in range(20 * CAPTIONS_PER_IMAGE):
        text = _caption(described, rng, forced, color_words)
        if text not in found:
            found.append(text)
            if len(found) == CAPTIONS_PER_IMAGE:
                break
    return tuple(found)


# --- zero-shot label sets -------------------------------------------------------------------------

GENERIC_TEMPLATES = ("a photo of a {}.", "a {}.", "an image of a {}.", "a picture of a {}.",
                     "a drawing of a {}.", "there is a {}.")
# Captions always name the shape, so a colour's prompts are the colour on every shape, averaged.
COLOR_TEMPLATES = tuple(f"{start} {{}} {shape}." for start in ("a", "a photo of a") for shape in SHAPES)
CLASS_NAMES = {"shape": SHAPES, "color": tuple(COLORS),
               "shape-color": tuple(f"{color} {shape}" for color in COLORS for shape in SHAPES)}
LABEL_SETS = tuple(CLASS_NAMES)


def _label_of(name, meta):
    """The class index of the main object's true attributes (bound with functools.partial, so it
    pickles into DataLoader workers, which a lambda would not)."""
    shape, color = meta["true"]["shape"], meta["true"]["color"]
    return CLASS_NAMES[name].index({"shape": shape, "color": color, "shape-color": f"{color} {shape}"}[name])


def label_set(name):
    """(class_names, templates, label_of) for zero-shot classification of the main object."""
    if name not in LABEL_SETS:
        raise ValueError(f"unknown label set {name!r}; choose from {', '.join(LABEL_SETS)}")
    templates = COLOR_TEMPLATES if name == "color" else GENERIC_TEMPLATES
    return list(CLASS_NAMES[name]), list(templates), functools.partial(_label_of, name)


_label_set = label_set  # SyntheticClassification's argument of the same name shadows it


class SyntheticClassification:
    """(PIL image, label) view of a split for zero-shot, linear-probe and few-shot evaluation."""

    def __init__(self, split="val", label_set="shape", size=None, seed=0, image_size=64, style="photo"):
        self.classes, self.templates, self.label_of = _label_set(label_set)
        self.pairs = SyntheticPairs(split, size=size, seed=seed, image_size=image_size, style=style)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.pairs.image(index), self.label_of(self.pairs.meta(index))
