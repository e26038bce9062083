"""Which image-text pairs CLIP trains on, and in what order: subsets, the quality filter with its
score file (read and written here), the distributed training stream and loader, and the converter
to tar shards. Where pairs come from (the `spec` string) is tinyclip.sources.

"Scaling (Down) CLIP" (Li, Xie, Cubuk 2024) varies the data along two axes, each an option here:
quantity, `dataset_size=N`, a fixed random subset (not seeded by the training seed; a smaller subset
lies inside every larger one), and quality, `keep_top=0.4` with the `key,score` file `eval.py --task
score` writes: exactly round(0.4 * N) pairs with the highest image-text scores, ties broken by key.
The quality filter runs first, then the subset.

The training stream, index mode (BatchStream). Every source is map-style (tar shards through a header
index): global position p, the number of samples all ranks together consumed before it, is in
epoch p // N and reads sample perm_epoch[p % N], a permutation seeded by (seed, epoch), so every
epoch visits every pair once, reshuffled. With G = B * world_size, rank r's batch k holds positions
start_sample + k*G + r*B + [0, B): its slice of global batch k. DataLoader worker w builds whole
batches k = w, w + K, w + 2K, ... (the DataLoader hands them out round-robin, in order), and a
sample's caption choice and augmentation draw from random.Random seeded by (seed, p). Batches are
therefore a function of (seed, position) alone: identical for any worker count, and a run resumed
with start_sample = samples seen continues the same sample sequence, bit-identical to an
uninterrupted run's when the global batch is the same. The stream is infinite; epochs follow from
samples seen, and all ranks get the same number of batches.

Stream mode (StreamBatches: pipe:/http URLs, or local shards on request). Shards read in one pass cannot
be read at a position, so each DataLoader worker reads its own slot of tinyclip.stream and builds
whole batches from it; a sample's draws are seeded by its place in that slot's stream, and each batch
carries its worker's position after it, which the loader keeps (`positions`) and a checkpoint saves.
A batch is then a function of (seed, world size, workers, position), and a resume is exact at the
same world size and worker count.

A bad sample is skipped and replaced by a random one drawn with a generator seeded by (seed, p), so
batches stay full and deterministic (stream mode: skipped, and the slot's next sample taken). Each
batch carries its worker's skip counts under "skipped"; the loader adds them up in `loader.skipped`
(with the problems found while indexing, counted once; decode-time problems are counted each time
they are met).

Converter: python -m tinyclip.data shard --input pairs.csv|folder|shards --output out/ --shard-size 1000
(here, not in tinyclip.shards, because it reads any source: sources.py imports shards.py, not back).
"""

import argparse
import csv
import hashlib
import io
import os
import random
import shlex
import sys
from collections import Counter

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tinyclip.checkpoint import atomic_write
from tinyclip.shards import write_shards
from tinyclip.sources import SkipSample, TarShards, decode_captions, decode_image, no_valid_sample, open_source
from tinyclip.stream import SlotStream, is_url, shard_samples, shard_urls
from tinyclip.tokenizer import tokenize

# -----------------------------------------------------------------------------
# quantity and quality: subsets and the score filter

def read_scores(path: str) -> dict[str, float]:
    """A `key,score` file (comma, or tab for .tsv; a header row is optional) as {key: score}."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such score file: {path!r}")
    scores = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f, delimiter="\t" if path.endswith(".tsv") else ","), 1):
            if not row:
                continue
            try:
                score = float(row[1]) if len(row) >= 2 else float("nan")
            except ValueError:
                score = None  # a header, if it is the first row
            if score is None and line == 1:
                continue
            if score is None or score != score:
                raise ValueError(f"{path}:{line}: expected 'key,score', got {','.join(row)[:80]!r}")
            if row[0] in scores:
                raise ValueError(f"{path}:{line}: key {row[0]!r} appears twice, so its score is ambiguous; "
                                 f"write the file again with eval.py --task score")
            scores[row[0]] = score
    return scores


def write_scores(path, keys, scores) -> None:
    """Write the `key,score` CSV (with a header) that read_scores and `train.py --scores` read; atomic,
    so a killed scoring run never leaves a half-written file for a filter to trust."""
    with atomic_write(path) as f:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(["key", "score"])
        writer.writerows((key, repr(float(score))) for key, score in zip(keys, scores))
        text.detach()  # flushes into f and leaves it open for atomic_write to sync


def select_indices(source, dataset_size: int = None, keep_top: float = None, score_file: str = None) -> np.ndarray:
    """Source indices kept: the top `keep_top` fraction by score, then a seeded subset of dataset_size.
    Errors name train.py's flags (--keep-top, --scores, --dataset-size)."""
    indices = np.arange(len(source))
    make_scores = f"make it with eval.py --task score --data {shlex.quote(source.name)}"
    if keep_top is not None:
        if not 0 < keep_top <= 1:
            raise ValueError(f"--keep-top is a fraction in (0, 1], got {keep_top}")
        if score_file is None:
            raise ValueError(f"--keep-top needs --scores FILE, a key,score file; {make_scores}")
        scores, keys = read_scores(score_file), [source.key(int(i)) for i in indices]  # keys: unique in a source
        unscored = [k for k in keys if k not in scores]
        if unscored:
            raise ValueError(f"--scores {score_file} has no score for {len(unscored)} of {len(keys)} pairs of "
                             f"{source.name} (first: {unscored[0]!r}); {make_scores}")
        n_keep = max(1, round(keep_top * len(keys)))
        ranked = sorted(range(len(keys)), key=lambda i: (-scores[keys[i]], keys[i]))  # ties: by key, for determinism
        indices = np.sort(np.asarray(ranked[:n_keep], dtype=np.int64))
    if dataset_size is not None:
        if dataset_size < 1:
            raise ValueError(f"--dataset-size is a number of pairs, at least 1, got {dataset_size}")
        if dataset_size > len(indices):
            kept = f" kept by --keep-top {keep_top}" if keep_top is not None else ""
            raise ValueError(f"--dataset-size {dataset_size} is more than the {len(indices)} usable pairs of "
                             f"{source.name}{kept}")
        chosen = np.random.default_rng(0).permutation(len(indices))[:dataset_size]  # not the training seed
        indices = indices[np.sort(chosen)]  # a prefix of one permutation: smaller subsets nest in larger
    return indices


def first_valid(source, indices) -> None:
    """Raise a one-line ValueError unless some selected sample loads (decodes) correctly."""
    reasons = Counter()
    for index in indices:
        try:
            source.load(int(index))
            return
        except SkipSample as bad:
            reasons[bad.reason] += 1
    raise no_valid_sample(source, reasons + source.skipped)


# -----------------------------------------------------------------------------
# the training stream

class BatchStream(IterableDataset):
    """Rank `rank`'s batches, forever; in a DataLoader worker, only that worker's share (see top)."""
    MAX_ATTEMPTS = 1000  # replacements tried for one position before giving up

    def __init__(self, source, indices, *, transform, batch_size, rank, world_size, seed, start_sample,
                 context_length, ssl_transform, with_keys):
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self.transform, self.ssl_transform, self.with_keys = transform, ssl_transform, with_keys
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.start_sample, self.context_length = seed, start_sample, context_length
        self._permutations, self._bad = {}, {}  # per process: epoch -> permutation; index -> reason

    def __iter__(self):
        info = get_worker_info()
        batch, step = (info.id, info.num_workers) if info is not None else (0, 1)
        while True:
            yield self.make_batch(batch)
            batch += step

    def index_at(self, position: int) -> int:
        """Source index at a global stream position: epoch permutation, then the selection."""
        epoch, offset = divmod(position, len(self.indices))
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:  # positions only grow: the oldest epoch is done
                self._permutations.pop(min(self._permutations))
            self._permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))
        return int(self.indices[self._permutations[epoch][offset]])

    def load(self, position: int, skipped: Counter):
        """(index, image, captions) for a position; bad samples are counted and replaced, deterministically."""
        index = self.index_at(position)
        replacement = None
        for _ in range(self.MAX_ATTEMPTS):
            try:
                if index in self._bad:
                    raise SkipSample(self._bad[index])
                return index, *self.source.load(index)
            except SkipSample as bad:
                skipped[bad.reason] += 1
                self._bad[index] = bad.reason  # met again: counted again, not decoded again
            if len(self._bad) >= len(self.indices):
                raise ValueError(f"no valid sample left in {self.source.name}: skipped {dict(skipped)}")
            replacement = replacement or random.Random(f"tinyclip-replace:{self.seed}:{position}")
            index = int(self.indices[replacement.randrange(len(self.indices))])
        raise ValueError(f"{self.MAX_ATTEMPTS} bad samples in a row in {self.source.name}: {dict(skipped)}")

    def make_batch(self, batch: int) -> dict:
        skipped, samples = Counter(), []
        first = self.start_sample + (batch * self.world_size + self.rank) * self.batch_size
        for position in range(first, first + self.batch_size):
            index, image, captions = self.load(position, skipped)
            rng = random.Random(f"tinyclip-sample:{self.seed}:{position}")  # same for any worker count
            samples.append((self.source.key(index), image, captions, rng))
        return {**assemble(samples, self), "skipped": dict(skipped)}


def assemble(samples, stream) -> dict:
    """A batch dict from (key, PIL image, captions, rng) samples: a caption drawn, the image transformed (and
    SLIP's two views), the captions tokenized, each sample's draws from its own rng in that order."""
    images, texts, views = [], [], []
    for _, image, captions, rng in samples:
        texts.append(rng.choice(captions))
        images.append(stream.transform(image, rng))  # 3, S, S
        if stream.ssl_transform is not None:  # sample i's two views: rows 2i, 2i + 1, the first drawn first
            views += [stream.ssl_transform(image, rng), stream.ssl_transform(image, rng)]
    out = {"image": torch.stack(images), "text": tokenize(texts, stream.context_length)}  # B,3,S,S; B,L
    if stream.ssl_transform is not None:
        out["views"] = torch.stack(views)  # 2B, 3, S, S: a contiguous split keeps a sample's views together
    if stream.with_keys:
        out["key"] = [key for key, *_ in samples]
    return out


class StreamBatches(IterableDataset):
    """Rank `rank`'s batches from streamed tar shards, forever: DataLoader worker w reads slot
    rank * workers + w of tinyclip.stream and builds whole batches from it; every batch carries its
    worker's position after it ("position": (worker, state)), from which the worker can start again."""

    def __init__(self, urls, *, transform, batch_size, rank, world_size, workers, seed, context_length,
                 ssl_transform, with_keys, buffer_size, resampled, retries, positions):
        self.urls, self.transform, self.ssl_transform, self.with_keys = urls, transform, ssl_transform, with_keys
        self.batch_size, self.rank, self.world_size, self.workers = batch_size, rank, world_size, max(1, workers)
        self.seed, self.context_length, self.buffer_size = seed, context_length, buffer_size
        self.resampled, self.retries, self.positions = resampled, retries, positions or {}

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        skipped = Counter()
        slot = SlotStream(self.urls, slot=self.rank * self.workers + worker, slots=self.world_size * self.workers,
                          seed=self.seed, buffer_size=self.buffer_size, resampled=self.resampled,
                          retries=self.retries, skipped=skipped, state=self.positions.get(worker))
        stream = iter(slot)
        while True:
            samples = []
            while len(samples) < self.batch_size:
                draw, key, image, text = next(stream)
                try:
                    samples.append((key, decode_image(image), decode_captions(text),
                                    random.Random(f"tinyclip-sample:{self.seed}:{draw}")))
                except SkipSample as bad:
                    skipped[bad.reason] += 1
            out = {**assemble(samples, self), "skipped": dict(skipped), "position": (worker, slot.state())}
            skipped.clear()
            yield out


def first_streamed(spec: str, urls: list) -> None:
    """Raise a one-line ValueError unless one of the first few shards streams a usable sample: a wrong
    pattern or a dead host is found before training, not by every worker at its first batch."""
    reasons = Counter()
    for url in urls[:5]:
        for _, key, image, text in shard_samples(url, 0, reasons, retries=0):  # one try each: a dead host is quick
            try:
                decode_image(image), decode_captions(text)
                return
            except SkipSample as bad:
                reasons[bad.reason] += 1
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())) or "none"
    raise ValueError(f"no usable sample in the first {min(5, len(urls))} shard(s) of {spec} (expected KEY.jpg "
                     f"with KEY.txt members); skipped: {counts}")


class TrainLoader:
    """Iterate for batch dicts, forever (every iter() starts again where the loader was made: take one iterator
    per run); `.skipped` adds up the bad samples met so far, by reason; in stream mode `.positions` holds each
    worker's position after the last batch handed out (what a checkpoint keeps)."""

    def __init__(self, stream, *, workers: int, spec: str, num_samples: int | None, described: dict):
        self.stream, self.spec, self.num_samples, self.described = stream, spec, num_samples, described
        self.mode = "stream" if isinstance(stream, StreamBatches) else "index"
        self.skipped, self.positions = Counter(described["skipped"]), dict(getattr(stream, "positions", {}))
        # Our own generator: DataLoader would otherwise draw its worker seed from the global RNG at
        # each iter(), shifting the FLIP masks a resumed run replays from its checkpoint.
        self.loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                                 pin_memory=torch.cuda.is_available(), prefetch_factor=2 if workers else None,
                                 generator=torch.Generator().manual_seed(0))

    def __iter__(self):
        for batch in self.loader:
            self.skipped.update(batch.pop("skipped"))
            if "position" in batch:
                worker, state = batch.pop("position")
                self.positions[int(worker)] = state
            yield batch

    def summary(self) -> dict:
        """What the run reads: pairs selected (None: unknown, in stream mode without --train-num-samples), the
        source's usable pairs, tar shards found and named but missing (0 for other sources), the problems found
        opening it, by reason, and in stream mode how the shards split over the (rank, worker) slots."""
        return {"pairs": self.num_samples, "mode": self.mode, **self.described}

    def describe(self, samples: int) -> tuple[str, str | None]:
        """The start-up line about the data of a run of `samples` samples (what it is, how many pairs, shards
        found and missing, epochs), and a warning (None if there is none) when more than 1% of the shards are
        missing or samples were skipped while opening the data."""
        data = self.summary()
        missing = f", {data['missing_shards']} missing" if data["missing_shards"] else ""
        shards = f" | {data['shards']} shards{missing}" if data["shards"] or data["missing_shards"] else ""
        kept = f" (of {data['source_pairs']})" if data["source_pairs"] != data["pairs"] else ""
        pairs = f"{data['pairs']} pairs{kept}" if data["pairs"] else "pairs not counted (--train-num-samples)"
        epochs = f"{samples / data['pairs']:.3g} epochs" if data["pairs"] else "epochs n/a"
        if self.mode == "stream":  # how the shards split over the (rank, worker) slots that stream them
            per_slot = f"{data['shards'] // data['slots']} each per epoch"
            split = "drawn with replacement" if data["resampled"] else per_slot
            shards += f" streamed over {data['slots']} slots, {split}"
            shards += f" ({data['sit_out']} sit out each epoch, a different few each time)" if data["sit_out"] else ""
        named = data["shards"] + data["missing_shards"]
        problems = ([f"{data['missing_shards']} of {named} shards missing"]
                    if named and data["missing_shards"] > 0.01 * named else [])
        problems += [f"{n} {reason}" for reason, n in sorted(data["skipped"].items()) if reason != "missing_shard"]
        warning = f"{data['source']}: {', '.join(problems)} (skipped, counted in log.jsonl)" if problems else None
        return f"data: {data['source']} | {pairs}{shards} | {samples} samples = {epochs}", warning

    def epoch_of(self, samples_seen: int):
        """The epoch figure of a log record: in index mode the (0-based) epoch that global position
        `samples_seen` falls in; in stream mode samples seen / the dataset's size, or "n/a" when unknown."""
        if self.mode == "index":
            return samples_seen // self.num_samples
        return round(samples_seen / self.num_samples, 4) if self.num_samples else "n/a"

    def state_dict(self) -> dict:
        """What a checkpoint needs to check a resume reads the same stream (samples_seen is the trainer's;
        in stream mode train.py adds every rank's worker positions)."""
        selection = hashlib.sha1(self.stream.indices.tobytes()).hexdigest()[:16] if self.mode == "index" else None
        slots = [self.stream.world_size, self.stream.workers] if self.mode == "stream" else None
        return {"spec": self.spec, "mode": self.mode, "num_samples": self.num_samples, "selection": selection,
                "slots": slots, "seed": self.stream.seed, "skipped": dict(self.skipped),
                "global_batch": self.stream.batch_size * self.stream.world_size}


def make_train_loader(spec: str = "synthetic", *, transform, batch_size: int, rank: int = 0, world_size: int = 1,
                      workers: int = 2, seed: int = 0, context_length: int = 77, dataset_size: int = None,
                      keep_top: float = None, score_file: str = None, ssl_transform=None, start_sample: int = 0,
                      csv_img_key: str = "filepath", csv_caption_key: str = "title", csv_separator: str = None,
                      with_keys: bool = False, mode: str = None, buffer_size: int = 1000, resampled: bool = False,
                      retries: int = 2, num_samples: int = None, positions: dict = None) -> TrainLoader:
    """The per-rank training loader over the stream above: batch_size is per rank, start_sample the
    global samples already consumed (an exact resume). transform / ssl_transform are tinyclip.augment's
    `t(img, rng) -> [3, S, S]`; with ssl_transform each batch also has SLIP's "views" [2B, 3, S, S],
    sample i's in rows 2i and 2i + 1. with_keys adds each sample's key under "key". csv_separator: None
    reads it from the extension and the header (tinyclip.sources).
    mode "stream" (the default for pipe: and http(s) URLs; "index" otherwise) reads tar shards in one pass
    (tinyclip.stream) with a shuffle buffer of buffer_size, shards drawn with replacement if resampled, a
    failed shard read retried `retries` times; num_samples is the dataset's size if known (for epochs), and
    positions {worker: state} where a resumed rank's workers start (start_sample is then unused)."""
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
    if workers < 0 or start_sample < 0 or seed < 0:
        raise ValueError(f"workers, start_sample and seed must be >= 0, got {workers}, {start_sample}, {seed}")
    batches = dict(transform=transform, ssl_transform=ssl_transform, batch_size=batch_size, rank=rank,
                   world_size=world_size, seed=seed, context_length=context_length, with_keys=with_keys)
    if (mode or ("stream" if is_url(spec) else "index")) == "stream":
        urls, missing = shard_urls(spec)
        slots = world_size * max(1, workers)
        if len(urls) < slots:
            raise ValueError(f"{spec} names {len(urls)} shard(s), fewer than the {slots} slots of {world_size} "
                             f"rank(s) x {max(1, workers)} worker(s) that stream mode reads them in; lower --workers, "
                             f"or use --data-mode index for local shards")
        first_streamed(spec, urls)
        stream = StreamBatches(urls, workers=workers, buffer_size=buffer_size, resampled=resampled, retries=retries,
                               positions=positions, **batches)
        described = {"source": spec, "source_pairs": num_samples, "skipped": {"missing_shard": len(missing)}
                     if missing else {}, "shards": len(urls), "missing_shards": len(missing), "slots": slots,
                     "resampled": resampled, "sit_out": 0 if resampled else len(urls) % slots}
        return TrainLoader(stream, workers=workers, spec=spec, num_samples=num_samples, described=described)
    source = open_source(spec, csv_img_key, csv_caption_key, csv_separator)
    indices = select_indices(source, dataset_size, keep_top, score_file)
    first_valid(source, indices)
    shards, missing = (source.index.shards, source.missing_shards) if isinstance(source, TarShards) else ([], [])
    described = {"source": source.name, "source_pairs": len(source), "skipped": dict(+source.skipped),
                 "shards": len(shards), "missing_shards": len(missing)}
    return TrainLoader(BatchStream(source, indices, start_sample=start_sample, **batches), workers=workers, spec=spec,
                       num_samples=len(indices), described=described)


# -----------------------------------------------------------------------------
# converter to tar shards

IMAGE_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # kept byte for byte; others become PNG


def samples_to_shard(source, skipped: Counter):
    """(key, image bytes, extension, captions) of every valid sample, for write_shards."""
    for index in range(len(source)):
        try:
            data, captions = source.read(index)
            image = decode_image(data)  # verify before writing: a shard holds only decodable images
        except SkipSample as bad:
            skipped[bad.reason] += 1
            continue
        if image.format not in IMAGE_FORMATS:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data, image.format = buffer.getvalue(), "PNG"
        yield source.key(index), data, IMAGE_FORMATS[image.format], captions


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tinyclip.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shard = commands.add_parser("shard", help="write pairs to tar shards (img2dataset layout)")
    shard.add_argument("--input", required=True, help="a CSV/TSV, a folder of images + .txt, shards, or 'synthetic'")
    shard.add_argument("--output", required=True, help="folder for 00000.tar, 00001.tar, ...")
    shard.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    shard.add_argument("--csv-img-key", default="filepath", help="CSV column of image paths")
    shard.add_argument("--csv-caption-key", default="title", help="CSV column of captions")
    shard.add_argument("--csv-separator", default=None, help="CSV separator (default: from the extension)")
    args = parser.parse_args(argv)
    try:
        source = open_source(args.input, args.csv_img_key, args.csv_caption_key, args.csv_separator)
        if os.path.isdir(args.output) and any(name.endswith(".tar") for name in os.listdir(args.output)):
            raise ValueError(f"{args.output} already holds shards; choose an empty folder")
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    skipped = Counter()
    paths = write_shards(samples_to_shard(source, skipped), args.output, args.shard_size)
    written = len(source) - sum(skipped.values())
    skipped.update(source.skipped)
    print(f"wrote {written} samples in {len(paths)} shards to {args.output}; "
          f"skipped {dict(skipped) or 'none'}", file=sys.stderr)


if __name__ == "__main__":
    main()
