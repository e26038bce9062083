"""Tar shards read as a stream: one pass, member by member, from local files, `pipe:COMMAND` or http(s) URLs.

This is how web-scale data is read without copying it (open_clip's webdataset path, written here on the
stdlib's tarfile): `pipe:aws s3 cp s3://bucket/{00000..41455}.tar -` runs the command once per shard and
reads its stdout; `https://host/{0000..0999}.tar` is read through urllib. A shard's members are grouped
into samples by key as tinyclip.shards names them (KEY.jpg + KEY.txt, keys in sub-folders kept), with one
difference a single pass imposes: a key's members must be adjacent, as every tar writer leaves them; a key
that comes back later in its shard is a "duplicate_key", and duplicates across shards go unseen.

Order. The stream is split into slots, one per (rank, DataLoader worker): slot = rank * workers + worker.
Each epoch a permutation of the shards seeded by (seed, epoch) gives every slot n // slots shards of its
own, so no sample is read twice in an epoch; the n % slots shards at the permutation's end sit out that
epoch (a different few each epoch). With `resampled` (open_clip's --dataset-resampled) each slot instead
draws shards with replacement, forever, seeded by (seed, slot): an "epoch" is then a budget, not a pass.
A slot's samples go through a shuffle buffer of `buffer_size`: once it is full, each new sample takes the
place of one drawn at random, the draw seeded by (seed, epoch, slot, count), and the buffer is emptied at
the end of each epoch.

Exact resume. A slot's position is small: (epoch, shard ordinal, key groups read in that shard, samples
given out, and which (shard, group) each sample in the buffer is). `state()` returns it after every sample;
a slot started from it re-reads, without decoding, the shards its buffer's samples came from, and goes on
exactly where it stopped. So a resumed run sees the same samples as an uninterrupted one, at the same world
size and worker count, provided the storage returns the same bytes.

Faults. A shard that fails while read (the command exits non-zero, an HTTP error, a truncated stream) is
opened again up to `retries` times, reading on after the samples already taken; then the rest of it is
skipped and counted by reason: pipe_failed, http_error, truncated_shard, unreadable_shard.
"""

import contextlib
import http.client
import os
import random
import shlex
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from collections import Counter

import numpy as np

from tinyclip.shards import IMAGE_EXTENSIONS, expand_braces, resolve_shards
from tinyclip.sources import SkipSample  # what a shard that cannot be read to its end raises, with its reason

HTTP_TIMEOUT_S = 60


def is_url(spec: str) -> bool:
    return spec.startswith(("pipe:", "http://", "https://"))


def shard_urls(spec: str) -> tuple[list[str], list[str]]:
    """The shards `spec` names ('::'-joined, braces expanded), as (found, missing). URLs are taken as named
    (what exists is known only when read); local paths go through tinyclip.shards.resolve_shards. A pipe
    command that is not installed is a ValueError."""
    found, missing, local = [], [], []
    for pattern in spec.split("::"):
        if not is_url(pattern):  # a folder stands for the shards in it, as in index mode
            local.append(os.path.join(pattern, "*.tar") if os.path.isdir(pattern) else pattern)
            continue
        try:
            found += expand_braces(pattern)
        except ValueError as error:
            raise ValueError(f"bad shard pattern {pattern!r}: {error}") from None
        if pattern.startswith("pipe:"):
            program = (shlex.split(pattern[5:]) or [""])[0]
            if not shutil.which(program):
                raise ValueError(f"{pattern!r}: the command {program!r} is not found")
    if local:
        existing, missing = resolve_shards("::".join(local))
        found += existing
    return found, missing


def key_groups(url: str):
    """(key, {extension: bytes, "repeated": True if a member came twice}) of one shard, in stream order."""
    proc = None
    try:
        if url.startswith("pipe:"):
            proc = subprocess.Popen(url[5:], shell=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            stream = proc.stdout
        elif is_url(url):
            stream = urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S)
        else:
            stream = open(url, "rb")
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        raise SkipSample("http_error" if is_url(url) else "unreadable_shard") from None
    try:
        key, parts = None, {}
        with tarfile.open(fileobj=stream, mode="r|*") as tar:  # one forward pass, no seeks; gzip too
            for member in tar:
                if not member.isfile():
                    continue
                folder, base = os.path.split(member.name)
                stem, _, ext = base.partition(".")
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise EOFError
                if os.path.join(folder, stem) != key:
                    if key is not None:
                        yield key, parts
                    key, parts = os.path.join(folder, stem), {}
                parts["repeated"] = parts.get("repeated", False) or ext.lower() in parts
                parts.setdefault(ext.lower(), data)  # the first copy of a member is the one read
            # tarfile ends quietly at a header cut short; a whole archive ends with two zero blocks
            whole = tar.fileobj.read(tarfile.BLOCKSIZE) == bytes(tarfile.BLOCKSIZE)
        if key is not None:
            yield key, parts  # its members were read whole, whatever came after them
        if not whole:
            raise EOFError
        if proc is not None:
            stream.read()  # the tar's padding, so that the command can finish
            if proc.wait() != 0:
                raise SkipSample("pipe_failed")
    except (tarfile.TarError, EOFError, OSError, http.client.HTTPException, urllib.error.URLError) as error:
        if proc is not None:  # the command's exit status says whether it failed or its output was cut short
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            reason = "pipe_failed" if proc.poll() not in (None, 0) else "truncated_shard"
        elif isinstance(error, (tarfile.TarError, EOFError, http.client.IncompleteRead)):
            reason = "truncated_shard"
        else:
            reason = "http_error" if is_url(url) else "unreadable_shard"
        raise SkipSample(reason) from None
    finally:
        stream.close()
        if proc is not None:
            proc.kill()
            proc.wait()


def shard_samples(url: str, start: int, skipped: Counter, retries: int):
    """(group ordinal, key, image bytes, text bytes) of one shard's usable samples from key group `start` on.
    Unusable groups are counted in `skipped` as tinyclip.shards counts them; a failed read is retried from
    where it stopped (the groups before are passed over, not counted again) up to `retries` times."""
    done, seen = start, set()
    for _ in range(retries + 1):
        try:
            with contextlib.closing(key_groups(url)) as groups:
                for ordinal, (key, parts) in enumerate(groups):
                    repeated = key in seen
                    seen.add(key)
                    if ordinal < done:
                        continue
                    done = ordinal + 1
                    image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
                    problem = ("duplicate_key" if repeated else "missing_image" if image is None
                               else "missing_caption" if "txt" not in parts else "")
                    if parts["repeated"] and not repeated:
                        skipped["duplicate_key"] += 1  # a member written twice: counted, its first copy used
                    if problem:
                        skipped[problem] += 1
                        continue
                    yield ordinal, key, image, parts["txt"]
            return
        except SkipSample as error:
            reason = error.reason
            seen = set()
    skipped[reason] += 1


class SlotStream:
    """One slot's samples, forever: (draw, key, image bytes, text bytes), draw naming the sample's place in the
    stream (its augmentation is seeded by it). See the module docstring for the order, `state` for resume."""
    MAX_BARREN = 100  # shards in a row without a usable sample before the slot gives up

    def __init__(self, urls, *, slot: int, slots: int, seed: int, buffer_size: int, resampled: bool, retries: int,
                 skipped: Counter, state: dict = None):
        self.urls, self.slot, self.seed = urls, slot, seed
        self.buffer_size, self.resampled, self.retries, self.skipped = max(1, buffer_size), resampled, retries, skipped
        state = state or {"epoch": 0, "shard": 0, "group": 0, "yielded": 0, "buffer": []}
        self.epoch, self.shard, self.group, self.yielded = (state[k] for k in ("epoch", "shard", "group", "yielded"))
        self.per_epoch = None if resampled else len(urls) // slots  # the slot's shards in each epoch
        self.buffer = self.reread(state["buffer"]) if state["buffer"] else []

    def url(self, ordinal: int) -> str:
        """The slot's shard number `ordinal` of the current epoch."""
        if self.resampled:
            return self.urls[np.random.default_rng([self.seed, self.slot, ordinal]).integers(len(self.urls))]
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.urls))
        return self.urls[order[self.slot * self.per_epoch + ordinal]]

    def state(self) -> dict:
        return {"epoch": self.epoch, "shard": self.shard, "group": self.group, "yielded": self.yielded,
                "buffer": [list(item[0]) for item in self.buffer]}

    def reread(self, ids) -> list:
        """The buffer of a saved state: the shards its samples came from read again, up to the saved position."""
        wanted, found = {tuple(i) for i in ids}, {}
        for ordinal in range(min(i for i, _ in ids), self.shard + 1):
            with contextlib.closing(shard_samples(self.url(ordinal), 0, Counter(), self.retries)) as samples:
                for group, key, image, text in samples:
                    if ordinal == self.shard and group >= self.group:
                        break
                    if (ordinal, group) in wanted:
                        found[ordinal, group] = ((ordinal, group), key, image, text)
        if len(found) != len(wanted):
            raise ValueError(f"the shards do not hold what the run read before ({len(wanted) - len(found)} of its "
                             f"buffered samples are gone): the data changed since the checkpoint")
        return [found[tuple(i)] for i in ids]

    def hand_out(self, item=None):
        """A sample drawn from the buffer, as (draw, key, image bytes, text bytes); `item` takes its place, or
        with none (the epoch's end) the buffer shrinks by one. The draw is seeded by the samples given out."""
        rng = random.Random(f"tinyclip-buffer:{self.seed}:{self.epoch}:{self.slot}:{self.yielded}")
        index = rng.randrange(len(self.buffer))
        _, key, image, text = self.buffer[index]
        self.buffer[index] = item or self.buffer[-1]
        if item is None:
            self.buffer.pop()
        draw, self.yielded = f"{self.epoch}:{self.slot}:{self.yielded}", self.yielded + 1
        return draw, key, image, text

    def __iter__(self):
        barren = 0  # shards in a row that gave no usable sample
        while True:
            while self.resampled or self.shard < self.per_epoch:
                if barren >= self.MAX_BARREN:
                    raise ValueError(f"{barren} shards in a row gave no usable sample (slot {self.slot}; skipped "
                                     f"{dict(self.skipped)}): is the storage reachable?")
                barren += 1
                for group, key, image, text in shard_samples(self.url(self.shard), self.group, self.skipped,
                                                             self.retries):
                    self.group, barren = group + 1, 0
                    item = ((self.shard, group), key, image, text)
                    if len(self.buffer) < self.buffer_size:
                        self.buffer.append(item)
                    else:
                        yield self.hand_out(item)
                self.shard, self.group = self.shard + 1, 0
            while self.buffer:  # the epoch's end: the buffer empties in a seeded order
                yield self.hand_out()
            self.epoch, self.shard, self.group, self.yielded = self.epoch + 1, 0, 0, 0
