"""Where image-text pairs come from: the sources tinyclip trains on, and how bad samples are caught.

A source is map-style: `len(source)`, `source.key(i)` (the name a score file uses), `source.read(i)
-> (image bytes, captions)`, `source.load(i) -> (PIL image, captions)` fully decoded, and
`source.skipped`, a Counter of problems found while indexing. `read`/`load` raise SkipSample(reason)
for a sample that cannot be used; tinyclip.data counts it and moves on (see its docstring).

  synthetic[:noise=0.3,size=N,seed=S,image_size=P,split=train]   tinyclip.synthetic (SyntheticPairs);
                          all five phrasings of an image are its captions; key = meta(i)["key"]
  pairs.csv | pairs.tsv   image path + caption columns (img_key / caption_key, "filepath" / "title"
                          by default, as open_clip); separator from the extension; paths relative to
                          the CSV's folder; rows repeating an image path give that image's several
                          captions; key = the path as written in the file
  data/{00000..00099}.tar tar shards (img2dataset layout, tinyclip.shards), indexed from their tar
                          headers; '::' joins patterns; globs allowed; key = member key (`000000123`)
  folder/                 *.tar inside it, else images (searched recursively) with same-name .txt
                          captions (one per line); key = the image path relative to the folder
  captions.json           COCO-style captions (Karpathy's or COCO's format), evaluation only
                          (CaptionsJSON, opened by tinyclip.tasks); key = the image path

Bad input never stops a run and never goes unnoticed: decoding is complete (img.load(), so a
truncated JPEG fails here, not inside a transform); empty captions, captions that are not UTF-8,
missing files and truncated tar members each have their own reason.
"""

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path

from PIL import Image

from tinyclip import shards as tar_shards
from tinyclip.synthetic import SyntheticPairs

# -----------------------------------------------------------------------------
# bad samples


class SkipSample(Exception):
    """A sample that cannot be used; `reason` is the key it is counted under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_image(data: bytes) -> Image.Image:
    """Fully decode (img.load(): a truncated file fails here, not later in a transform)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
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
    """Captions of a .txt: one per non-empty line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SkipSample("bad_caption_encoding") from None
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    if not captions:
        raise SkipSample("empty_caption")
    return captions


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
    """Shared part of file-backed sources: load = read + full decode."""
    skipped: Counter

    def load(self, index: int) -> tuple[Image.Image, list[str]]:
        data, captions = self.read(index)
        return decode_image(data), captions


class SyntheticSource:
    """tinyclip.synthetic's generator; every image has several phrasings of its (maybe noisy) caption."""
    OPTIONS = {"noise": float, "size": int, "seed": int, "image_size": int, "split": str}

    def __init__(self, options: str = ""):
        kwargs = {"split": "train"}
        for item in filter(None, options.split(",")):
            name, _, value = item.partition("=")
            if name not in self.OPTIONS or not value:
                raise ValueError(f"bad synthetic option {item!r}; use name=value with names {sorted(self.OPTIONS)}")
            try:
                kwargs[name] = self.OPTIONS[name](value)
            except ValueError:
                raise ValueError(f"synthetic option {name} must be {self.OPTIONS[name].__name__}, got {value!r}") from None
        self.pairs, self.skipped = SyntheticPairs(**kwargs), Counter()
        self.name = "synthetic" + (f":{options}" if options else "")

    def __len__(self):
        return len(self.pairs)

    def key(self, index):
        return self.pairs.meta(index)["key"]

    def load(self, index):
        return self.pairs.image(index), self.pairs.captions(index)

    def read(self, index):
        buffer = io.BytesIO()
        self.pairs.image(index).save(buffer, format="PNG")
        return buffer.getvalue(), self.pairs.captions(index)


class PairsDataset(FileSource):
    """A CSV/TSV of image paths and captions (separator from the extension unless given)."""

    def __init__(self, path: str, img_key: str = "filepath", caption_key: str = "title", separator: str = None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such CSV/TSV file: {path!r}")
        self.name, self.root, self.skipped = path, os.path.dirname(os.path.abspath(path)), Counter()
        separator = separator or ("\t" if path.lower().endswith(".tsv") else ",")
        captions: dict[str, list[str]] = {}
        # surrogateescape: a row with bad bytes still parses; check_caption then rejects that caption
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            rows = csv.reader(f, delimiter=separator)
            header = next(rows, None)
            if header is None:
                raise ValueError(f"{path} is empty (expected a header row)")
            for column in (img_key, caption_key):
                if column not in header:
                    raise ValueError(f"{path} has no column {column!r} (columns: {', '.join(header)})")
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
        self.paths = [p for p, caps in captions.items() if caps]  # images left without any caption go
        self.captions = [captions[p] for p in self.paths]

    def __len__(self):
        return len(self.paths)

    def key(self, index):
        return self.paths[index]

    def read(self, index):
        return read_file(os.path.join(self.root, self.paths[index])), self.captions[index]


class FolderPairs(FileSource):
    """A folder (searched recursively) of images with same-name .txt captions."""

    def __init__(self, root: str):
        self.name, self.root, self.paths, self.skipped = root, root, [], Counter()
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            names = set(files)
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext.lower().lstrip(".") in tar_shards.IMAGE_EXTENSIONS:
                    if stem + ".txt" in names:
                        self.paths.append(os.path.relpath(os.path.join(folder, name), root))
                    else:
                        self.skipped["missing_caption"] += 1
        self.paths.sort()

    def __len__(self):
        return len(self.paths)

    def key(self, index):
        return self.paths[index]

    def read(self, index):
        path = os.path.join(self.root, self.paths[index])
        return read_file(path), decode_captions(read_file(os.path.splitext(path)[0] + ".txt"))


class TarShards(FileSource):
    """Tar shards as a map-style source, through a header index (see tinyclip.shards)."""

    def __init__(self, spec: str):
        existing, missing = tar_shards.resolve_shards(spec)
        self.name, self.index = spec, tar_shards.build_index(existing)
        self.skipped = Counter(self.index.skipped)
        if missing:  # a failed img2dataset shard should not stop a run: counted, and the run goes on
            self.skipped["missing_shard"] += len(missing)
        self.reader = tar_shards.ShardReader(existing)

    def __len__(self):
        return len(self.index.keys)

    def key(self, index):
        return self.index.keys[index]

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
    """The source a spec string names (see the module docstring)."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return SyntheticSource(spec.partition(":")[2])
    if spec.lower().endswith((".csv", ".tsv")):
        return PairsDataset(spec, csv_img_key, csv_caption_key, csv_separator)
    if ".tar" in spec:
        return TarShards(spec)
    if os.path.isdir(spec):
        has_tars = any(name.endswith(".tar") for name in os.listdir(spec))
        return TarShards(os.path.join(spec, "*.tar")) if has_tars else FolderPairs(spec)
    raise FileNotFoundError(f"no dataset at {spec!r} (expected 'synthetic', a .csv/.tsv, tar shards or a folder)")


class CaptionsJSON:
    """A COCO-style captions file as a pairs source (len, key, load, skipped, name, as tinyclip.sources).

    Karpathy's format {"images": [{"filename"|"file_name", "filepath"?, "split"?, "sentences": [{"raw"}]}]}
    (only images of `split` when the file has splits) or COCO's {"images": [{"id", "file_name"}],
    "annotations": [{"image_id", "caption"}]}. Keys are image paths relative to `image_root`.
    """

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
        self.paths = [image for image, caps in entries if caps]
        self.captions = [caps for _, caps in entries if caps]
        if not self.paths:
            raise ValueError(f"{path} holds no captioned images (split {split!r} where the file has splits)")

    def __len__(self):
        return len(self.paths)

    def key(self, index):
        return self.paths[index]

    def load(self, index):
        return decode_image(read_file(os.path.join(self.root, self.paths[index]))), self.captions[index]
