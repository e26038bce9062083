"""Data loading (tinyclip.data, tinyclip.sources, tinyclip.shards) on small files written here.

Checks: CSV/TSV, tar shards, image+.txt folders and ImageFolder read back what was written (keys,
captions grouped per image, pixels), and sources.load_batches reads them in order, skipping bad
images; a .csv with a tab header is read as a TSV; brace expansion; the rank x worker split visits
every sample exactly once per epoch and reshuffles each epoch, with batches independent of the worker
count; start_sample resumes bit-identically; SLIP's two views of sample i are rows 2i and 2i + 1 of
one tensor; bad inputs (garbage bytes, truncated JPEG, missing file, empty or non-UTF-8 caption,
truncated tar, missing .txt) are skipped, counted by reason, and batches stay full; a repeated tar
key is read from its first sample and counted; the loader's summary counts pairs, shards and skips;
the quality filter keeps exactly the top fraction; dataset_size subsets are fixed, nested and of
size N; the shard converter round-trips; bad paths, empty sources and bad selections give one-line
errors that name the file or flag and the fix.
"""

import csv
import io
import json
import os
import re
import tarfile
from collections import Counter

import pytest
import torch
from PIL import Image

from tinyclip.augment import make_transform
from tinyclip.data import main, make_train_loader, read_scores, select_indices, write_scores
from tinyclip.shards import build_index, expand_braces, resolve_shards
from tinyclip.sources import ImageFolderDataset, SkipSample, load_batches, open_source
from tinyclip.tokenizer import tokenize

NONE_8 = make_transform("none", 8)


# -----------------------------------------------------------------------------
# helpers: tiny files


def jpeg_bytes(value: int, size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, 255 - value, (3 * value) % 256)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_pairs_csv(folder, n, *, name="pairs.csv", sep=",", img_key="filepath", caption_key="title",
                    extra_rows=()):
    """n images img/NN.jpg with captions 'caption NN', plus extra (path, caption) rows."""
    os.makedirs(folder / "img", exist_ok=True)
    rows = []
    for i in range(n):
        (folder / "img" / f"{i:02d}.jpg").write_bytes(jpeg_bytes(10 * i))
        rows.append((f"img/{i:02d}.jpg", f"caption {i:02d}"))
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=sep)
        writer.writerow([img_key, "other", caption_key])
        for image, caption in rows + list(extra_rows):
            writer.writerow([image, "x", caption])
    return str(path)


def add_member(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path, samples):
    """samples: (key, image bytes or None, text bytes or None)."""
    with tarfile.open(path, "w") as tar:
        for key, image, text in samples:
            if image is not None:
                add_member(tar, f"{key}.jpg", image)
            if text is not None:
                add_member(tar, f"{key}.txt", text)
            add_member(tar, f"{key}.json", json.dumps({"key": key}).encode())


def write_shards(folder, n, per_shard):
    os.makedirs(folder, exist_ok=True)
    for s in range(0, n, per_shard):
        write_shard(folder / f"{s // per_shard:05d}.tar",
                    [(f"k{i:04d}", jpeg_bytes(i), f"caption {i}".encode()) for i in range(s, min(n, s + per_shard))])
    return str(folder / f"{{00000..{(n - 1) // per_shard:05d}}}.tar")


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def iter_pairs(spec, *, skipped=None, keep_top=None, score_file=None, **source_options):
    """(key, PIL image, captions) of a source's readable pairs in order (bad ones counted in `skipped`)."""
    source = open_source(spec, **source_options)
    if skipped is not None:
        skipped.update(source.skipped)
    for index in select_indices(source, keep_top=keep_top, score_file=score_file):
        try:
            image, captions = source.load(int(index))
        except SkipSample as bad:
            if skipped is not None:
                skipped[bad.reason] += 1
            continue
        yield source.key(int(index)), image, captions


# -----------------------------------------------------------------------------
# shard lists


def test_expand_braces_keeps_padding_and_nests():
    assert expand_braces("d/{00008..00011}.tar") == [f"d/{i:05d}.tar" for i in range(8, 12)]
    assert expand_braces("{8..11}") == ["8", "9", "10", "11"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("x{a,b{1..2}}y{0,1}") == ["xay0", "xay1", "xb1y0", "xb1y1", "xb2y0", "xb2y1"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    for bad in ("a{1..2", "a}b", "{x}"):
        with pytest.raises(ValueError):
            expand_braces(bad)


def test_resolve_shards_lists_globs_and_missing(tmp_path):
    for name in ("a0.tar", "a1.tar", "b.tar"):
        write_shard(tmp_path / name, [])
    spec = f"{tmp_path}/a{{0..2}}.tar::{tmp_path}/b*.tar"
    existing, missing = resolve_shards(spec)
    assert existing == [f"{tmp_path}/a0.tar", f"{tmp_path}/a1.tar", f"{tmp_path}/b.tar"]
    assert missing == [f"{tmp_path}/a2.tar"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        resolve_shards(f"{tmp_path}/zz*.tar")
    with pytest.raises(FileNotFoundError, match="no shard"):
        resolve_shards(f"{tmp_path}/{{5..6}}.tar")


# -----------------------------------------------------------------------------
# sources read back what was written


@pytest.mark.parametrize("sep,name", [(",", "pairs.csv"), ("\t", "pairs.tsv")])
def test_csv_tsv_groups_captions_and_resolves_paths(tmp_path, monkeypatch, sep, name):
    path = write_pairs_csv(tmp_path / "d", 3, name=name, sep=sep, img_key="img", caption_key="cap",
                           extra_rows=[("img/01.jpg", "second, with a comma"), ("img/00.jpg", "  other  ")])
    monkeypatch.chdir(tmp_path)  # paths are relative to the CSV's folder, not the working directory
    pairs = list(iter_pairs(path, csv_img_key="img", csv_caption_key="cap"))
    assert [key for key, _, _ in pairs] == ["img/00.jpg", "img/01.jpg", "img/02.jpg"]
    assert [caps for _, _, caps in pairs] == [["caption 00", "other"], ["caption 01", "second, with a comma"],
                                              ["caption 02"]]
    assert pairs[1][1].size == (12, 10) and abs(pairs[1][1].getpixel((5, 5))[0] - 10) <= 3
    with pytest.raises(ValueError, match="no column 'title'"):
        open_source(path, csv_img_key="img")


def test_separator_from_the_header_when_the_extension_lies(tmp_path):
    """A .csv whose header has tabs and no comma is a TSV (and the other way round); an explicit
    separator is used as given, with no detection."""
    tab_csv = write_pairs_csv(tmp_path, 2, name="tabs.csv", sep="\t", extra_rows=[("img/00.jpg", "a, b")])
    comma_tsv = write_pairs_csv(tmp_path, 2, name="commas.tsv", sep=",", extra_rows=[("img/00.jpg", "a\tb")])
    for path in (tab_csv, comma_tsv):
        assert [(k, c) for k, _, c in iter_pairs(path)] == \
            [("img/00.jpg", ["caption 00", "a, b" if path == tab_csv else "a\tb"]), ("img/01.jpg", ["caption 01"])]
    loader = make_train_loader(tab_csv, transform=NONE_8, batch_size=2, workers=0, csv_separator="\t")
    assert loader.num_samples == 2
    with pytest.raises(ValueError, match=r"no column 'filepath' .*separated by ',': filepath\tother\ttitle"):
        make_train_loader(tab_csv, transform=NONE_8, batch_size=2, workers=0, csv_separator=",")


def test_tar_and_folder_sources(tmp_path):
    write_shard(tmp_path / "00000.tar", [("a", jpeg_bytes(1), b"first\nsecond\n"), ("b", jpeg_bytes(2), b"only")])
    pairs = list(iter_pairs(str(tmp_path / "{00000..00000}.tar")))
    assert [(k, c) for k, _, c in pairs] == [("a", ["first", "second"]), ("b", ["only"])]
    assert [k for k, _, _ in iter_pairs(str(tmp_path))] == ["a", "b"]  # a folder of shards
    write_shard(tmp_path / "00001.tar", [(f"c{i}", jpeg_bytes(i), b"c") for i in range(3)])
    paths = [str(tmp_path / "00000.tar"), str(tmp_path / "00001.tar")]
    serial, parallel = build_index(paths, processes=1), build_index(paths, processes=2)
    assert serial.keys == parallel.keys == ["a", "b", "c0", "c1", "c2"] and serial.shard.tolist() == [0, 0, 1, 1, 1]
    assert (serial.image == parallel.image).all() and (serial.text == parallel.text).all()

    folder = tmp_path / "pairs"
    (folder / "sub").mkdir(parents=True)
    (folder / "x.jpg").write_bytes(jpeg_bytes(3))
    (folder / "x.txt").write_text("an x\n")
    (folder / "sub" / "y.png").write_bytes(jpeg_bytes(4))  # format from the bytes, not the name
    (folder / "sub" / "y.txt").write_text("a y")
    (folder / "lonely.jpg").write_bytes(jpeg_bytes(5))  # no caption file
    skipped = Counter()
    assert [(k, c) for k, _, c in iter_pairs(str(folder), skipped=skipped)] == \
        [("sub/y.png", ["a y"]), ("x.jpg", ["an x"])]
    assert skipped == {"missing_caption": 1}
    main(["shard", "--input", str(folder), "--output", str(tmp_path / "out")])  # folder -> shards
    assert [c for _, _, c in iter_pairs(str(tmp_path / "out"))] == [["a y"], ["an x"]]


def test_image_folder_labels_names_and_skips(tmp_path):
    for cls, n in (("n02", 2), ("n01", 3)):
        (tmp_path / "root" / cls).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "root" / cls / f"{i}.JPEG").write_bytes(jpeg_bytes(40 * i))
    (tmp_path / "root" / "n01" / "bad.jpg").write_bytes(b"not an image")
    data = ImageFolderDataset(str(tmp_path / "root"))
    assert data.classes == ["n01", "n02"]
    assert [label for _, label in data.samples] == [0, 0, 0, 0, 1, 1]
    batches = list(load_batches(data.__getitem__, len(data), NONE_8, skipped=data.skipped, batch_size=4))
    assert [label for batch in batches for label in batch["target"]] == [0, 0, 0, 1, 1]
    assert [i for batch in batches for i in batch["index"]] == [0, 1, 2, 4, 5]  # bad.jpg (index 3) left out
    assert batches[0]["image"].shape == (3, 3, 8, 8) and data.skipped == {"corrupt_image": 1}
    # class names files (folder<TAB>name or one per line) are read by tinyclip.evaluation.read_class_names:
    # tests/test_eval.py checks them through the zero-shot task


# -----------------------------------------------------------------------------
# the stream: sharding, reshuffling, resume


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {"csv": write_pairs_csv(root / "csv", 12), "tar": write_shards(root / "tar", 12, per_shard=5)}


@pytest.mark.parametrize("kind", ["csv", "tar"])
def test_ranks_and_workers_cover_each_sample_once_per_epoch(sources, kind):
    keys = [k for k, _, _ in iter_pairs(sources[kind])]
    orders = {}
    for workers in (0, 1, 2):
        for world_size in (1, 2, 3):
            steps = 12 // (2 * world_size)  # one epoch = 12 samples, batch 2 per rank
            per_rank = [[b["key"] for b in take(make_train_loader(
                sources[kind], transform=NONE_8, batch_size=2, rank=r, world_size=world_size, workers=workers,
                seed=5, with_keys=True), 2 * steps)] for r in range(world_size)]
            # global order: for each step, rank 0's slice, then rank 1's, ...
            order = [key for step in range(2 * steps) for r in range(world_size) for key in per_rank[r][step]]
            epoch0, epoch1 = order[:12], order[12:]
            assert sorted(epoch0) == sorted(keys) and sorted(epoch1) == sorted(keys)
            assert epoch0 != epoch1  # reshuffled
            orders[workers, world_size] = order
    # the global order is a function of (seed, position): the same for every world size and worker count
    assert all(order == orders[0, 1] for order in orders.values())


def test_resume_is_bit_identical_and_independent_of_workers(sources):
    crop = make_transform("crop-flip", 8)  # random: the per-sample rng must be reproduced too
    for spec in ("synthetic:size=40,image_size=16", sources["csv"], sources["tar"]):
        kwargs = dict(transform=crop, ssl_transform=make_transform("simclr", 8), batch_size=3, rank=1,
                      world_size=2, seed=7, context_length=16)
        full = take(make_train_loader(spec, workers=2, **kwargs), 9)  # crosses epoch boundaries
        resumed = take(make_train_loader(spec, workers=0, start_sample=4 * 6, **kwargs), 5)
        for a, b in zip(full[4:], resumed):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["text"], b["text"])
            assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"]))
        assert not torch.equal(full[0]["views"][0], full[0]["views"][1])


def test_slip_views_are_interleaved_per_sample(tmp_path):
    """views[2i] and views[2i + 1] are sample i's two views, the first drawn first from its rng."""
    path = write_pairs_csv(tmp_path, 6)

    def identity_and_draw(image, rng):  # channel 0: which image; channel 1: the rng's next draw
        view = torch.zeros(3, 2, 2)
        view[0], view[1] = image.getpixel((5, 5))[0], rng.random()
        return view

    batch = take(make_train_loader(path, transform=NONE_8, ssl_transform=identity_and_draw, batch_size=3, workers=0,
                                   seed=3), 1)[0]
    views = batch["views"]
    assert views.shape == (6, 3, 2, 2)
    plain = take(make_train_loader(path, transform=NONE_8, ssl_transform=identity_and_draw, batch_size=1, workers=0,
                                   seed=3), 3)  # per-sample rng: the same draws, one sample per batch
    for i in range(3):
        assert torch.equal(views[2 * i, 0], views[2 * i + 1, 0])  # both views are of sample i's image
        assert views[2 * i, 1, 0, 0] != views[2 * i + 1, 1, 0, 0]  # two draws
        assert torch.equal(views[2 * i:2 * i + 2], plain[i]["views"])  # a contiguous split keeps the pair
    assert len({float(views[2 * i, 0, 0, 0]) for i in range(3)}) == 3


def test_batch_contract_and_random_caption_choice(tmp_path):
    path = write_pairs_csv(tmp_path, 2, extra_rows=[("img/00.jpg", "zebra"), ("img/00.jpg", "yak")])
    loader = make_train_loader(path, transform=NONE_8, batch_size=2, workers=0, context_length=12, with_keys=True)
    assert loader.num_samples == 2 and loader.epoch_of(5) == 2
    texts = Counter()
    for batch in take(loader, 12):
        assert batch["image"].shape == (2, 3, 8, 8) and batch["text"].shape == (2, 12)
        assert batch["text"].dtype == torch.long and "skipped" not in batch
        for key, ids in zip(batch["key"], batch["text"]):
            texts[key, tuple(ids.tolist())] += 1
    allowed = {"img/00.jpg": ["caption 00", "zebra", "yak"], "img/01.jpg": ["caption 01"]}
    seen = {(k, tuple(tokenize(c, 12)[0].tolist())) for k, caps in allowed.items() for c in caps}
    assert set(texts) <= seen and len(texts) == 4  # each of image 0's three captions drawn at least once


# -----------------------------------------------------------------------------
# bad inputs


def test_bad_csv_inputs_are_skipped_and_counted(tmp_path):
    path = write_pairs_csv(tmp_path, 4)
    good = jpeg_bytes(99, size=(64, 64))
    (tmp_path / "img" / "garbage.jpg").write_bytes(b"\x00not a jpeg" * 10)
    (tmp_path / "img" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "img" / "nocap.jpg").write_bytes(good)
    (tmp_path / "img" / "badcap.jpg").write_bytes(good)
    with open(path, "ab") as f:
        f.write(b"img/garbage.jpg,x,garbage\nimg/truncated.jpg,x,truncated\nimg/missing.jpg,x,missing\n"
                b"img/nocap.jpg,x,   \nimg/badcap.jpg,x,caf\xe9 au lait\n")
    loader = make_train_loader(path, transform=NONE_8, batch_size=4, workers=1, with_keys=True)
    assert loader.num_samples == 7 and loader.skipped == {"empty_caption": 1, "bad_caption_encoding": 1}
    keys = [k for batch in take(loader, 7) for k in batch["key"]]  # 4 epochs of 7
    assert len(keys) == 28 and set(keys) == {f"img/{i:02d}.jpg" for i in range(4)}
    # met at least once per epoch (replacements may draw a bad sample again: counted again)
    assert loader.skipped["corrupt_image"] >= 8 and loader.skipped["missing_file"] >= 4


def test_bad_tar_inputs_are_skipped_and_counted(tmp_path):
    samples = [(f"k{i}", jpeg_bytes(i), f"cap {i}".encode()) for i in range(4)]
    samples += [("nocap", jpeg_bytes(9), None), ("noimage", None, b"text"), ("empty", jpeg_bytes(9), b" \n"),
                ("latin1", jpeg_bytes(9), "caf\xe9".encode("latin-1")), ("garbage", b"\xff\xd8junk", b"junk")]
    write_shard(tmp_path / "00000.tar", samples)
    write_shard(tmp_path / "00001.tar", [("t0", jpeg_bytes(50), b"kept"), ("t1", jpeg_bytes(60, (64, 64)), b"cut-here")])
    data = (tmp_path / "00001.tar").read_bytes()
    cut = data.rindex(b"cut-here")  # t1.txt's data: cut inside it; t1.jpg survives but t1 has no caption left
    (tmp_path / "00001.tar").write_bytes(data[:cut + 1])
    loader = make_train_loader(str(tmp_path / "{00000..00002}.tar"), transform=NONE_8, batch_size=3,
                               workers=2, with_keys=True)
    assert loader.num_samples == 8  # k0..k3, empty, latin1, garbage, t0
    assert loader.skipped == {"missing_caption": 1, "missing_image": 1, "truncated_member": 1, "missing_shard": 1}
    keys = [k for batch in take(loader, 8) for k in batch["key"]]  # 3 epochs of 8
    assert set(keys) == {"k0", "k1", "k2", "k3", "t0"}
    assert all(loader.skipped[r] >= 3 for r in ("empty_caption", "bad_caption_encoding", "corrupt_image"))


def test_damaged_shards_are_reported(tmp_path):
    write_shard(tmp_path / "a.tar", [(f"k{i}", jpeg_bytes(i), b"cap") for i in range(3)])
    data = bytearray((tmp_path / "a.tar").read_bytes())
    with tarfile.open(tmp_path / "a.tar") as tar:
        offset = tar.getmember("k1.jpg").offset
    data[offset:offset + 16] = b"not a tar header"  # tarfile reads a bad header as the end of the archive
    (tmp_path / "a.tar").write_bytes(bytes(data))
    (tmp_path / "b.tar").write_bytes(b"not a tar at all" * 64)
    skipped = Counter()
    assert [k for k, _, _ in iter_pairs(str(tmp_path / "{a,b}.tar"), skipped=skipped)] == ["k0"]
    assert skipped == {"corrupt_tar_header": 1, "corrupt_shard": 1}


def test_duplicate_tar_keys_first_wins_and_are_counted(tmp_path):
    """Within a shard (a sample written twice, a stray repeated member) and across shards: the first
    sample of a key is read, every later one is counted as duplicate_key."""
    write_shard(tmp_path / "00000.tar", [("a", jpeg_bytes(10), b"first a"), ("b", jpeg_bytes(20), b"first b"),
                                         ("a", jpeg_bytes(30), b"second a")])
    with tarfile.open(tmp_path / "00000.tar", "a") as tar:
        add_member(tar, "b.txt", b"second b")  # one member repeated, no whole sample
    write_shard(tmp_path / "00001.tar", [("c", jpeg_bytes(40), b"only c"), ("a", jpeg_bytes(50), b"third a")])
    spec = str(tmp_path / "{00000..00002}.tar")
    skipped = Counter()
    pairs = list(iter_pairs(spec, skipped=skipped))
    assert [(k, c) for k, _, c in pairs] == [("a", ["first a"]), ("b", ["first b"]), ("c", ["only c"])]
    assert abs(pairs[0][1].getpixel((5, 5))[0] - 10) <= 3  # the first a's image, too
    assert skipped == {"duplicate_key": 3, "missing_shard": 1}
    loader = make_train_loader(spec, transform=NONE_8, batch_size=2, workers=0, dataset_size=2)
    assert loader.summary() == {"source": spec, "pairs": 2, "source_pairs": 3, "shards": 2, "missing_shards": 1,
                                "mode": "index", "skipped": {"duplicate_key": 3, "missing_shard": 1}}
    csv_loader = make_train_loader(write_pairs_csv(tmp_path / "csv", 3, extra_rows=[("img/09.jpg", " ")]),
                                   transform=NONE_8, batch_size=2, workers=0)
    assert csv_loader.summary() == {"source": str(tmp_path / "csv" / "pairs.csv"), "pairs": 3, "source_pairs": 3,
                                    "shards": 0, "missing_shards": 0, "mode": "index", "skipped": {"empty_caption": 1}}


def test_nothing_valid_and_bad_paths_give_one_line_errors(tmp_path):
    """Each names the file, what a sample is there and the skips by reason, or the flag that fixes it."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"junk")
    (tmp_path / "bad.csv").write_text("filepath,title\nimg/a.jpg,a thing\nimg/b.jpg,b thing\nimg/c.jpg,\n")
    (tmp_path / "header.csv").write_text("filepath,title\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "columns.csv").write_text("path,caption\nimg/a.jpg,a\n")
    (tmp_path / "garbage.tar").write_bytes(b"junk" * 300)
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("a caption without its image")
    rows = rf"\(expected rows of an image path in column 'filepath', relative to {re.escape(str(tmp_path))}, and a caption in 'title'\)"
    members = r"\(expected KEY\.jpg\|jpeg\|png\|webp with KEY\.txt members in the 1 shard\(s\) found\)"
    cases = [("bad.csv", ValueError, rf"^no valid sample in .*bad\.csv {rows}; "
                                     r"skipped: corrupt_image 1, empty_caption 1, missing_file 1$"),
             ("header.csv", ValueError, rf"^no valid sample in .*header\.csv {rows}; skipped: none$"),
             ("empty.csv", ValueError, r"empty\.csv is empty; expected a header row naming columns 'filepath' and 'title'"),
             ("columns.csv", ValueError, r"columns\.csv has no column 'filepath' for the image paths \(columns found, "
                                         r"separated by ',': path, caption\); name the column with --csv-img-key$"),
             ("garbage.tar", ValueError, rf"^no valid sample in .*garbage\.tar {members}; skipped: corrupt_shard 1$"),
             ("empty.tar", ValueError, rf"^no valid sample in .*empty\.tar {members}; skipped: none$"),
             ("texts", ValueError, r"^no valid sample in .*texts \(expected images \(\.jpg, \.jpeg, \.png, \.webp\) "
                                   r"with same-name \.txt captions\); skipped: none$"),
             ("x{1..3.tar", ValueError, r"^bad shard pattern '.*x\{1\.\.3\.tar': a '\{' is never closed by a '\}'$"),
             ("x{1..b}.tar", ValueError, r"^bad shard pattern '.*x\{1\.\.b\}\.tar': '\{1\.\.b\}' is neither a list "
                                         r"like \{a,b\} nor a range like \{00000\.\.00099\}$"),
             ("x}.tar", ValueError, r"^bad shard pattern '.*x\}\.tar': a '\}' has no '\{' before it$"),
             ("nope.csv", FileNotFoundError, "nope.csv"),
             ("nowhere", FileNotFoundError, "nowhere"),
             ("{00000..00009}.tar", FileNotFoundError, "00000.tar"),
             ("x*.tar", FileNotFoundError, "matches no file"),
             ("synthetic:colour=3", ValueError, "colour"),
             ("synthetic:noise=lots", ValueError, "noise must be float")]
    for name, error, words in cases:
        spec = name if name.startswith("synthetic") else str(tmp_path / name)
        with pytest.raises(error, match=words) as info:
            make_train_loader(spec, transform=NONE_8, batch_size=2, workers=0)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"no column 'title' for the captions .*--csv-caption-key$"):
        open_source(str(tmp_path / "columns.csv"), csv_img_key="path")


def test_selection_errors_name_the_flags(tmp_path):
    spec, scores = "synthetic:size=10", tmp_path / "scores.csv"
    keys = [open_source(spec).key(i) for i in range(10)]
    write_scores(scores, [f"other/{i}" for i in range(4)] + keys[4:], torch.zeros(10))  # 4 keys of other data
    make = r"make it with eval\.py --task score --data synthetic:size=10$"
    cases = [(dict(dataset_size=11), r"^--dataset-size 11 is more than the 10 usable pairs of synthetic:size=10$"),
             (dict(dataset_size=0), r"^--dataset-size is a number of pairs, at least 1, got 0$"),
             (dict(keep_top=0.5, score_file=str(scores), dataset_size=6), r"^--scores .*scores\.csv has no score for "
              r"4 of 10 pairs of synthetic:size=10 \(first: 'train/00000000'\); " + make),
             (dict(keep_top=0.0, score_file=str(scores)), r"^--keep-top is a fraction in \(0, 1\], got 0\.0$"),
             (dict(keep_top=1.5, score_file=str(scores)), r"^--keep-top is a fraction in \(0, 1\], got 1\.5$"),
             (dict(keep_top=0.5), r"^--keep-top needs --scores FILE, a key,score file; " + make)]
    for options, words in cases:
        with pytest.raises(ValueError, match=words):
            make_train_loader(spec, transform=NONE_8, batch_size=2, workers=0, **options)
    write_scores(scores, keys, torch.arange(10.0))
    with pytest.raises(ValueError, match=r"^--dataset-size 6 is more than the 5 usable pairs of synthetic:size=10 "
                                         r"kept by --keep-top 0\.5$"):
        make_train_loader(spec, transform=NONE_8, batch_size=2, workers=0, keep_top=0.5, score_file=str(scores),
                          dataset_size=6)
    scores.write_text(scores.read_text() + f"{keys[3]},0.5\n")  # a key twice: which score?
    with pytest.raises(ValueError, match=rf"scores\.csv:12: key '{keys[3]}' appears twice, so its score is "
                                         "ambiguous; write the file again with eval.py --task score$"):
        make_train_loader(spec, transform=NONE_8, batch_size=2, workers=0, keep_top=0.5, score_file=str(scores))


# -----------------------------------------------------------------------------
# quantity and quality


def test_quality_filter_keeps_exactly_the_top_fraction(tmp_path):
    path = write_pairs_csv(tmp_path, 10)
    scores = [0.5, 0.9, 0.1, 0.9, 0.3, 0.7, 0.7, 0.2, 0.7, 0.0]  # ties at 0.9 and 0.7: broken by key
    for header in ("key,score\n", ""):
        (tmp_path / "scores.csv").write_text(header + "".join(f"img/{i:02d}.jpg,{s}\n" for i, s in enumerate(scores)))
        source = open_source(path)
        kept = lambda top: [source.key(i) for i in select_indices(source, keep_top=top, score_file=str(tmp_path / "scores.csv"))]
        assert kept(0.4) == ["img/01.jpg", "img/03.jpg", "img/05.jpg", "img/06.jpg"]
        assert kept(0.2) == ["img/01.jpg", "img/03.jpg"] and len(kept(0.8)) == 8 and len(kept(1.0)) == 10
    loader = make_train_loader(path, transform=NONE_8, batch_size=2, workers=0, keep_top=0.4,
                               score_file=str(tmp_path / "scores.csv"), with_keys=True)
    assert sorted(k for b in take(loader, 2) for k in b["key"]) == kept(0.4)
    (tmp_path / "scores.csv").write_text("img/00.jpg,1.0\n")
    with pytest.raises(ValueError, match="no score for 9 of 10 pairs"):
        select_indices(source, keep_top=0.5, score_file=str(tmp_path / "scores.csv"))


def test_score_file_written_atomically_reads_back_exactly(tmp_path):
    keys, scores = ["a", "b,with comma", "c"], torch.tensor([1.0, 0.0, 24 / 25])
    write_scores(tmp_path / "scores.csv", keys, scores)
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["key", "score"] and [row[0] for row in rows[1:]] == keys
    assert torch.tensor([float(row[1]) for row in rows[1:]]).equal(scores)  # exact round trip
    assert read_scores(str(tmp_path / "scores.csv")) == dict(zip(keys, scores.tolist()))
    assert os.listdir(tmp_path) == ["scores.csv"]  # no temporary file left behind


def test_synthetic_keys_match_score_files(tmp_path):
    source = open_source("synthetic:size=10,noise=0.3")
    keys = [source.key(i) for i in range(10)]
    (tmp_path / "s.csv").write_text("".join(f"{k},{i % 4}\n" for i, k in enumerate(keys)))
    kept = [k for k, _, _ in iter_pairs("synthetic:size=10,noise=0.3", keep_top=0.3, score_file=str(tmp_path / "s.csv"))]
    assert kept == [keys[2], keys[3], keys[7]]  # scores 3, 3, then the smaller key of the two 2s


def test_dataset_size_subset_is_fixed_nested_and_exact():
    source = open_source("synthetic:size=100")
    a = select_indices(source, dataset_size=30)
    assert len(a) == 30 == len(set(a.tolist())) and (a == select_indices(source, dataset_size=30)).all()
    assert set(select_indices(source, dataset_size=10).tolist()) < set(a.tolist())
    assert set(a.tolist()) != set(range(30))  # a random subset, not the first 30
    with pytest.raises(ValueError, match="--dataset-size 101 is more than the 100 usable pairs"):
        select_indices(source, dataset_size=101)
    # the training seed shuffles the subset but does not change it
    for seed in (0, 1):
        loader = make_train_loader("synthetic:size=100,image_size=16", transform=NONE_8, batch_size=6, workers=0,
                                   dataset_size=6, seed=seed, with_keys=True)
        assert loader.num_samples == 6
        assert sorted(take(loader, 1)[0]["key"]) == [source.key(int(i)) for i in select_indices(source, 6)]


# -----------------------------------------------------------------------------
# converter


def test_shard_converter_round_trips(tmp_path, capsys):
    path = write_pairs_csv(tmp_path / "d", 5, extra_rows=[("img/02.jpg", "more words")])
    (tmp_path / "d" / "img" / "junk.jpg").write_bytes(b"junk")
    with open(path, "a") as f:
        f.write("img/junk.jpg,x,junk\n")
    main(["shard", "--input", path, "--output", str(tmp_path / "out"), "--shard-size", "2"])
    assert "wrote 5 samples in 3 shards" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "out")) == ["00000.tar", "00001.tar", "00002.tar"]
    original = {k: (c, (tmp_path / "d" / k).read_bytes()) for k, _, c in iter_pairs(path)}
    round_trip = {}
    for shard in sorted(os.listdir(tmp_path / "out")):
        with tarfile.open(tmp_path / "out" / shard) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in files:
            if name.endswith(".json"):
                stem = name[:-5]
                source_key = json.loads(files[name])["source"]
                round_trip[source_key] = (files[stem + ".txt"].decode().split("\n"), files[stem + ".jpg"])
    assert round_trip == original
    # the shards are a dataset: same captions through the reader, keys from the member names
    pairs = list(iter_pairs(str(tmp_path / "out" / "{00000..00002}.tar")))
    assert [k for k, _, _ in pairs] == ["000000", "000001", "000010", "000011", "000020"]
    assert sorted(c for _, _, caps in pairs for c in caps) == sorted(c for caps, _ in original.values() for c in caps)
