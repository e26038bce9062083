"""Tests for tinyclip/synthetic.py, the built-in captioned-image generator.

Checks: samples are a pure function of (seed, split, index) (identical bytes and captions across
instances and after pickling, different seeds differ); every caption states only true attributes
for clean samples (parsed back word by word: shape, colour, count, size, position, background,
second object); 'partial' noise changes exactly one attribute and every phrasing states the wrong
value, 'mismatch' describes another scene; the noisy fraction follows `noise`, is nested across
levels and never changes the images; train and val are disjoint but share one attribute
distribution; label sets cover their classes, agree with meta and use caption words; and, in the
pixels, the main object's colour is really drawn.
"""
import collections
import hashlib
import math
import pickle
import re

import numpy as np
import pytest

from tinyclip import render
from tinyclip import synthetic as syn

SIZE_OF = {w: size for size, words in syn.SIZE_WORDS.items() for w in words}
BACKGROUND_OF = {w: bg for bg, words in syn.BACKGROUND_WORDS.items() for w in words}
SHAPE_OF = {**{s: (s, False) for s in syn.SHAPES},
            **{syn.PLURALS.get(s, s + "s"): (s, True) for s in syn.SHAPES}}
PHRASES = sorted(((p, pos) for pos, ps in syn.POSITION_PHRASES.items() for p in ps),
                 key=lambda item: -len(item[0]))  # longest first: "at the top left" before "at the top"


def digest(image):
    return hashlib.sha1(image.tobytes()).hexdigest()


def parse(caption):
    """Read back what a caption states: {'shape', 'count', 'color'?, 'size'?, 'position'?,
    'background'?, 'second'?: {'shape', 'color'?, 'size'?}}. Absent keys mean 'not stated'."""
    text, found = caption.lower(), {}
    for phrase, pos in PHRASES:
        if phrase in text:
            found["position"] = pos
            text = text.replace(phrase, " ")
            break
    words = re.sub(r"[.,]", " ", text).split()
    nouns = [i for i, w in enumerate(words) if w in SHAPE_OF]
    assert 1 <= len(nouns) <= 2, caption

    def object_at(i):
        obj = {"shape": SHAPE_OF[words[i]][0]}
        before = words[max(0, i - 2):i]
        colors = [w for w in before if w in syn.COLORS]
        if words[i + 1:i + 2] == ["in"]:
            colors.append(words[i + 2])
        if colors:
            obj["color"] = colors[-1]
        sizes = [SIZE_OF[w] for w in before if w in SIZE_OF]
        if sizes:
            obj["size"] = sizes[-1]
        return obj

    found.update(object_at(nouns[0]))
    plural = SHAPE_OF[words[nouns[0]]][1]
    found["count"] = 3 if "three" in words else 2 if ("two" in words or "pair" in words) else 1
    assert plural == (found["count"] > 1), caption
    if len(nouns) == 2:
        found["second"] = object_at(nouns[1])
        assert not SHAPE_OF[words[nouns[1]]][1], caption
    if "background" in words:
        found["background"] = BACKGROUND_OF[words[words.index("background") - 1]]
    return found


def assert_states_only(caption, attrs):
    stated = parse(caption)
    for key in ("shape", "count", "color", "size", "background"):
        if key in stated:
            assert stated[key] == attrs[key], (caption, key, attrs)
    if "position" in stated:
        assert attrs["count"] == 1 and stated["position"] == attrs["position"], (caption, attrs)
    if "second" in stated:
        assert attrs["second"] is not None, (caption, attrs)
        for key, value in stated["second"].items():
            assert value == attrs["second"][key], (caption, attrs)
    return stated


# --- determinism ----------------------------------------------------------------------------------

def test_same_index_same_bytes_and_captions_across_instances_and_pickling():
    a, b = syn.SyntheticPairs("train", seed=3, noise=0.2), syn.SyntheticPairs("train", seed=3, noise=0.2)
    c = pickle.loads(pickle.dumps(a))
    for i in (0, 1, 17, 4242, 99_999):
        image, caption = a.pair(i)
        for other in (b, c):
            image2, caption2 = other.pair(i)
            assert image.tobytes() == image2.tobytes() and caption == caption2
            assert a.captions(i) == other.captions(i) and a.meta(i) == other.meta(i)
        assert image.size == (64, 64) and image.mode == "RGB"
        assert caption == a.captions(i)[0] and a[i][1] == caption


def test_different_seeds_give_different_samples():
    a, b = syn.SyntheticPairs(seed=0), syn.SyntheticPairs(seed=1)
    same = sum(digest(a.image(i)) == digest(b.image(i)) for i in range(50))
    assert same == 0
    assert sum(a.captions(i) == b.captions(i) for i in range(50)) <= 2


def test_image_size_is_rendered_natively():
    assert syn.SyntheticPairs(image_size=96).image(5).size == (96, 96)


def test_bad_arguments_raise_one_line_errors():
    with pytest.raises(ValueError, match="split"):
        syn.SyntheticPairs("test")
    with pytest.raises(ValueError, match="noise"):
        syn.SyntheticPairs(noise=1.5)
    with pytest.raises(ValueError, match="size"):
        syn.SyntheticPairs(size=0)
    with pytest.raises(IndexError):
        syn.SyntheticPairs("val", size=10).pair(10)
    with pytest.raises(TypeError):
        syn.SyntheticPairs().meta("3")
    with pytest.raises(TypeError):
        syn.SyntheticPairs().image(1.0)
    assert syn.SyntheticPairs().meta(np.int64(3)) == syn.SyntheticPairs().meta(3)  # sampler indices
    with pytest.raises(ValueError, match="label set"):
        syn.label_set("texture")


# --- captions are faithful ------------------------------------------------------------------------

def test_clean_captions_state_only_true_attributes():
    data = syn.SyntheticPairs("train", noise=0.0)
    stated_keys = collections.Counter()
    for i in range(400):
        meta = data.meta(i)
        assert meta["clean"] and meta["noise_kind"] == "clean" and meta["described"] == meta["true"]
        assert meta["key"] == f"train/{i:08d}"
        captions = data.captions(i)
        assert len(captions) == syn.CAPTIONS_PER_IMAGE == len(set(captions))
        for caption in captions:
            stated_keys.update(assert_states_only(caption, meta["true"]).keys())
        # the objects drawn are the ones the attributes name
        drawn = [(o["shape"], o["color"], o["size"]) for o in meta["objects"]]
        true = meta["true"]
        assert drawn[:true["count"]] == [(true["shape"], true["color"], true["size"])] * true["count"]
        assert len(drawn) == true["count"] + (true["second"] is not None)
    # every kind of attribute gets stated somewhere, so the parser is really checking them
    assert set(stated_keys) == {"shape", "count", "color", "size", "position", "background", "second"}


def test_partial_noise_changes_exactly_one_stated_attribute():
    data, seen = syn.SyntheticPairs("train", noise=1.0), collections.Counter()
    for i in range(400):
        meta = data.meta(i)
        if meta["noise_kind"] != "partial":
            continue
        true, described = meta["true"], meta["described"]
        changed = [k for k in true if true[k] != described[k]]
        assert len(changed) == 1 and changed[0] in syn.PARTIAL_ATTRIBUTES, meta
        seen[changed[0]] += 1
        for caption in data.captions(i):
            stated = assert_states_only(caption, described)
            assert stated[changed[0]] == described[changed[0]] != true[changed[0]], caption
    assert set(seen) == set(syn.PARTIAL_ATTRIBUTES)


def test_mismatch_noise_describes_another_scene():
    data, n = syn.SyntheticPairs("train", noise=1.0), 0
    for i in range(300):
        meta = data.meta(i)
        if meta["noise_kind"] != "mismatch":
            continue
        n += 1
        true, described = meta["true"], meta["described"]
        assert (described["shape"], described["color"]) != (true["shape"], true["color"])
        for caption in data.captions(i):
            assert_states_only(caption, described)
    assert n > 100


def test_noise_fraction_is_close_nested_and_leaves_images_alone():
    n, levels = 2000, (0.0, 0.2, 0.4)
    kinds = {p: [syn.SyntheticPairs(noise=p).meta(i)["noise_kind"] for i in range(n)] for p in levels}
    assert kinds[0.0].count("clean") == n
    for p in levels[1:]:
        noisy = [k != "clean" for k in kinds[p]]
        assert abs(sum(noisy) / n - p) < 0.04
        assert abs(kinds[p].count("mismatch") / sum(noisy) - syn.MISMATCH_SHARE) < 0.1
    # nested: noisy at 0.2 => noisy at 0.4, and a sample's noise kind does not change
    assert all(k4 == k2 for k2, k4 in zip(kinds[0.2], kinds[0.4]) if k2 != "clean")
    clean, noisy = syn.SyntheticPairs(noise=0.0), syn.SyntheticPairs(noise=0.7)
    for i in range(20):
        assert clean.image(i).tobytes() == noisy.image(i).tobytes()
        assert clean.meta(i)["true"] == noisy.meta(i)["true"]


# --- splits ---------------------------------------------------------------------------------------

def test_splits_are_disjoint_and_share_one_distribution():
    train, val = syn.SyntheticPairs("train"), syn.SyntheticPairs("val")
    assert len(train) == syn.DEFAULT_SIZES["train"] and len(val) == syn.DEFAULT_SIZES["val"]
    train_images = {digest(train.image(i)) for i in range(300)}
    val_images = {digest(val.image(i)) for i in range(300)}
    assert len(train_images) == len(val_images) == 300 and not train_images & val_images
    assert not {train.pair(i)[1] + digest(train.image(i)) for i in range(50)} & \
        {val.pair(i)[1] + digest(val.image(i)) for i in range(50)}
    assert train.meta(7)["key"] == "train/00000007" != val.meta(7)["key"]

    n = 1500
    for attribute, values in (("shape", syn.SHAPES), ("color", syn.COLORS), ("count", syn.COUNTS),
                              ("background", syn.BACKGROUNDS)):
        a = collections.Counter(train.meta(i)["true"][attribute] for i in range(n))
        b = collections.Counter(val.meta(i)["true"][attribute] for i in range(n))
        assert set(a) == set(b) == set(values)
        assert max(abs(a[v] - b[v]) / n for v in values) < 0.06, attribute


# --- label sets -----------------------------------------------------------------------------------

def test_label_sets_cover_classes_agree_with_meta_and_use_caption_words():
    data = syn.SyntheticPairs("val", size=1500)
    metas = [data.meta(i) for i in range(len(data))]
    caption_words = {w for i in range(300) for c in data.captions(i) for w in re.findall(r"[\w-]+", c)}
    expected = {"shape": len(syn.SHAPES), "color": len(syn.COLORS),
                "shape-color": len(syn.SHAPES) * len(syn.COLORS)}
    assert set(syn.LABEL_SETS) >= set(expected)
    for name, n_classes in expected.items():
        names, templates, label_of = syn.label_set(name)
        assert len(names) == len(set(names)) == n_classes
        labels = [label_of(m) for m in metas]
        assert set(labels) == set(range(n_classes)), name
        for meta, label in zip(metas, labels):
            words = names[label].split()
            assert words[-1] in (meta["true"]["shape"], meta["true"]["color"])
            assert words[0] in (meta["true"]["shape"], meta["true"]["color"])
        for template in templates:
            assert template.count("{}") == 1
            for class_name in names:  # prompts speak the captions' language
                assert set(re.findall(r"[\w-]+", template.format(class_name))) <= caption_words
        assert pickle.loads(pickle.dumps(label_of))(metas[0]) == labels[0]


def test_classification_view_returns_image_and_label():
    view = syn.SyntheticClassification("val", "shape-color", size=30)
    pairs = syn.SyntheticPairs("val", size=30)
    view = pickle.loads(pickle.dumps(view))
    assert len(view) == 30 and len(view.classes) == 49 and view.templates
    for i in (0, 29):
        image, label = view[i]
        assert image.tobytes() == pairs.image(i).tobytes()
        true = pairs.meta(i)["true"]
        assert view.classes[label] == f"{true['color']} {true['shape']}"


def test_a_drawn_scene_and_its_captions_are_kept_per_process_and_handed_out_as_copies():
    pairs, fresh = syn.SyntheticPairs("val", size=40, seed=7), syn.SyntheticPairs("val", size=40, seed=7)
    first = pairs.image(3)
    first.paste((255, 0, 255), (0, 0, 64, 64))  # what a careless transform might do to its input
    again = fresh.image(3)  # another dataset of the same scenes: the same drawing, from the cache
    assert again is not first and again.tobytes() != first.tobytes()
    syn._drawn.cache_clear()
    assert fresh.image(3).tobytes() == again.tobytes()  # drawn afresh, the same pixels
    assert syn._drawn.cache_info().currsize == 1
    assert syn.SyntheticPairs("val", size=40, seed=7, noise=0.5).image(3).tobytes() == again.tobytes()
    said = pairs.captions(3)
    said.append("a careless caller's edit")
    assert fresh.captions(3) == said[:-1] and len(said[:-1]) == syn.CAPTIONS_PER_IMAGE
    assert syn.SyntheticPairs("val", size=40, seed=7, color_words=0).captions(3) != said[:-1]  # another key
    assert all(pairs.key(i) == pairs.meta(i)["key"] for i in (0, 39))
    with pytest.raises(IndexError):
        pairs.key(40)


# --- pixels ---------------------------------------------------------------------------------------

def test_layout_keeps_objects_inside_apart_and_in_their_named_cell():
    data = syn.SyntheticPairs("train")
    for i in range(1000):
        meta = data.meta(i)
        objects = meta["objects"]
        for o in objects:  # shapes fit in their radius (UNIT_SHAPES stay within [-1, 1])
            assert o["radius"] <= o["x"] <= 1 - o["radius"] and o["radius"] <= o["y"] <= 1 - o["radius"]
        for a in range(len(objects)):
            for b in range(a):
                gap = math.dist((objects[a]["x"], objects[a]["y"]), (objects[b]["x"], objects[b]["y"]))
                assert gap >= objects[a]["radius"] + objects[b]["radius"], meta["key"]
        if meta["true"]["position"]:  # the nearest grid cell is the one the caption names
            main = objects[0]
            nearest = min(syn.POSITIONS, key=lambda p: math.dist(syn._cell_centre(p), (main["x"], main["y"])))
            assert nearest == meta["true"]["position"], meta["key"]


def test_main_object_colour_is_drawn_and_absent_colours_are_not():
    data = syn.SyntheticPairs("val", image_size=64)

    def near(image, rgb, tol=30):  # pixels within tol of rgb in every channel
        pixels = np.asarray(image, dtype=np.int16)
        return int((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tol).sum())

    for i in range(150):
        meta, image = data.meta(i), data.image(i)
        main = meta["objects"][0]
        r, x, y = main["radius"] * 64, main["x"] * 64, main["y"] * 64
        box = image.crop((int(x - r), int(y - r), int(x + r) + 1, int(y + r) + 1))
        assert near(box, syn.COLORS[main["color"]]) >= 20, meta["key"]
        present = {o["color"] for o in meta["objects"]}
        for color in set(syn.COLORS) - present:
            assert near(image, syn.COLORS[color]) <= 2, (meta["key"], color)


def test_styles_redraw_the_same_scenes_deterministically_and_differently():
    """Every robustness style renders the photo style's scene (same meta, captions and labels), the same bytes
    on every call and instance, and different pixels from the photo and from each other."""
    photo = syn.SyntheticPairs("val", size=20)
    renders = {}
    for style in syn.STYLES:
        data = syn.SyntheticPairs("val", size=20, style=style)
        again = pickle.loads(pickle.dumps(syn.SyntheticPairs("val", size=20, style=style)))
        renders[style] = [np.asarray(data.image(i)) for i in range(20)]
        for i in range(20):
            assert data.meta(i) == photo.meta(i) and data.captions(i) == photo.captions(i)
            assert np.array_equal(renders[style][i], np.asarray(again.image(i)))
    for a in syn.STYLES:
        for b in syn.STYLES:
            if a < b:
                assert all(not np.array_equal(x, y) for x, y in zip(renders[a], renders[b])), (a, b)
    view = syn.SyntheticClassification("val", label_set="shape-color", size=20, style="sketch")
    assert [view[i][1] for i in range(20)] == [syn.SyntheticClassification("val", "shape-color", 20)[i][1]
                                               for i in range(20)]
    with pytest.raises(ValueError, match="style must be one of photo, sketch"):
        syn.SyntheticPairs(style="cartoon")


def test_sketch_is_outlines_in_the_objects_colour_on_white():
    """The sketch of a filled shape has the object's colour on its outline and white at its centre (no fill), and
    no background texture: every pixel away from the objects is white."""
    data = syn.SyntheticPairs("val", size=80, image_size=64, style="sketch")
    checked = 0
    for i in range(80):
        meta, pixels = data.meta(i), np.asarray(data.image(i), dtype=int)
        main = meta["objects"][0]
        if main["shape"] not in ("square", "circle", "diamond") or len(meta["objects"]) > 1:
            continue
        x, y, r = main["x"] * 64, main["y"] * 64, main["radius"] * 64
        assert (pixels[int(y), int(x)] == 255).all(), meta["key"]  # hollow
        box = pixels[max(0, int(y - r) - 1):int(y + r) + 2, max(0, int(x - r) - 1):int(x + r) + 2]
        assert (np.abs(box - np.array(main["rgb"])).max(axis=-1) <= 40).sum() >= 8, meta["key"]  # its outline
        outside = np.ones((64, 64), bool)
        outside[max(0, int(y - r) - 2):int(y + r) + 3, max(0, int(x - r) - 2):int(x + r) + 3] = False
        assert (pixels[outside] == 255).all(), meta["key"]
        checked += 1
    assert checked >= 10


def test_hard_style_shrinks_and_fades_the_objects():
    """"hard" draws every object at HARD_RADIUS of its size and HARD_FADE of the way to the background tone: its
    main object covers fewer pixels near its colour than the photo's, and none at full strength."""
    photo, hard = syn.SyntheticPairs("val", size=30), syn.SyntheticPairs("val", size=30, style="hard")
    for i in range(30):
        main, tone = photo.meta(i)["objects"][0], photo.meta(i)["background"]["tone"]
        faded = [round((1 - render.HARD_FADE) * c + render.HARD_FADE * t) for c, t in zip(main["rgb"], tone)]
        count = lambda image, rgb: int((np.abs(np.asarray(image, dtype=int) - rgb).max(axis=-1) <= 6).sum())
        assert 0 < count(hard.image(i), faded) < count(photo.image(i), main["rgb"])
        assert count(hard.image(i), main["rgb"]) == 0


def test_captions_without_colour_words_name_no_colour_and_leave_the_rest():
    """color_words=0 drops every colour word and nothing else: the captions parse to the same shapes, counts
    and sizes as captions with colours, and the images are the same."""
    plain, coloured = syn.SyntheticPairs("train", size=300, color_words=0), syn.SyntheticPairs("train", size=300)
    for i in range(300):
        assert np.array_equal(np.asarray(plain.image(i)), np.asarray(coloured.image(i)))
        for text in plain.captions(i):
            assert not set(re.findall(r"[a-z]+", text)) & set(syn.COLORS), text
            assert syn.PLURALS.get(plain.meta(i)["true"]["shape"], plain.meta(i)["true"]["shape"]) in text or \
                plain.meta(i)["true"]["shape"] in text
    assert any(set(re.findall(r"[a-z]+", " ".join(coloured.captions(i)))) & set(syn.COLORS) for i in range(10))
