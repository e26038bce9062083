"""Speed, memory and MFU benchmark for tinyclip training ("Scaling (Down) CLIP", Li, Xie, Cubuk 2024).

The paper's x-axis is compute (GFLOPs per sample x samples seen); this script says what that
compute costs on the machine at hand. On the current device (CUDA if present, else CPU) it measures

  peak      the dense matmul peak, per precision: large square matmuls (4096^2), best of several;
            MFU below is always against this measured number, never a datasheet one
  train     steady-state training samples/s: the batch already in memory, then train.py's own
            step (train.train_step: forward, loss, backward; gradient clipping; AdamW from
            train.make_optimizer), timed after warm-up steps as the median of several windows;
            peak memory; GFLOPs/sample (tinyclip.flops, forward + backward); TFLOP/s and MFU
  eval      encode_image images/s under no_grad
  tokenizer texts/s of tinyclip's tokenizer (and OpenAI's reference, --reference-tokenizer)
  data      decode + augment images/s per loader worker, for every augmentation preset, on JPEGs
            written to a temp dir (224 px) and on the built-in synthetic data (64 px)

How it measures (timed windows free of other processes' load, memory, the matmul peak) lives in
scripts/measure.py.

Memory. Each training configuration runs in a fresh subprocess. CUDA: torch.cuda.max_memory_allocated
from process start (weights, gradients, optimiser state, batch, activations). CPU: the growth of the
process's peak resident set (getrusage ru_maxrss, a high-water mark, hence the fresh process) over
its resident set just before the model is built; it covers the same things plus allocator and
oneDNN scratch memory, i.e. what the OS must provide.

Studies:
  --study sweep    (default) the tables above for --archs x --strategies x --precisions x --batch-sizes
  --study accum    issue 7: one reference config as plain, gradient accumulation K in {2, 4, 8},
                   --grad-checkpointing, and both: samples/s, peak memory, and the largest global
                   batch within --memory-budget-gb (extrapolated from peaks measured at two batch
                   sizes plus the measured B x B cost of the contrastive loss, or --max-batch search)
  --study targets  the speed targets as ratios measured side by side (same process, interleaved
                   windows, so background load hits both sides alike); with --open-clip, the same
                   architectures built by open_clip's model code, given the identical step

    python scripts/bench.py --quick
    python scripts/bench.py --archs vit-s-16,vit-b-32 --precisions fp32,bf16 --batch-sizes 32 --markdown b.md
    python scripts/bench.py --study accum --archs vit-ti-16 --batch-sizes 512 --memory-budget-gb 16
    python scripts/bench.py --study targets --reference-tokenizer /path/to/clip/simple_tokenizer.py \\
        --open-clip /path/to/open_clip   # e.g. `pip download --no-deps open_clip_torch`, unzipped
"""

import argparse
import datetime
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # train.py and tinyclip/ live at the repo root

import torch  # noqa: E402

import train  # noqa: E402
from tinyclip.augment import AUGMENT_PRESETS, make_transform  # noqa: E402
from tinyclip.flops import gflops_per_sample  # noqa: E402
from tinyclip.losses import SimCLRHead, clip_loss  # noqa: E402
from tinyclip.model import create_model  # noqa: E402

import measure  # noqa: E402
from measure import (PEAK_SIZES, LoadMeter, cpu_name, device_now, is_clean, matmul_peak_tflops,  # noqa: E402
                     memory_now, peak_memory_mb, summarise, timed_windows, wait_for_quiet)


# -----------------------------------------------------------------------------
# one training configuration (run inside a fresh worker process)


def train_args(cfg):
    """train.py's own argument namespace for a benchmark configuration."""
    argv = ["--arch", cfg["arch"], "--strategy", cfg["strategy"], "--batch-size", str(cfg["batch"]),
            "--precision", cfg["precision"], "--accum-steps", str(cfg.get("accum", 1)),
            "--image-size", str(cfg["image_size"]), "--context-length", str(cfg["context_length"])]
    if cfg.get("text_arch"):
        argv += ["--text-arch", cfg["text_arch"]]
    if cfg.get("grad_checkpointing"):
        argv.append("--grad-checkpointing")
    return train.parse_args(argv)


def memory_batch(cfg, vocab_size, device, ssl):
    """An in-memory batch shaped like the loader's: images, and SOT text EOT 0... token ids."""
    g = torch.Generator().manual_seed(0)
    B, S, L = cfg["batch"], cfg["image_size"], cfg["context_length"]
    ids = torch.randint(1, vocab_size - 2, (B, L), generator=g)
    lengths = torch.randint(3, L + 1, (B,), generator=g)
    ids[torch.arange(L)[None] >= lengths[:, None]] = 0
    ids[:, 0], ids[torch.arange(B), lengths - 1] = vocab_size - 2, vocab_size - 1
    batch = {"image": torch.randn(B, 3, S, S, generator=g), "text": ids}
    if ssl:
        batch["views"] = (torch.randn(B, 3, S, S, generator=g), torch.randn(B, 3, S, S, generator=g))
    return {k: tuple(t.to(device) for t in v) if k == "views" else v.to(device) for k, v in batch.items()}


def autocast_for(device, precision):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def make_step(args, towers, optimizer, scaler, batch, device, precision=None, strategy=None):
    """A closure running one full training step exactly as train.py's loop does."""
    if strategy is not None:
        args = argparse.Namespace(**{**vars(args), "strategy": strategy})
    settings = train.strategy_settings(args)
    autocast = autocast_for(device, precision or args.precision)

    def step():
        optimizer.zero_grad(set_to_none=True)
        train.train_step(towers, towers.ssl_head, batch, settings, settings.mask_ratio, args.accum_steps,
                         scaler, autocast, args.ssl_scale)
        scaler.unscale_(optimizer)
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(towers.parameters(), args.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    return step


def count_gflops(args, device):
    """Training GFLOPs per sample (forward + backward; SLIP's head included), counted on meta tensors."""
    settings = train.strategy_settings(args)
    with torch.device("meta"):
        model = create_model(args.arch, image_size=args.image_size, context_length=args.context_length,
                             text_arch=args.text_arch)
        head = SimCLRHead(model.config.embed_dim, norm=args.ssl_norm) if settings.ssl else None
    return gflops_per_sample(model, strategy=args.strategy, mask_ratio=settings.mask_ratio, train=True,
                             ssl_head=head)["total"]


def build(cfg, device):
    """(args, towers, optimizer, scaler, batch, gflops) built by train.py's own build_everything."""
    args = train_args(cfg)
    gflops = count_gflops(args, device)
    base = memory_now(device)
    torch.manual_seed(0)
    _, towers, optimizer, scaler = train.build_everything(args, 0, 1, device)
    towers.train()
    if cfg.get("compile"):  # as train.py --compile; the warm-up steps absorb the compilation
        towers = torch.compile(towers)
    batch = memory_batch(cfg, towers.clip.config.vocab_size, device, towers.ssl_head is not None)
    return args, towers, optimizer, scaler, batch, gflops, base


def run_train(cfg):
    """Samples/s and peak memory of one configuration (the worker side of the sweep and studies)."""
    device = device_now()
    meter = LoadMeter()
    args, towers, optimizer, scaler, batch, gflops, base = build(cfg, device)
    step = make_step(args, towers, optimizer, scaler, batch, device)
    windows = timed_windows(step, cfg["batch"], cfg["warmup"], cfg["windows"], cfg["steps"], device,
                            cfg.get("max_other_load"))
    timing = summarise(windows, cfg.get("max_other_load"))
    params = sum(p.numel() for p in towers.parameters())
    return {"samples_per_s": timing.pop("rate"), **timing, "peak_mb": round(peak_memory_mb(device, base), 1),
            "gflops": gflops, "params_m": round(params / 1e6, 2), "other_load": meter.others()}


def run_interleaved(cfg):
    """Several variants of one model (strategy clip/flip, precision) timed in alternating windows.

    All variants share weights and process, so a ratio between them is free of the drift of
    background load that separate runs would pick up."""
    device = device_now()
    meter = LoadMeter()
    args, towers, optimizer, scaler, batch, _, _ = build(cfg, device)
    steps = {}
    for v in cfg["variants"]:
        steps[v["name"]] = make_step(args, towers, optimizer, scaler, batch, device, v["precision"], v["strategy"])
    limit = cfg.get("max_other_load")
    peaks = {p: matmul_peak_tflops(device, p, max_other_load=limit) for p in sorted({v["precision"] for v in cfg["variants"]})}
    windows = interleave(steps, cfg, device)
    for p in peaks:  # the peak again after the training windows: the best of both
        peaks[p] = max(peaks[p], matmul_peak_tflops(device, p, max_other_load=limit))
    out = {"peaks": peaks, "other_load": meter.others(), "variants": {}}
    for v in cfg["variants"]:
        gflops = count_gflops(argparse.Namespace(**{**vars(args), "strategy": v["strategy"]}), device)
        timing = summarise(windows[v["name"]], cfg.get("max_other_load"))
        sps = timing.pop("rate")
        out["variants"][v["name"]] = {"samples_per_s": sps, **timing, "gflops": gflops, "tflops": sps * gflops / 1e3,
                                      "mfu": sps * gflops / 1e3 / peaks[v["precision"]]}
    return out


def interleave(steps, cfg, device):
    """{name: [(rate, other load)]}: one window of each step in turn, until every one has
    cfg["windows"] clean windows (or 3x that many rounds have run)."""
    limit = cfg.get("max_other_load")
    for step in steps.values():
        timed_windows(step, 0, cfg["warmup"], 0, 0, device)
    out = {name: [] for name in steps}
    clean = lambda ws: sum(is_clean(load, limit) for _, load in ws)
    for _ in range(3 * cfg["windows"]):
        if all(clean(ws) >= cfg["windows"] for ws in out.values()):
            break
        for name, step in steps.items():
            out[name] += timed_windows(step, cfg["batch"], 0, 1, cfg["steps"], device)
        if not all(is_clean(ws[-1][1], limit) for ws in out.values()):
            wait_for_quiet(limit)
    return out


def run_eval(cfg):
    """encode_image images/s under no_grad (autocast for bf16/fp16)."""
    device = device_now()
    model = create_model(cfg["arch"], image_size=cfg["image_size"], text_arch=cfg.get("text_arch")).to(device).eval()
    images = torch.randn(cfg["batch"], 3, cfg["image_size"], cfg["image_size"], device=device)
    autocast = autocast_for(device, cfg["precision"])

    def encode():
        with torch.no_grad(), autocast():
            model.encode_image(images)
    windows = timed_windows(encode, cfg["batch"], cfg["warmup"], cfg["windows"], cfg["steps"], device,
                            cfg.get("max_other_load"))
    timing = summarise(windows, cfg.get("max_other_load"))
    return {"images_per_s": timing.pop("rate"), **timing}


def run_loss_memory(cfg):
    """Peak memory of the contrastive loss alone (forward + backward) on [B, D] features."""
    device = device_now()
    B, D = cfg["batch"], cfg["embed_dim"]
    image, text = (torch.randn(B, D, device=device, requires_grad=True) for _ in range(2))
    base = memory_now(device)
    feats = {"image": image, "text": text, "logit_scale": torch.tensor(2.66, device=device, requires_grad=True)}
    train.loss_stage(feats, None, 1.0)["loss"].backward()
    return {"peak_mb": peak_memory_mb(device, base)}


def run_end_to_end(cfg):
    """Training fed by the real loader (train.py's DataLoader with its workers) vs from memory."""
    device = device_now()
    meter = LoadMeter()
    args, towers, optimizer, scaler, batch, _, _ = build(cfg, device)
    loader = train.make_train_loader(cfg["data"], transform=make_transform("none", cfg["image_size"]),
                                     batch_size=cfg["batch"], workers=cfg["workers"],
                                     context_length=cfg["context_length"])
    stream = iter(loader)

    def fed_step():
        fresh = next(stream)
        batch["image"].copy_(fresh["image"])
        batch["text"].copy_(fresh["text"])
        step()
    step = make_step(args, towers, optimizer, scaler, batch, device)
    # Not interleaved: the workers would fill their queues during the in-memory windows for free.
    limit, steps = cfg.get("max_other_load"), max(2, cfg["steps"])
    windows = {"loader": timed_windows(fed_step, cfg["batch"], cfg["warmup"], cfg["windows"], steps, device, limit),
               "memory": timed_windows(step, cfg["batch"], cfg["warmup"], cfg["windows"], steps, device, limit)}
    out = {"other_load": meter.others()}
    for name, ws in windows.items():
        timing = summarise(ws, limit)
        out[name] = timing.pop("rate")
        out[name + "_timing"] = timing
    return out


def load_open_clip_model_module(package_dir):
    """open_clip's model.py from an unpacked wheel or site-packages folder, imported without the
    package's __init__ (which imports torchvision for its transforms, not needed for the models).
    Without torchvision, its one remaining import (FrozenBatchNorm2d, used only to freeze ResNet
    towers, never here) gets a placeholder."""
    if importlib.util.find_spec("torchvision") is None:
        for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = None
    package = types.ModuleType("open_clip")
    package.__path__ = [str(package_dir)]
    sys.modules["open_clip"] = package
    return importlib.import_module("open_clip.model")


def open_clip_twin(config, package_dir):
    """open_clip's CLIP with the same architecture as a tinyclip ViT CLIPConfig."""
    oc = load_open_clip_model_module(package_dir)
    v = config.vision
    vision = dict(image_size=config.image_size, layers=v["layers"], width=v["width"],
                  head_width=v["width"] // v["heads"], patch_size=v["patch_size"])
    text = dict(context_length=config.context_length, vocab_size=config.vocab_size, width=config.text_width,
                heads=config.text_heads, layers=config.text_layers)
    return oc.CLIP(config.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=config.quick_gelu)


def run_vs_open_clip(cfg):
    """Target (4): tinyclip's model code against open_clip's for the same architecture, batch and step.

    Both models get the identical minimal step (forward, tinyclip's clip_loss on the returned
    features, backward, torch AdamW), timed in alternating windows in one process, so only the
    model code differs; parameter counts are checked equal."""
    device = device_now()
    meter = LoadMeter()
    torch.manual_seed(0)
    ours = create_model(cfg["arch"], image_size=cfg["image_size"], context_length=cfg["context_length"],
                        text_arch=cfg.get("text_arch"))
    theirs = open_clip_twin(ours.config, cfg["open_clip"])
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in (("tinyclip", ours), ("open_clip", theirs))}
    if counts["tinyclip"] != counts["open_clip"]:
        raise ValueError(f"not the same architecture: parameters {counts}")
    batch = memory_batch(cfg, ours.config.vocab_size, device, ssl=False)
    steps = {}
    for name, model in (("tinyclip", ours), ("open_clip", theirs)):
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        for precision in cfg["precisions"]:
            autocast = autocast_for(device, precision)

            def step(model=model, optimizer=optimizer, autocast=autocast):
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    image_features, text_features, logit_scale = model(batch["image"], batch["text"])[:3]
                clip_loss(image_features, text_features, logit_scale)["loss"].backward()
                optimizer.step()
            steps[f"{name} {precision}"] = step
    windows = interleave(steps, cfg, device)
    out = {"params": counts["tinyclip"], "other_load": meter.others(), "variants": {}}
    for name, ws in windows.items():
        timing = summarise(ws, cfg.get("max_other_load"))
        out["variants"][name] = {"samples_per_s": timing.pop("rate"), **timing}
    return out


WORKERS = {"train": run_train, "interleaved": run_interleaved, "eval": run_eval, "loss_memory": run_loss_memory,
           "end_to_end": run_end_to_end, "vs_open_clip": run_vs_open_clip}


def in_subprocess(cfg, opts):
    """Run one configuration in a fresh interpreter (a clean peak-memory high-water mark)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    if opts.threads:
        cmd += ["--threads", str(opts.threads)]
    if opts.default_malloc:
        cmd.append("--default-malloc")
    cmd += ["--max-wait", str(opts.max_wait)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": last[:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -----------------------------------------------------------------------------
# tokenizer and data pipeline (run in the main process)


def caption_corpus(n):
    """n distinct, varied captions: CLIP's 80 ImageNet templates x the 1000 class names, shuffled."""
    assets = ROOT / "tinyclip" / "assets"
    names = (assets / "imagenet_classnames.txt").read_text().splitlines()
    templates = (assets / "imagenet_templates.txt").read_text().splitlines()
    texts = [t.replace("{}", c) for c in names for t in templates if "{}" in t]
    random.Random(0).shuffle(texts)
    return texts[:n]


def reference_tokenize(tokenizer, texts, context_length=77):
    """OpenAI's clip.tokenize on top of its SimpleTokenizer (clip.py itself imports torchvision)."""
    sot, eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot] + tokenizer.encode(text) + [eot]
        if len(ids) > context_length:
            ids = ids[:context_length - 1] + [eot]
        result[i, :len(ids)] = torch.tensor(ids)
    return result


def bench_tokenizer(n, reference_path=None, rounds=3, max_other_load=None):
    """texts/s, cold (a fresh tokenizer: every word segmented once) and warm (word cache full);
    the median of `rounds` rounds, each timing every tokenizer in turn."""
    from tinyclip.tokenizer import Tokenizer
    texts = caption_corpus(n)
    candidates = {"tinyclip": (Tokenizer, lambda tok, t: tok.tokenize(t, 77))}
    if reference_path:
        spec = importlib.util.spec_from_file_location("openai_simple_tokenizer", reference_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        candidates["openai reference"] = (module.SimpleTokenizer, reference_tokenize)
    rates, ids = {name: {"cold": [], "warm": []} for name in candidates}, {}
    for _ in range(rounds):
        wait_for_quiet(max_other_load)
        for name, (make, tokenize) in candidates.items():
            tok = make()
            for kind in ("cold", "warm"):
                start = time.perf_counter()
                ids[name] = tokenize(tok, texts)
                rates[name][kind].append(len(texts) / (time.perf_counter() - start))
    rows = [{"tokenizer": name, "texts": len(texts), "cold_texts_per_s": statistics.median(r["cold"]),
             "warm_texts_per_s": statistics.median(r["warm"])} for name, r in rates.items()]
    if reference_path:
        rows[-1]["same_ids"] = bool(torch.equal(ids["tinyclip"], ids["openai reference"]))
    return rows


def write_jpegs(folder, count, size=(341, 256)):
    """JPEGs like img2dataset's (shorter side 256, quality 95), with captions: synthetic scenes,
    upscaled, plus mild noise so they do not compress unrealistically well."""
    import numpy as np
    from PIL import Image
    from tinyclip.synthetic import SyntheticPairs
    pairs, rng = SyntheticPairs(size=count), np.random.default_rng(0)
    for i in range(count):
        image, caption = pairs.pair(i)
        pixels = np.asarray(image.resize(size, resample=3), dtype=np.float32)
        pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(Path(folder) / f"{i:06d}.jpg", quality=95)
        (Path(folder) / f"{i:06d}.txt").write_text(caption + "\n")


def bench_data(folder, count, image_size=224, synthetic_size=64, repeats=2, max_other_load=None):
    """Decode + augment images/s in one process with one thread: one DataLoader worker's rate
    (the best of `repeats` passes over `count` images, per preset)."""
    from tinyclip.sources import decode_image
    from tinyclip.synthetic import SyntheticPairs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    files = [p.read_bytes() for p in sorted(Path(folder).glob("*.jpg"))][:count]
    synthetic = SyntheticPairs(size=count, image_size=synthetic_size)
    rows = []
    for source, size, load in (("jpeg", image_size, lambda i: decode_image(files[i])),
                               ("synthetic", synthetic_size, lambda i: synthetic.image(i))):
        for preset in AUGMENT_PRESETS:
            transform = make_transform(preset, size)
            best = 0.0
            for r in range(repeats):
                wait_for_quiet(max_other_load)
                start = time.perf_counter()
                for i in range(count):
                    transform(load(i), random.Random(r * count + i))
                best = max(best, count / (time.perf_counter() - start))
            rows.append({"source": source, "image_size": size, "preset": preset, "images_per_s_per_worker": best})
    torch.set_num_threads(threads)
    return rows


def bench_loader(folder, image_size, batch, workers, batches=20, max_other_load=None):
    """The real training loader (make_train_loader on the JPEG folder): images/s after start-up."""
    loader = train.make_train_loader(str(folder), transform=make_transform("none", image_size), batch_size=batch,
                                     workers=workers)
    stream = iter(loader)
    next(stream)  # worker start-up
    wait_for_quiet(max_other_load)  # the workers fill their queues meanwhile: drain those first
    for _ in range(2 * workers):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch / (time.perf_counter() - start)


# -----------------------------------------------------------------------------
# the studies


def base_cfg(opts, arch, strategy, precision, batch, **extra):
    return dict(kind="train", arch=arch, strategy=strategy, precision=precision, batch=batch,
                image_size=opts.image_size, context_length=opts.context_length, text_arch=opts.text_arch,
                warmup=opts.warmup, windows=opts.windows, steps=opts.steps_per_window,
                max_other_load=opts.max_other_load, **extra)


def add_mfu(row, peaks):
    if "samples_per_s" in row:
        row["tflops"] = row["samples_per_s"] * row["gflops"] / 1e3
        peak = peaks.get(row["precision"])
        row["mfu"] = row["tflops"] / peak if peak else None
    return row


def study_sweep(opts, report):
    device = device_now()
    sizes = tuple(opts.peak_sizes)
    peaks = {p: matmul_peak_tflops(device, p, sizes, max_other_load=opts.max_other_load) for p in opts.precisions}
    report["peak_tflops"] = peaks
    report["train"] = []
    for arch in opts.archs:
        for strategy in opts.strategies:
            for precision in opts.precisions:
                for batch in opts.batch_sizes:
                    cfg = base_cfg(opts, arch, strategy, precision, batch, accum=opts.accum_steps,
                                   grad_checkpointing=opts.grad_checkpointing, compile=opts.compile)
                    row = {**{k: cfg[k] for k in ("arch", "strategy", "precision", "batch", "compile")},
                           **in_subprocess(cfg, opts)}
                    report["train"].append(row)
                    log(f"train {arch} {strategy} {precision} b{batch}: {row}")
    for p in opts.precisions:  # measured again at the end; the best of both counts
        peaks[p] = max(peaks[p], matmul_peak_tflops(device, p, sizes, max_other_load=opts.max_other_load))
    for row in report["train"]:
        add_mfu(row, peaks)
    report["eval"] = []
    for arch in opts.archs:
        for precision in opts.precisions:
            cfg = dict(kind="eval", arch=arch, precision=precision, batch=opts.eval_batch, image_size=opts.image_size,
                       text_arch=opts.text_arch, warmup=1, windows=opts.windows, steps=1,
                       max_other_load=opts.max_other_load)
            report["eval"].append({"arch": arch, "precision": precision, "batch": opts.eval_batch,
                                   **in_subprocess(cfg, opts)})
    report["tokenizer"] = bench_tokenizer(opts.tokenizer_texts, opts.reference_tokenizer,
                                          max_other_load=opts.max_other_load)
    with tempfile.TemporaryDirectory() as folder:
        write_jpegs(folder, opts.data_images)
        report["data"] = bench_data(folder, opts.data_images, max_other_load=opts.max_other_load)
        report["loader"] = {"workers": opts.workers, "batch": 32, "image_size": 224, "preset": "none",
                            "images_per_s": bench_loader(folder, 224, 32, opts.workers,
                                                         max_other_load=opts.max_other_load)}


def study_accum(opts, report):
    """Issue 7: memory and speed of accumulation / checkpointing, and the batch that fits a budget."""
    arch, precision, batch = opts.archs[0], opts.precisions[0], opts.batch_sizes[0]
    variants = [("plain", 1, False)] + [(f"accum K={k}", k, False) for k in (2, 4, 8)] + \
               [("grad-ckpt", 1, True), ("accum K=8 + grad-ckpt", 8, True)]
    loss = in_subprocess(dict(kind="loss_memory", batch=opts.loss_probe_batch, embed_dim=512), opts)
    loss_mb_per_b2 = loss["peak_mb"] / opts.loss_probe_batch ** 2  # the B x B logits and their gradients
    report["accum"] = {"arch": arch, "precision": precision, "batch": batch, "image_size": opts.image_size,
                       "context_length": opts.context_length, "text_arch": opts.text_arch,
                       "budget_gb": opts.memory_budget_gb, "loss_mb_per_b2": loss_mb_per_b2, "rows": []}
    for name, k, ckpt in variants:
        cfg = base_cfg(opts, arch, "clip", precision, batch, accum=k, grad_checkpointing=ckpt)
        full = in_subprocess(cfg, opts)
        half = in_subprocess({**cfg, "batch": batch // 2, "warmup": 1, "windows": 1, "steps": 1}, opts)
        row = {"variant": name, "accum": k, "grad_checkpointing": ckpt, **full, "peak_mb_half_batch": half.get("peak_mb")}
        if "peak_mb" in full and "peak_mb" in half:
            row["max_batch"] = max_batch_extrapolated(batch, full["peak_mb"], half["peak_mb"], loss_mb_per_b2,
                                                      opts.memory_budget_gb * 1024, k)
            row["max_batch_method"] = "extrapolated"
            if opts.max_batch == "search":
                row["max_batch"] = max_batch_search(cfg, opts, row["max_batch"])
                row["max_batch_method"] = "searched"
        report["accum"]["rows"].append(row)
        log(f"accum {name}: {row}")


def max_batch_extrapolated(batch, peak_full, peak_half, loss_per_b2, budget_mb, k):
    """Largest global batch (a multiple of K) with a + b*B + c*B^2 <= budget: a, b from the peaks
    measured at B and B/2 (after removing the loss's c*B^2), c measured on the loss alone."""
    half = batch // 2
    slope = ((peak_full - loss_per_b2 * batch ** 2) - (peak_half - loss_per_b2 * half ** 2)) / (batch - half)
    fixed = peak_full - loss_per_b2 * batch ** 2 - slope * batch
    if slope <= 0:
        return None
    b = (-slope + (slope ** 2 + 4 * loss_per_b2 * (budget_mb - fixed)) ** 0.5) / (2 * loss_per_b2) \
        if loss_per_b2 > 0 else (budget_mb - fixed) / slope
    return int(b // k * k)


def max_batch_search(cfg, opts, guess):
    """Bisection over measured peaks (two steps per probe, each in its own subprocess)."""
    budget = opts.memory_budget_gb * 1024
    k = cfg["accum"]
    fits = lambda b: in_subprocess({**cfg, "batch": b, "warmup": 1, "windows": 1, "steps": 1},
                                   opts).get("peak_mb", float("inf")) <= budget
    low, high = k, max(k, (guess or cfg["batch"]) // k * k)
    while fits(high):
        low, high = high, high * 2
    while high - low > max(k, low // 16):  # 1/16 resolution is plenty
        mid = (low + high) // 2 // k * k
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def study_targets(opts, report):
    """The speed targets, each as a ratio measured side by side."""
    t = report["targets"] = {}
    batch = opts.batch_sizes[0]
    common = dict(kind="interleaved", image_size=opts.image_size, context_length=opts.context_length,
                  text_arch=opts.text_arch, warmup=opts.warmup, windows=opts.windows, steps=opts.steps_per_window,
                  precision="fp32", strategy="clip", batch=batch, max_other_load=opts.max_other_load)
    both = [{"name": "fp32", "precision": "fp32", "strategy": "clip"},
            {"name": "bf16", "precision": "bf16", "strategy": "clip"}]
    for arch in ("vit-b-32", "vit-s-16"):  # (1) fp32 MFU, and (3) bf16 vs fp32
        t[arch] = in_subprocess({**common, "arch": arch, "variants": both}, opts)
        log(f"targets {arch}: {t[arch]}")
    flip = [{"name": "clip", "precision": "fp32", "strategy": "clip"},  # (2) FLIP vs CLIP
            {"name": "flip", "precision": "fp32", "strategy": "flip"}]
    t["vit-b-16"] = in_subprocess({**common, "arch": "vit-b-16", "variants": flip}, opts)
    log(f"targets vit-b-16: {t['vit-b-16']}")
    if (opts.text_arch, opts.context_length) != ("vit-b", 16):  # and with the paper's text tower
        paper = {**common, "arch": "vit-b-16", "variants": flip, "text_arch": "vit-b", "context_length": 16}
        t["vit-b-16 paper text"] = in_subprocess(paper, opts)
        log(f"targets vit-b-16 paper text: {t['vit-b-16 paper text']}")
    if opts.open_clip:  # (4) the same architectures in open_clip's model code
        for arch in ("vit-b-32", "vit-s-16"):
            t[f"open_clip {arch}"] = in_subprocess({**common, "kind": "vs_open_clip", "arch": arch,
                                                   "precisions": ["fp32", "bf16"], "open_clip": opts.open_clip}, opts)
            log(f"targets open_clip {arch}: {t[f'open_clip {arch}']}")
    t["tokenizer"] = bench_tokenizer(opts.tokenizer_texts, opts.reference_tokenizer,  # (5)
                                     max_other_load=opts.max_other_load)
    with tempfile.TemporaryDirectory() as folder:  # (6) loader vs what training consumes
        write_jpegs(folder, max(opts.data_images, 2 * batch))
        t["data"] = bench_data(folder, opts.data_images, max_other_load=opts.max_other_load)
        t["loader_images_per_s"] = bench_loader(folder, opts.image_size, batch, opts.workers,
                                                max_other_load=opts.max_other_load)
        t["end_to_end"] = in_subprocess({**common, "kind": "end_to_end", "arch": "vit-s-16", "data": folder,
                                         "workers": opts.workers}, opts)
    log(f"targets end-to-end: {t['end_to_end']}")


# -----------------------------------------------------------------------------
# reporting


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(report):
    m = report["machine"]
    out = [f"tinyclip bench, {m['date']}: {m['device']}, torch {m['torch']}, {m['threads']} threads; "
           f"{report.get('seconds', 0):.0f} s; load average at start {m['loadavg'][0]:.2f}; CPU share other "
           f"processes took during the run {fmt(m.get('other_load'), 2)} (timed windows above "
           f"{report['options']['max_other_load']} are re-run)"]
    if "peak_tflops" in report:
        sizes = list(report["options"]["peak_sizes"]) + ([8192] if m["device"].startswith("cuda") else [])
        out.append(f"Dense matmul peak ({' and '.join(f'{n}^3' for n in sizes)} matmuls, best of 5 clean calls each): " +
                   ", ".join(f"{p} {v:.3f} TFLOP/s" for p, v in report["peak_tflops"].items()))
    if report.get("train"):
        out.append(table(["arch", "strategy", "precision", "batch", "samples/s", "peak MB", "GFLOPs/sample",
                          "TFLOP/s", "MFU", "other load"],
                         [[r["arch"] + (" (compiled)" if r.get("compile") else ""), r["strategy"], r["precision"],
                           r["batch"], fmt(r.get("samples_per_s"), 2),
                           fmt(r.get("peak_mb"), 0), fmt(r.get("gflops"), 2), fmt(r.get("tflops"), 3),
                           fmt(r.get("mfu") and 100 * r["mfu"], 1) + "%" if r.get("mfu") else r.get("error", "-"),
                           fmt(r.get("other_load"), 2)] for r in report["train"]]))
    if report.get("eval"):
        out.append(table(["arch", "precision", "batch", "eval images/s"],
                         [[r["arch"], r["precision"], r["batch"], fmt(r.get("images_per_s"), 1)] for r in report["eval"]]))
    if report.get("tokenizer"):
        out.append(table(["tokenizer", "texts", "cold texts/s", "warm texts/s"],
                         [[r["tokenizer"], r["texts"], fmt(r["cold_texts_per_s"], 0), fmt(r["warm_texts_per_s"], 0)]
                          for r in report["tokenizer"]]))
    if report.get("data"):
        out.append(table(["source", "size", "preset", "images/s per worker"],
                         [[r["source"], r["image_size"], r["preset"], fmt(r["images_per_s_per_worker"], 0)]
                          for r in report["data"]]))
    if "loader" in report:
        l = report["loader"]
        out.append(f"Training loader, {l['workers']} workers, JPEG, {l['image_size']} px, preset {l['preset']}: "
                   f"{l['images_per_s']:.0f} images/s")
    if "accum" in report:
        a = report["accum"]
        out.append(f"Accumulation / checkpointing: {a['arch']} {a['precision']} {a['image_size']} px, text "
                   f"{a['text_arch'] or 'default'} x {a['context_length']} tokens, global batch {a['batch']}; "
                   f"max batch within {a['budget_gb']} GB")
        out.append(table(["variant", "K", "grad ckpt", "samples/s", "peak MB", "peak MB at B/2", "max batch", "how"],
                         [[r["variant"], r["accum"], r["grad_checkpointing"], fmt(r.get("samples_per_s"), 2),
                           fmt(r.get("peak_mb"), 0), fmt(r.get("peak_mb_half_batch"), 0), fmt(r.get("max_batch")),
                           r.get("max_batch_method", r.get("error", "-"))] for r in a["rows"]]))
    if "targets" in report:
        out.append(targets_markdown(report["targets"], report["options"]["windows"]))
    return "\n\n".join(out) + "\n"


def targets_markdown(t, windows):
    """The targets as ratios; 'clean' counts the timed windows free of other processes' load."""
    rows = []
    clean = lambda *vs: "/".join(f"{v.get('clean_windows', '-')}" for v in vs) + f" of {windows}"
    for arch in ("vit-b-32", "vit-s-16"):
        r = t.get(arch, {})
        if "variants" in r:
            f, b = r["variants"]["fp32"], r["variants"]["bf16"]
            rows.append([f"(1) fp32 MFU, {arch}", f"{100 * f['mfu']:.1f}% ({f['tflops']:.3f} of "
                         f"{r['peaks']['fp32']:.3f} TFLOP/s)", ">= 80%", clean(f)])
            rows.append([f"(3) bf16 / fp32 samples/s, {arch}", f"{b['samples_per_s'] / f['samples_per_s']:.2f}x "
                         f"(bf16 MFU {100 * b['mfu']:.1f}% of {r['peaks']['bf16']:.3f})", "report", clean(f, b)])
    for key, text in (("vit-b-16", "text as run"), ("vit-b-16 paper text", "paper's text tower: vit-b, 16 tokens")):
        r = t.get(key, {})
        if "variants" in r:
            c, f = r["variants"]["clip"], r["variants"]["flip"]
            rows.append([f"(2) FLIP 0.5 / CLIP samples/s, vit-b-16, {text}",
                         f"{f['samples_per_s'] / c['samples_per_s']:.2f}x (FLOPs ratio "
                         f"{c['gflops'] / f['gflops']:.2f}x)", ">= 1.9x", clean(c, f)])
    for arch in ("vit-b-32", "vit-s-16"):
        v = t.get(f"open_clip {arch}", {}).get("variants", {})
        for precision in ("fp32", "bf16"):
            if f"tinyclip {precision}" in v:
                o, ref = v[f"tinyclip {precision}"], v[f"open_clip {precision}"]
                rows.append([f"(4) tinyclip / open_clip training samples/s, {arch}, {precision}",
                             f"{o['samples_per_s'] / ref['samples_per_s']:.2f}x ({o['samples_per_s']:.2f} vs "
                             f"{ref['samples_per_s']:.2f})", ">= 1x", clean(o, ref)])
    tok = {r["tokenizer"]: r for r in t.get("tokenizer", [])}
    if "openai reference" in tok:
        o, ref = tok["tinyclip"], tok["openai reference"]
        rows.append(["(5) tokenizer / OpenAI's, texts/s", f"cold {o['cold_texts_per_s'] / ref['cold_texts_per_s']:.2f}x, "
                     f"warm {o['warm_texts_per_s'] / ref['warm_texts_per_s']:.2f}x (same ids: {ref.get('same_ids')})",
                     "report", "-"])
    e = t.get("end_to_end", {})
    if "memory" in e:
        rows.append(["(6) loader images/s / training samples/s, vit-s-16", f"{t['loader_images_per_s']:.1f} / "
                     f"{e['memory']:.2f} = {t['loader_images_per_s'] / e['memory']:.1f}x; training fed by the "
                     f"loader runs at {e['loader'] / e['memory']:.2f}x of in-memory", ">= 1x",
                     clean(e["loader_timing"], e["memory_timing"])])
    return table(["target", "measured", "goal", "clean windows"], rows)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# -----------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda cast: (lambda s: [cast(v) for v in s.split(",") if v])
    p.add_argument("--study", default="sweep", choices=("sweep", "accum", "targets"), help="what to measure")
    p.add_argument("--quick", action="store_true", help="a small sweep that finishes in minutes on 2 CPU cores")
    p.add_argument("--archs", type=csv(str), default=["vit-s-16", "vit-b-32"], help="comma-separated presets")
    p.add_argument("--strategies", type=csv(str), default=["clip", "flip"], help="clip, flip, slip, clip-aug")
    p.add_argument("--precisions", type=csv(str), default=["fp32", "bf16"], help="fp32, bf16, fp16 (autocast)")
    p.add_argument("--batch-sizes", type=csv(int), default=[32], help="global batch sizes")
    p.add_argument("--image-size", type=int, default=224, help="input resolution")
    p.add_argument("--context-length", type=int, default=77, help="text tokens (the paper uses 16)")
    p.add_argument("--text-arch", default=None, help="text tower preset (default: the arch's pairing)")
    p.add_argument("--accum-steps", type=int, default=1, help="sweep: gradient-cache micro-batches")
    p.add_argument("--grad-checkpointing", action="store_true", help="sweep: recompute activations")
    p.add_argument("--compile", action="store_true", help="sweep: torch.compile the model (as train.py --compile)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--windows", type=int, default=3, help="timed windows; the median is reported")
    p.add_argument("--steps-per-window", type=int, default=2, help="training steps per timed window")
    p.add_argument("--eval-batch", type=int, default=64, help="batch for eval images/s")
    p.add_argument("--tokenizer-texts", type=int, default=5000, help="captions to tokenize")
    p.add_argument("--reference-tokenizer", default=None, help="path to OpenAI's clip/simple_tokenizer.py")
    p.add_argument("--open-clip", default=None,
                   help="targets: path of an open_clip package folder (unpacked wheel) to time side by side")
    p.add_argument("--data-images", type=int, default=64, help="images per augmentation preset")
    p.add_argument("--workers", type=int, default=2, help="loader workers (train.py's default: 2)")
    p.add_argument("--memory-budget-gb", type=float, default=16.0, help="accum: memory budget for the max batch")
    p.add_argument("--max-batch", default="extrapolate", choices=("extrapolate", "search"),
                   help="accum: extrapolate from two measured batch sizes, or bisect with real runs (slow)")
    p.add_argument("--loss-probe-batch", type=int, default=8192, help="accum: batch for the loss-memory probe")
    p.add_argument("--max-other-load", type=float, default=0.1,
                   help="re-run a timed window if other processes used more than this fraction of the CPUs")
    p.add_argument("--max-wait", type=float, default=900.0,
                   help="seconds each process may sleep waiting for other processes' load to pass")
    p.add_argument("--peak-sizes", type=csv(int), default=list(PEAK_SIZES),
                   help="sweep: n of the n^3 matmuls that measure the peak (8192 is added on a GPU)")
    p.add_argument("--default-malloc", action="store_true",
                   help="CPU: skip train.keep_freed_memory() (glibc's defaults page-fault activations in every step)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the full report here")
    p.add_argument("--markdown", default=None, help="write the markdown tables here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.quick:
        opts.archs, opts.strategies, opts.batch_sizes = ["vit-ti-16"], ["clip", "flip"], [16]
        opts.warmup, opts.windows, opts.steps_per_window = 1, 3, 1
        opts.eval_batch, opts.tokenizer_texts, opts.data_images = 16, 2000, 16
    return opts


def main(argv=None):
    opts = parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    measure.QUIET_WAIT_S["left"] = opts.max_wait
    if device_now().type == "cpu" and not opts.default_malloc:
        train.keep_freed_memory()  # as train.py's main() does
    if opts.worker:
        cfg = json.loads(opts.worker)
        print(json.dumps(WORKERS[cfg["kind"]](cfg)))
        return None
    device = device_now()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    report = {"machine": {"date": datetime.date.today().isoformat(), "device": f"{device.type}: {name}, "
                          f"{os.cpu_count()} CPUs", "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "loadavg": os.getloadavg()},
              "options": {k: v for k, v in vars(opts).items() if k != "worker"}}
    start, meter = time.perf_counter(), LoadMeter()
    {"sweep": study_sweep, "accum": study_accum, "targets": study_targets}[opts.study](opts, report)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["machine"]["other_load"] = meter.others()
    text = markdown(report)
    print(text)
    if opts.markdown:
        Path(opts.markdown).write_text(text)
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
