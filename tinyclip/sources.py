"""Where image-text pairs and labelled images come from, and how bad samples are caught.

A pairs source is map-style: `len(source)`, `source.key(i)` (the name a score file uses),
`source.read(i) -> (image bytes, captions)`, `source.load(i) -> (PIL image, captions)` fully
decoded, and `source.skipped`, a Counter of problems found while indexing. `read`/`load` raise
SkipSample(reason) for a sample that cannot be used; the reader counts it and moves on (training:
tinyclip.data; evaluation: load_batches below).

  synthetic[:noise=0.3,size=N,seed=S,image_size=P,split=train,style=photo,color_words=1]
                                                                 tinyclip.synthetic (SyntheticPairs);
                          all five phrasings of an image are its captions; key = meta(i)["key"]
  pairs.csv | pairs.tsv   image path + caption columns (img_key / caption_key, "filepath" / "title"
                          by default, as open_clip); separator: the one given, else the extension's,
                          except that a .csv whose header line has tabs and no comma is read as a TSV
                          (and the other way round); paths relative to the CSV's folder; rows repeating
                          an image path give that image's several captions; key = the path as written
  data/{00000..00099}.tar tar shards (img2dataset layout, tinyclip.shards), indexed from their tar
                          headers; '::' joins patterns; globs allowed; key = member key (`000000123`)
  folder/                 *.tar inside it, else images (searched recursively) with same-name .txt
                          captions (one per line); key = the image path relative to the folder
  captions.json           COCO-style captions (CaptionsJSON), evaluation only; key = the image path
  root/CLASS/img.jpg      labelled images for classification (ImageFolderDataset; open_labelled also
                          gives the synthetic val/train split): `dataset[i] -> (PIL image, label)`

Keys are unique within a source. A source with no sample at all is refused when it is opened (one
line naming it, what a sample is there, and the skips by reason); otherwise bad input never stops a
run and never goes unnoticed: every kind of bad image, caption, file or tar member has its reason.
"""

import csv
import functools
import io
import json
import os
from collections import Counter
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader

from tinyclip import shards as tar_shards
from tinyclip.synthetic import SyntheticClassification, SyntheticPairs

# -----------------------------------------------------------------------------
# bad samples

class SkipSample(Exception):
    """A sample that cannot be used; `reason` is the key it is counted under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_image(data: bytes) -> Image.Image:
    """Fully decode (img.load(): a truncated file fails here, not later in a transform), upright: a
    camera's EXIF orientation (a phone photo held sideways) is applied, as a viewer applies it."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # in place: keeps image.format (the shard converter's)
    except Image.DecompressionBombError:
        raise SkipSample("oversized_image") from None
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, ... on bad bytes
        raise SkipSample("corrupt_image") from None
    return image


def check_caption(caption: str) -> str:
    """A stripped caption, or SkipSample for an empty one or one that was not valid UTF-8."""
    try:
        caption.encode("utf-8")  # undecodable bytes were read as lone surrogates
    except UnicodeEncodeError:
        raise SkipSample("bad_caption_encoding") from None
    if not caption.strip():
        raise SkipSample("empty_caption")
    return caption.strip()


def decode_captions(data: bytes) -> list[str]:
    """Captions of a .txt: one per non-empty line (check_caption's SkipSample when none is, or not UTF-8)."""
    text = check_caption(data.decode("utf-8", errors="surrogateescape"))
    return [line.strip() for line in text.splitlines() if line.strip()]


def no_valid_sample(source, skipped: Counter) -> ValueError:
    """The one-line error for a source none of whose samples can be used."""
    counts = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "none"
    return ValueError(f"no valid sample in {source.name} (expected {source.expected}); skipped: {counts}")


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise SkipSample("missing_file") from None
    except OSError:
        raise SkipSample("unreadable_file") from None


# -----------------------------------------------------------------------------
# sources: len, key(i), read(i) -> (image bytes, captions), load(i) -> (PIL image, captions)

class FileSource:
    """Shared part of file-backed sources: sample i is named keys[i] (by default the image path under
    `root`, with `captions[i]`); load = read + full decode; `expected` says what a sample is, for the
    error when there is none."""
    keys: list[str]
    skipped: Counter
    expected: str

    def __len__(self):
        return len(self.keys)

    def key(self, index):
        return self.keys[index]

    def read(self, index):
        return read_file(os.path.join(self.root, self.keys[index])), self.captions[index]

    def load(self, index: int) -> tuple[Image.Image, list[str]]:
        data, captions = self.read(index)
        return decode_image(data), captions


class SyntheticSource:
    """tinyclip.synthetic's generator; every image has several phrasings of its (maybe noisy) caption."""
    OPTIONS = {"noise": float, "size": int, "seed": int, "image_size": int, "split": str, "style": str,
               "color_words": int}

    def __init__(self, options: str = ""):
        kwargs = {"split": "train"}
        for item in filter(None, options.split(",")):
            name, _, value = item.partition("=")
            if name not in self.OPTIONS or not value:
                raise ValueError(f"bad synthetic option {item!r}; use name=value with names {sorted(self.OPTIONS)}")
            kind = self.OPTIONS[name]
            try:
                kwargs[name] = kind(value)
            except ValueError:
                raise ValueError(f"synthetic option {name} must be {kind.__name__}, got {value!r}") from None
        self.pairs, self.skipped = SyntheticPairs(**kwargs), Counter()
        self.name = "synthetic" + (f":{options}" if options else "")

    def __len__(self):
        return len(self.pairs)

    def key(self, index):
        return self.pairs.key(index)

    def load(self, index):
        return self.pairs.image(index), self.pairs.captions(index)

    def read(self, index):
        buffer = io.BytesIO()
        self.pairs.image(index).save(buffer, format="PNG")
        return buffer.getvalue(), self.pairs.captions(index)


class PairsDataset(FileSource):
    """A CSV/TSV of image paths and captions; separator: the one given, else detected (module docstring)."""

    def __init__(self, path: str, img_key: str = "filepath", caption_key: str = "title", separator: str = None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such CSV/TSV file: {path!r}")
        self.name, self.root, self.skipped = path, os.path.dirname(os.path.abspath(path)), Counter()
        self.expected = f"rows of an image path in column {img_key!r}, relative to {self.root}, and a caption in " \
                        f"{caption_key!r}"
        captions: dict[str, list[str]] = {}
        # surrogateescape: a row with bad bytes still parses; check_caption then rejects that caption
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            if separator is None:
                separator, other = ("\t", ",") if path.lower().endswith(".tsv") else (",", "\t")
                first = f.readline()
                separator = other if other in first and separator not in first else separator
                f.seek(0)
            rows = csv.reader(f, delimiter=separator)
            header = next(rows, None)
            if header is None:
                raise ValueError(f"{path} is empty; expected a header row naming columns {img_key!r} and "
                                 f"{caption_key!r}")
            for column, what, flag in ((img_key, "image paths", "--csv-img-key"),
                                       (caption_key, "captions", "--csv-caption-key")):
                if column not in header:
                    raise ValueError(f"{path} has no column {column!r} for the {what} (columns found, separated by "
                                     f"{separator!r}: {', '.join(header)}); name the column with {flag}")
            img_col, caption_col = header.index(img_key), header.index(caption_key)
            for row in rows:
                if not row:
                    continue
                if len(row) <= max(img_col, caption_col) or not row[img_col]:
                    self.skipped["malformed_row"] += 1
                    continue
                group = captions.setdefault(row[img_col], [])
                try:
                    group.append(check_caption(row[caption_col]))
                except SkipSample as bad:
                    self.skipped[bad.reason] += 1
        self.keys = [p for p, caps in captions.items() if caps]  # images left without any caption go
        self.captions = [captions[p] for p in self.keys]


class FolderPairs(FileSource):
    """A folder (searched recursively) of images with same-name .txt captions."""
    expected = f"images ({', '.join('.' + e for e in tar_shards.IMAGE_EXTENSIONS)}) with same-name .txt captions"

    def __init__(self, root: str):
        self.name, self.root, self.keys, self.skipped = root, root, [], Counter()
        for folder, _, files in os.walk(root):  # in any order: the keys are sorted below
            names = set(files)
            for name in files:
                stem, ext = os.path.splitext(name)
                if ext.lower().lstrip(".") in tar_shards.IMAGE_EXTENSIONS:
                    if stem + ".txt" in names:
                        self.keys.append(os.path.relpath(os.path.join(folder, name), root))
                    else:
                        self.skipped["missing_caption"] += 1
        self.keys.sort()

    def read(self, index):
        path = os.path.join(self.root, self.keys[index])
        return read_file(path), decode_captions(read_file(os.path.splitext(path)[0] + ".txt"))


class TarShards(FileSource):
    """Tar shards as a map-style source, through their header index (tinyclip.shards), kept beside them."""

    def __init__(self, spec: str):
        existing, self.missing_shards = tar_shards.resolve_shards(spec)
        self.name, self.index = spec, tar_shards.load_or_build_index(existing)
        self.keys, self.skipped = self.index.keys, Counter(self.index.skipped)
        self.expected = f"KEY.{'|'.join(tar_shards.IMAGE_EXTENSIONS)} with KEY.txt members in the {len(existing)} " \
                        "shard(s) found"
        if self.missing_shards:  # a failed img2dataset shard should not stop a run: counted, the run goes on
            self.skipped["missing_shard"] += len(self.missing_shards)
        self.reader = tar_shards.ShardReader(existing)

    def read(self, index):
        shard = int(self.index.shard[index])
        try:
            image = self.reader.read(shard, *map(int, self.index.image[index]))
            text = self.reader.read(shard, *map(int, self.index.text[index]))
        except EOFError:
            raise SkipSample("truncated_member") from None
        except OSError:
            raise SkipSample("missing_file") from None
        return image, decode_captions(text)


def open_source(spec: str, csv_img_key: str = "filepath", csv_caption_key: str = "title",
                csv_separator: str = None):
    """The source a spec string names (see the module docstring); ValueError when it holds no sample."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return SyntheticSource(spec.partition(":")[2])
    if spec.lower().endswith((".csv", ".tsv")):
        source = PairsDataset(spec, csv_img_key, csv_caption_key, csv_separator)
    elif ".tar" in spec:
        source = TarShards(spec)
    elif os.path.isdir(spec):
        has_tars = any(name.endswith(".tar") for name in os.listdir(spec))
        source = TarShards(os.path.join(spec, "*.tar")) if has_tars else FolderPairs(spec)
    else:
        raise FileNotFoundError(f"no dataset at {spec!r} (expected 'synthetic', a .csv/.tsv, tar shards or a folder)")
    if len(source) == 0:
        raise no_valid_sample(source, source.skipped)
    return source


class CaptionsJSON(FileSource):
    """A COCO-style captions file as a pairs source: Karpathy's format {"images": [{"filename"|"file_name",
    "filepath"?, "split"?, "sentences": [{"raw"}]}]} (only images of `split` when the file has splits)
    or COCO's {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}. Keys are
    image paths relative to `image_root`."""

    def __init__(self, path, image_root=None, split="test"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such captions file: {path}")
        self.name, self.root, self.skipped = path, image_root or os.path.dirname(os.path.abspath(path)), Counter()
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if "annotations" in data:
                captions = {}
                for note in data["annotations"]:
                    captions.setdefault(note["image_id"], []).append(note["caption"].strip())
                entries = [(image["file_name"], captions.get(image["id"], [])) for image in data["images"]]
            else:
                images = data["images"]
                if any("split" in image for image in images):
                    images = [image for image in images if image.get("split") == split]
                entries = [(os.path.join(image.get("filepath", ""), image.get("filename") or image["file_name"]),
                            [s["raw"].strip() for s in image["sentences"]]) for image in images]
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a COCO-style captions JSON ({type(error).__name__}: {error})") from None
        self.skipped.update(no_caption=sum(1 for _, caps in entries if not caps))
        self.keys = [image for image, caps in entries if caps]
        self.captions = [caps for _, caps in entries if caps]
        if not self.keys:
            raise ValueError(f"{path} holds no captioned images (split {split!r} where the file has splits)")


# -----------------------------------------------------------------------------
# labelled images, and reading any source in order (evaluation)

class ImageFolderDataset:
    """root/CLASS/**/*.jpg: `dataset[i] -> (PIL image, label)`, label = position of CLASS among the
    sorted folder names (`classes`); `samples` lists (path, label); SkipSample on a bad image."""
    EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"no such image folder: {root!r}")
        self.root, self.skipped = root, Counter()
        self.classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        self.samples = []  # (path, label)
        for label, name in enumerate(self.classes):
            for folder, subfolders, files in os.walk(os.path.join(root, name)):
                subfolders.sort()
                self.samples += [(os.path.join(folder, f), label) for f in sorted(files)
                                 if f.lower().endswith(self.EXTENSIONS)]
        if not self.samples:
            raise ValueError(f"no images in class folders under {root!r} (expected root/class/image.jpg)")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return decode_image(read_file(path)), label


def synthetic_style(data) -> str | None:
    """The rendering style labelled synthetic data asks for: "photo" for 'synthetic', NAME for
    'synthetic:style=NAME' (tinyclip.synthetic.STYLES: the robustness variants); None for a folder."""
    data = str(data)
    if data == "synthetic":
        return "photo"
    if data.startswith("synthetic:"):
        name, _, style = data[len("synthetic:"):].partition("=")
        if name != "style" or not style:
            raise ValueError(f"labelled synthetic data takes one option, style=NAME; got {data!r}")
        return style
    return None


def open_labelled(data: str, split: str, *, label_set: str, size: int):
    """The synthetic `split` (`size` images of `label_set`, with its class names and templates; in a style
    of its own with 'synthetic:style=NAME') or a folder."""
    style = synthetic_style(data)
    if style:
        return SyntheticClassification(split, label_set=label_set, size=size, style=style)
    return ImageFolderDataset(str(data))


def _load_readable(load, transform, indices):
    """(batch of the samples at `indices` that load, or None, Counter of the others' SkipSample reasons):
    the DataLoader's collate_fn, so loading runs in its workers, where an exception would end it."""
    loaded, reasons = [], Counter()
    for index in indices:
        try:
            image, target = load(index)
        except SkipSample as bad:
            reasons[bad.reason] += 1
            continue
        loaded.append((index, transform(image), target))
    if not loaded:
        return None, reasons
    indices, images, targets = zip(*loaded)
    return {"index": list(indices), "image": torch.stack(images), "target": list(targets)}, reasons


def load_batches(load, count: int, transform, *, skipped: Counter, batch_size: int = 256, workers: int = 0):
    """Yield {"index": [B], "image": [B, 3, S, S], "target": [B]} for indices 0..count-1 in order, from
    `load(i) -> (PIL image, target)`; samples that raise SkipSample are left out, counted in `skipped`."""
    loader = DataLoader(range(count), batch_size=batch_size, num_workers=workers,
                        collate_fn=functools.partial(_load_readable, load, transform))
    for batch, reasons in loader:
        skipped.update(reasons)
        if batch is not None:
            yield batch
