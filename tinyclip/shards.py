"""Tar shards in the img2dataset / webdataset layout: shard lists, a header index, reading, writing.

A shard is an uncompressed tar whose members are grouped into samples by key: `KEY.jpg` (or .jpeg,
.png, .webp) holds the image, `KEY.txt` the captions, one per line (img2dataset writes one caption
per file, read as one caption unless it holds newlines), `KEY.json` optional metadata. The key is
the member name up to the first dot of its basename (folders inside the tar are kept, so a flat
img2dataset shard gives keys like `000000123`). A key names one sample, so a score file can name
pairs by key: the first member of each key and extension in a shard is the one read, and so is the
first shard holding a key; a member repeated in a shard (`KEY.jpg` twice) and a key that comes back
in a later shard are each skipped and counted as "duplicate_key" (a sample written twice counts once).

Reading here is *indexed*: `build_index` reads every shard's tar headers once (tarfile seeks over
member data, so one 512-byte read per member) and records where each sample's image and text bytes
lie. tinyclip.data then treats the shards as a map-style dataset: exact epochs, exact resume at any
world size or worker count, exact subsets and quality filters. The cost is random reads across
shards, which suits local disks; shards in object storage or behind HTTP are streamed instead
(tinyclip.stream).
The index is built once and kept beside the shards (`load_or_build_index`: a hidden .npz in the first
shard's folder, named by the shard list; for shards in a folder that cannot be written, in the user's
cache folder): later runs and the other ranks load it in a fraction of a second while every shard keeps
its size and mtime, and rebuild it when one changes.
Nothing here decodes images (tinyclip.sources does).
"""

import glob
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import re
import sys
import tarfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tinyclip.checkpoint import atomic_write

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


# -----------------------------------------------------------------------------
# shard lists: brace expansion, '::' lists, globs

def expand_braces(pattern: str) -> list[str]:
    """Expand shell-style braces: `{00000..00099}` (zero padding kept), `{a,b}`, nested and repeated;
    ValueError saying what is wrong with a malformed one (resolve_shards adds the pattern)."""
    start = pattern.find("{")
    if start < 0:
        if "}" in pattern:
            raise ValueError("a '}' has no '{' before it")
        return [pattern]
    depth, cuts = 0, [start]  # the first '{' and the commas between its alternatives
    for end in range(start, len(pattern)):  # to the '}' that closes the first '{'
        depth += {"{": 1, "}": -1}.get(pattern[end], 0)
        if pattern[end] == "," and depth == 1:
            cuts.append(end)
        if depth == 0:
            break
    else:
        raise ValueError("a '{' is never closed by a '}'")
    head, body, tail = pattern[:start], pattern[start + 1:end], pattern[end + 1:]
    if len(cuts) > 1:
        alternatives = [pattern[a + 1:b] for a, b in zip(cuts, cuts[1:] + [end])]
    else:
        match = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
        if match is None:
            raise ValueError(f"'{{{body}}}' is neither a list like {{a,b}} nor a range like {{00000..00099}}")
        first, last = match.groups()
        padded = any(len(bound) > 1 and bound.startswith("0") for bound in (first, last))
        width = max(len(first), len(last)) if padded else 0
        a, b = int(first), int(last)
        step = 1 if b >= a else -1
        alternatives = [f"{n:0{width}d}" for n in range(a, b + step, step)]
    return [out for alt in alternatives for out in expand_braces(head + alt + tail)]


def resolve_shards(spec: str) -> tuple[list[str], list[str]]:
    """Shard paths named by `spec` ('::'-joined patterns; braces; globs), as (existing, missing): one
    failed img2dataset shard should not stop a run (the caller counts it); a glob matching nothing, or
    nothing existing, raises."""
    existing, missing = [], []
    for pattern in spec.split("::"):
        try:
            paths = expand_braces(os.path.expanduser(pattern))
        except ValueError as error:
            raise ValueError(f"bad shard pattern {pattern!r}: {error}") from None
        for path in paths:
            if any(ch in path for ch in "*?["):
                matches = sorted(glob.glob(path))
                if not matches:
                    raise FileNotFoundError(f"shard pattern {path!r} matches no file")
                existing += matches
            else:
                (existing if os.path.isfile(path) else missing).append(path)
    if not existing:
        raise FileNotFoundError(f"no shard named by {spec!r} exists (first missing: {missing[0]!r})")
    return existing, missing


# -----------------------------------------------------------------------------
# header index

def scan_shard(path: str) -> tuple[list[tuple[str, str, int, int, int, int]], Counter]:
    """One shard's samples as rows (key, problem, image offset, image size, text offset, text size) and
    its skips: problem is "" for a usable sample, else why not (no image, no .txt, a member whose data
    runs past the end of the file); damaged headers, unreadable shards and repeated members are counted."""
    skipped: Counter = Counter()
    parts: dict[str, dict[str, tuple[int, int]]] = {}  # key -> {extension: (offset, size)}
    copies, repeats = Counter(), Counter()  # (key, extension) -> members seen; key -> copies after the first
    try:
        file_size = os.path.getsize(path)
        with tarfile.open(path, mode="r:") as tar:  # plain tar: seeks over data, reads headers only
            while True:
                try:
                    member = tar.next()
                except tarfile.TarError:  # the archive ends inside a member's data
                    break
                if member is None:  # the end, or a damaged header that tarfile reads as the end
                    tar.fileobj.seek(tar.offset)
                    if tar.fileobj.read(tarfile.BLOCKSIZE).strip(b"\0"):
                        skipped["corrupt_tar_header"] += 1  # members after it are lost: say so
                    break
                if not member.isfile():
                    continue
                folder, base = os.path.split(member.name)
                stem, _, ext = base.partition(".")  # the extension is everything after the first dot
                key, ext = os.path.join(folder, stem), ext.lower()  # 'dir/000123.jpg' -> 'dir/000123', 'jpg'
                if member.offset_data + member.size > file_size:
                    ext = "truncated"
                copies[key, ext] += 1
                if copies[key, ext] - 1 > repeats[key]:  # a further copy of this key: counted once
                    repeats[key] += 1
                    skipped["duplicate_key"] += 1
                parts.setdefault(key, {}).setdefault(ext, (member.offset_data, member.size))  # the first wins
    except (tarfile.TarError, OSError):
        skipped["corrupt_shard"] += 1
        return [], skipped
    rows = []
    for key, found in parts.items():
        image = next((found[e] for e in IMAGE_EXTENSIONS if e in found), None)
        problem = ("truncated_member" if "truncated" in found else "missing_image" if image is None
                   else "missing_caption" if "txt" not in found else "")
        rows.append((key, problem, *(image or (0, 0)), *found.get("txt", (0, 0))))
    return rows, skipped


@dataclass
class TarIndex:
    """Where every sample's bytes lie: `keys[i]` is in `shards[shard[i]]` at image/text (offset, size)."""
    shards: list[str]
    keys: list[str]
    shard: np.ndarray  # N, int32
    image: np.ndarray  # N, 2 int64 (offset, size)
    text: np.ndarray  # N, 2 int64
    skipped: Counter = field(default_factory=Counter)


def build_index(paths: list[str], processes: int = None) -> TarIndex:
    """Scan the headers of all shards, in forked processes when there are many: a header costs about
    30 us in Python. Fork, as DataLoader workers on Linux (spawn would re-run the caller's script);
    where fork does not exist the scan runs in this process."""
    if processes is None:
        processes = min(os.cpu_count() or 1, 16) if len(paths) >= 8 else 1
    processes = max(1, min(processes, len(paths)))
    if processes > 1 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            scans = list(pool.map(scan_shard, paths, chunksize=max(1, len(paths) // (4 * processes))))
    else:
        scans = [scan_shard(path) for path in paths]
    keys, shard, locations, skipped, seen = [], [], [], Counter(), set()
    for shard_id, (rows, shard_skipped) in enumerate(scans):
        skipped.update(shard_skipped)
        for key, problem, *where in rows:
            if key in seen or problem:  # a key's first sample is the one read, usable or not
                skipped["duplicate_key" if key in seen else problem] += 1
            else:
                keys.append(key)
                shard.append(shard_id)
                locations.append(where)
            seen.add(key)
    where = np.asarray(locations, dtype=np.int64).reshape(-1, 4)
    return TarIndex(list(paths), keys, np.asarray(shard, dtype=np.int32), where[:, :2], where[:, 2:], skipped)


INDEX_FORMAT = 1  # bump when the cache file's layout changes: older files are then rebuilt


def index_cache_paths(paths: list[str]) -> list[str]:
    """Where the index of exactly these shards is kept, named by a hash of the shard list (so another list,
    e.g. a subset, gets its own file): a hidden file in the first shard's folder, else (that folder read-only,
    as shared datasets often are) a file in $XDG_CACHE_HOME/tinyclip (default ~/.cache/tinyclip)."""
    absolute = [os.path.abspath(path) for path in paths]
    digest = hashlib.sha1("\n".join(absolute).encode("utf-8")).hexdigest()[:16]
    user_cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tinyclip")
    name = f".tinyclip-index-{digest}.npz"
    return [os.path.join(os.path.dirname(absolute[0]), name), os.path.join(user_cache, name)]


def load_or_build_index(paths: list[str]) -> TarIndex:
    """The index of `paths`, read from a cache file (index_cache_paths, in order) that was built from these
    very shards (same list, sizes and mtimes), else built and written atomically to the first place that
    can be written; where none can, only the rebuild next time is lost. A damaged or unreadable cache file
    is rebuilt, never an error."""
    caches = index_cache_paths(paths)
    # (absolute path, size, mtime) per shard, taken before the scan: a shard changed during it reads as stale
    fingerprint = [[os.path.abspath(path), stat.st_size, stat.st_mtime_ns] for path, stat in
                   zip(paths, map(os.stat, paths))]
    for cache in caches:
        try:
            with np.load(cache, allow_pickle=False) as saved:
                meta = json.loads(str(saved["meta"]))
                if meta["format"] == INDEX_FORMAT and meta["fingerprint"] == fingerprint:
                    keys = json.loads(saved["keys"].tobytes().decode("utf-8"))
                    index = TarIndex(list(paths), keys, saved["shard"], saved["image"], saved["text"],
                                     Counter(meta["skipped"]))
                    if len(keys) == len(index.shard) == len(index.image) == len(index.text):
                        return index
        except Exception:  # missing, truncated, garbage, another layout: any of them means rebuild
            pass
    index = build_index(paths)
    meta = json.dumps({"format": INDEX_FORMAT, "fingerprint": fingerprint, "skipped": index.skipped})
    keys = np.frombuffer(json.dumps(index.keys).encode("utf-8"), np.uint8)  # compact, unlike a U-width array
    failed = []
    for cache in caches:
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            with atomic_write(cache) as f:  # ranks writing at once each rename a whole file: the last one stays
                np.savez(f, meta=np.array(meta), keys=keys, shard=index.shard, image=index.image, text=index.text)
            return index
        except OSError as error:
            failed.append(f"{cache}: {error.strerror or error}")
    print(f"tinyclip: shard index not cached ({'; '.join(failed)}); built in memory", file=sys.stderr)
    return index


class ShardReader:
    """Reads byte ranges from shards, keeping up to MAX_OPEN files open per process. Handles are never
    shared between processes: a forked worker's seeks would race with the parent's on a shared offset."""
    MAX_OPEN = 32

    def __init__(self, paths: list[str]):
        self.paths, self._open, self._pid = paths, {}, os.getpid()

    def read(self, shard_id: int, offset: int, size: int) -> bytes:
        if self._pid != os.getpid():  # inherited through fork: start afresh
            self._open, self._pid = {}, os.getpid()
        handle = self._open.pop(shard_id, None)  # re-inserted below: most recently used last
        if handle is None:
            if len(self._open) >= self.MAX_OPEN:
                self._open.pop(next(iter(self._open))).close()
            handle = open(self.paths[shard_id], "rb")
        self._open[shard_id] = handle
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise EOFError(f"{self.paths[shard_id]}: member at {offset} is truncated")
        return data

    def __getstate__(self):
        return {"paths": self.paths, "_open": {}, "_pid": None}


# -----------------------------------------------------------------------------
# writing

def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: same input, same bytes
    tar.addfile(info, io.BytesIO(data))


def write_shards(samples, output_dir: str, shard_size: int = 1000) -> list[str]:
    """Write (source_key, image_bytes, image_ext, captions) samples to output_dir/00000.tar, ... with
    img2dataset-style keys (shard number, then position), KEY.txt one caption per line and KEY.json
    the original key as "source"; each shard atomically, so a crash never leaves a truncated one."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    os.makedirs(output_dir, exist_ok=True)
    width, written = len(str(shard_size - 1)), []
    for shard_id, shard in itertools.groupby(enumerate(samples), lambda item: item[0] // shard_size):
        written.append(os.path.join(output_dir, f"{shard_id:05d}.tar"))
        with atomic_write(written[-1]) as f, tarfile.open(fileobj=f, mode="w") as tar:
            for count, (source_key, image_bytes, ext, captions) in shard:
                key = f"{shard_id:05d}{count % shard_size:0{width}d}"
                text = "\n".join(" ".join(c.split("\n")) for c in captions)
                _add_member(tar, f"{key}.{ext}", image_bytes)
                _add_member(tar, f"{key}.txt", text.encode("utf-8"))
                _add_member(tar, f"{key}.json", json.dumps({"key": key, "source": source_key}).encode("utf-8"))
    return written
