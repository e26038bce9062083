"""How scripts/bench.py measures (timed windows free of other processes' load, memory high-water marks, the
machine's dense matmul peak: the denominator of MFU), and what it measures without train.py: eval encoding,
the loss's memory, the tokenizer, the data pipeline.

A shared machine is the norm (CI runners, laptops, a colleague's job), so every timed window records the CPU
share other processes took during it (LoadMeter, from /proc); a window over the limit is thrown away and,
after waiting for the machine to quieten, run again. Functions timed together take their windows in turn,
so background load hits each alike and a ratio between them is free of its drift.
"""
import contextlib
import os
import platform
import random
import resource
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tinyclip/ lives at the repo root

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tinyclip.augment import AUGMENT_PRESETS, make_transform  # noqa: E402
from tinyclip.data import make_train_loader, samples_to_shard  # noqa: E402
from tinyclip.losses import clip_loss  # noqa: E402
from tinyclip.model import PRECISIONS, autocast, create_model  # noqa: E402
from tinyclip.shards import write_shards  # noqa: E402
from tinyclip.sources import decode_image, open_source  # noqa: E402
from tinyclip.synthetic import SyntheticPairs  # noqa: E402
from tinyclip.tokenizer import Tokenizer  # noqa: E402

PEAK_SIZES = (2048, 4096)  # n of the n x n x n matmuls that measure the peak (bench.py --peak-sizes)
QUIET_WAIT_S = {"left": 900.0}  # per process: how long we may still sit out other processes' load


# --- timed windows --------------------------------------------------------------------------------

def device_now() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict, units_per_call, cfg, device, unit="samples_per_s") -> dict:
    """{name: summarise(its windows)} of named functions timed in turns, the rate (units per second) named `unit`.

    After cfg["warmup"] calls of each, every round times one window of cfg["steps"] calls of each function,
    until each has cfg["windows"] windows during which other processes took at most cfg["max_other_load"] of
    the CPUs, or 3 x windows rounds have run. A loaded round makes the next wait for the machine to quieten."""
    limit, windows, calls = cfg.get("max_other_load"), cfg["windows"], cfg["steps"]
    for fn in fns.values():
        for _ in range(cfg["warmup"]):
            fn()
    out = {name: [] for name in fns}
    enough = lambda ws: sum(is_clean(load, limit) for _, load in ws) >= windows
    for _ in range(3 * windows):
        if all(enough(ws) for ws in out.values()):
            break
        if not all(is_clean(ws[-1][1], limit) for ws in out.values() if ws):
            wait_for_quiet(limit)
        for name, fn in fns.items():
            sync(device)
            meter, start = LoadMeter(), time.perf_counter()
            for _ in range(calls):
                fn()
            sync(device)
            out[name].append((units_per_call * calls / (time.perf_counter() - start), meter.others()))
    return {name: summarise(ws, limit, unit) for name, ws in out.items()}


def is_clean(load, max_other_load):
    return load is None or max_other_load is None or load <= max_other_load


def wait_for_quiet(max_other_load, probe_s=0.5):
    """Sleep until other processes use at most max_other_load of the CPUs over a probe_s window (gives up,
    silently, once this process has waited QUIET_WAIT_S in all); a quiet machine costs one probe."""
    if max_other_load is None or max_other_load >= 1:  # no load can exceed it: nothing to wait for
        return
    while QUIET_WAIT_S["left"] > 0:
        meter = LoadMeter()
        time.sleep(probe_s)
        QUIET_WAIT_S["left"] -= probe_s
        if is_clean(meter.others(), max_other_load):
            return


def summarise(windows, max_other_load, unit="rate"):
    """Median rate of the clean (rate, load) windows (of all if none was clean), with the evidence."""
    clean = [r for r, load in windows if is_clean(load, max_other_load)]
    return {unit: statistics.median(clean or [r for r, _ in windows]),
            "windows": [round(r, 3) for r, _ in windows], "window_load": [load for _, load in windows],
            "clean_windows": len(clean)}


# --- other processes' load and memory -------------------------------------------------------------

def own_cpu_seconds() -> float:
    """CPU time of this process and all its descendants (live loader workers included)."""
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parent[int(entry)] = int(fields[1])
                cpu[int(entry)] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    ours, total = {os.getpid()}, 0
    for pid in sorted(parent):  # children have larger pids than parents, bar pid wrap-around
        if pid in ours or parent[pid] in ours:
            ours.add(pid)
            total += cpu.get(pid, 0)
    return total / os.sysconf("SC_CLK_TCK")


class LoadMeter:
    """CPU time that *other* processes used while we measured, as a fraction of all cores: busy time from
    /proc/stat minus our own process tree's. 0 means a quiet machine; None where /proc is missing."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            own = own_cpu_seconds()
        except OSError:
            return None
        busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal, less idle and iowait
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own

    def others(self):
        end = self._read()
        if self.start is None or end is None:
            return None
        wall, busy, own = (e - s for e, s in zip(end, self.start))
        return round(max(0.0, busy - own) / (wall * os.cpu_count()), 3)


def memory_now(device) -> int:
    """Bytes in use now: CUDA tensors allocated, or this process's resident set on CPU. A peak above this,
    taken just before the model is built, covers weights, gradients, optimiser state, batch and activations;
    on CPU also allocator and oneDNN scratch memory: what the OS must provide."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mb(device, base) -> float:
    """Peak use above `base` (memory_now's) in MiB; on CPU the process's peak resident set, a high-water mark
    since its start, hence one configuration per process."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB: Linux, as memory_now (/proc) needs
    return (peak - base) / 2 ** 20


# --- the dense matmul peak and the machine's name -------------------------------------------------

def matmul_peak_tflops(device, precision, sizes=PEAK_SIZES, repeats=5, max_other_load=None):
    """The best TFLOP/s of single n x n x n matmuls in `precision` (2 n^3 FLOPs each) over `sizes`, counting
    only calls during which other processes stayed under `max_other_load` (up to 3 x `repeats` tries per
    size). On a GPU 8192^3 is added: 4096^3 takes a fraction of a millisecond there, too short to keep
    every unit busy."""
    dtype, best = PRECISIONS[precision] or torch.float32, 0.0
    cfg = {"warmup": 1, "windows": repeats, "steps": 1, "max_other_load": max_other_load}
    for n in tuple(sizes) + ((8192,) if device.type == "cuda" else ()):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        # the first call (warm-up) selects the kernel and fills the packing buffers
        s = timed({"mm": lambda: torch.mm(a, b)}, 2 * n ** 3 / 1e9, cfg, device)["mm"]
        clean = [r for r, load in zip(s["windows"], s["window_load"]) if is_clean(load, max_other_load)]
        best = max(best, max(clean or s["windows"]) / 1e3)  # GFLOP/s -> TFLOP/s
    return best


def native_bf16(device) -> bool:
    """Whether bf16 matmuls run in hardware: any CUDA device bench.py targets, or a CPU with AVX512-BF16 or
    AMX. Elsewhere torch emulates them (on an AVX2-only EPYC a 2048^3 bf16 matmul took 56 s against 0.1 s
    in fp32), and the default sweep leaves bf16 out rather than run for hours."""
    if device.type == "cuda":
        return True
    with contextlib.suppress(OSError):
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def cpu_name():
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({torch.backends.cpu.get_cpu_capability()})"
    return platform.processor() or platform.machine()


# --- what is measured without train.py: a batch in memory, encoding, the loss's memory -------------------

def memory_batch(model, B, device):
    """A batch shaped like the loader's: images, SOT text EOT 0... ids, and for a model with SLIP's head
    the two views as one [2B, 3, S, S] tensor (rows 2i, 2i + 1: sample i's)."""
    g = torch.Generator().manual_seed(0)
    S, L, V = model.visual.image_size, model.context_length, model.config.vocab_size
    ids = torch.randint(1, V - 2, (B, L), generator=g)
    lengths = torch.randint(3, L + 1, (B,), generator=g)
    ids[torch.arange(L)[None] >= lengths[:, None]] = 0
    ids[:, 0], ids[torch.arange(B), lengths - 1] = V - 2, V - 1
    batch = {"image": torch.randn(B, 3, S, S, generator=g), "text": ids}
    if model.ssl_head is not None:
        batch["views"] = torch.randn(2 * B, 3, S, S, generator=g)
    return {k: v.to(device) for k, v in batch.items()}


def run_eval(cfg):
    """encode_image images/s under no_grad (autocast for bf16/fp16)."""
    device = device_now()
    model = create_model(cfg["arch"], image_size=cfg["image_size"], text_arch=cfg.get("text_arch")).to(device).eval()
    images = torch.randn(cfg["batch"], 3, cfg["image_size"], cfg["image_size"], device=device)

    def encode():
        with torch.no_grad(), autocast(device, cfg["precision"]):
            model.encode_image(images)
    return timed({"eval": encode}, cfg["batch"], cfg, device, unit="images_per_s")["eval"]


def run_loss_memory(cfg):
    """Peak memory of the contrastive loss alone (forward + backward) on [B, D] features."""
    device = device_now()
    image, text = (torch.randn(cfg["batch"], cfg["embed_dim"], device=device, requires_grad=True) for _ in range(2))
    base = memory_now(device)
    clip_loss(image, text, torch.tensor(14.3, device=device, requires_grad=True))["loss"].backward()
    return {"peak_mb": peak_memory_mb(device, base)}


# --- tokenizer and data pipeline ------------------------------------------------------------------

def bench_tokenizer(n, rounds=3, max_other_load=None):
    """texts/s on n distinct captions (CLIP's 80 ImageNet templates x the 1000 class names, shuffled), cold (a
    fresh tokenizer: every word segmented once) and warm (word cache full), the median of `rounds` rounds:
    one table row."""
    names, templates = ((ROOT / "tinyclip" / "assets" / f).read_text().splitlines()
                        for f in ("imagenet_classnames.txt", "imagenet_templates.txt"))
    texts = [t.replace("{}", c) for c in names for t in templates if "{}" in t]
    random.Random(0).shuffle(texts)
    texts, rates = texts[:n], {"cold": [], "warm": []}
    for _ in range(rounds):
        wait_for_quiet(max_other_load)
        tokenizer = Tokenizer()
        for kind in ("cold", "warm"):
            start = time.perf_counter()
            tokenizer.tokenize(texts, 77)
            rates[kind].append(len(texts) / (time.perf_counter() - start))
    return [{"tokenizer": "tinyclip", "texts": len(texts), "cold_texts_per_s": statistics.median(rates["cold"]),
             "warm_texts_per_s": statistics.median(rates["warm"])}]


def write_jpegs(folder, count, size=(341, 256)):
    """JPEGs like img2dataset's (shorter side 256, quality 95), with captions: synthetic scenes, upscaled,
    plus mild noise so they do not compress unrealistically well."""
    pairs, rng = SyntheticPairs(size=count), np.random.default_rng(0)
    for i in range(count):
        image, caption = pairs.pair(i)
        pixels = np.asarray(image.resize(size, resample=3), dtype=np.float32)
        pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(Path(folder) / f"{i:06d}.jpg", quality=95)
        (Path(folder) / f"{i:06d}.txt").write_text(caption + "\n")


def bench_data(folder, count, workers, loader_batch=32, loader_image_size=224, repeats=2, max_other_load=None):
    """(rows, loader). Rows: decode + augment images/s of one loader worker (one process, one thread), per
    preset, the best of `repeats` passes over `count` images: the JPEGs in `folder` at 224 px and the built-in
    data at 64 px. Loader: the real training loader, with its workers, timed over 20 batches after start-up,
    on the folder and on the same pairs as tar shards, indexed and streamed: its settings and {layout: rate}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    files = [p.read_bytes() for p in sorted(Path(folder).glob("*.jpg"))][:count]
    synthetic, rows = SyntheticPairs(size=count, image_size=64), []
    for source, size, load in (("jpeg", 224, lambda i: decode_image(files[i])), ("synthetic", 64, synthetic.image)):
        for preset in AUGMENT_PRESETS:
            transform, best = make_transform(preset, size), 0.0
            for r in range(repeats):
                wait_for_quiet(max_other_load)
                start = time.perf_counter()
                for i in range(count):
                    transform(load(i), random.Random(r * count + i))
                best = max(best, count / (time.perf_counter() - start))
            rows.append({"source": source, "image_size": size, "preset": preset, "images_per_s_per_worker": best})
    torch.set_num_threads(threads)
    shards = Path(folder) / "shards"  # the same pairs as tar shards, 4 of them: one per stream slot and more
    write_shards(samples_to_shard(open_source(str(folder)), Counter()), str(shards), max(1, len(files) // 4))
    rates = {}
    for layout, spec, mode in (("folder", str(folder), None), ("tar index", str(shards), "index"),
                               ("tar stream", str(shards / "*.tar"), "stream")):
        stream = iter(make_train_loader(spec, transform=make_transform("none", loader_image_size),
                                        batch_size=loader_batch, workers=workers, mode=mode))
        next(stream)  # worker start-up
        wait_for_quiet(max_other_load)  # the workers fill their queues meanwhile: drain those first
        for _ in range(2 * workers):
            next(stream)
        start = time.perf_counter()
        for _ in range(20):
            next(stream)
        rates[layout] = 20 * loader_batch / (time.perf_counter() - start)
        del stream
    return rows, {"workers": workers, "batch": loader_batch, "image_size": loader_image_size, "preset": "none",
                  "images_per_s": rates}
