"""Train a CLIP model with one of the four strategies of "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024).

    python train.py                                       # CLIP, vit-s, the built-in synthetic data
    torchrun --nproc_per_node 8 train.py --strategy flip --arch vit-s --data 'shards/{00000..00999}.tar'

Strategies (chosen in one place, STRATEGIES below):
    clip      plain CLIP: resize and centre crop, no augmentation
    flip      FLIP (Li et al. 2023): drop --mask-ratio of the image patches; optionally a short unmasked
              tuning stage after the masked budget (--unmasked-steps, --unmasked-lr)
    slip      SLIP (Mu et al. 2021): CLIP on SLIP's cropped view + --ssl-scale x SimCLR on two more views
    clip-aug  the paper's CLIP + data augmentation (--augment, default stacked-randaug)

Runs on one process or under torchrun on many (NCCL on GPUs, gloo on CPUs), one node or many.
The loss is exact under data parallelism (tinyclip/losses.py) and under gradient accumulation
(--accum-steps: the gradient cache of Gao et al. 2021, tinyclip/gradcache.py). Checkpoints are resumable
mid-epoch: a resumed run equals an uninterrupted one bit for bit.

The file reads top to bottom: the command line and its checks, the strategies, the optimiser and the
learning-rate schedule, one training step (train_step, which scripts/bench.py times too), then
train(): set-up, model, optimiser and resume, data, the loop, the end.
"""

import argparse
import contextlib
import ctypes
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from tinyclip import checkpoint as ckpt_io
from tinyclip.augment import AUGMENT_PRESETS, make_transform
from tinyclip.data import make_train_loader
from tinyclip.evaluation import zeroshot
from tinyclip.flops import gflops_per_sample
from tinyclip.gradcache import gradient_cache_step
from tinyclip.model import LOG_MAX_LOGIT_SCALE, TEXT_TOWERS, autocast, create_model, list_models
from tinyclip.optim import Adafactor

# The built-in data (tinyclip/synthetic.py) is 64 px scenes with short captions; on it, these defaults
# replace the preset's (real data keeps the preset's image size, 77 tokens and OpenAI's text pairing).
SYNTHETIC_DEFAULTS = dict(image_size=64, context_length=32, text_arch="small", eval_data="synthetic")
# What a resumed run may change: how it runs and reports, not what it computes. (--accum-steps,
# --grad-checkpointing and --compile keep the mathematics; their floating-point rounding may differ.)
FREE_ON_RESUME = {"workers", "log_every", "eval_every", "eval_data", "eval_label_set", "eval_size", "save_every",
                  "keep_checkpoints", "out", "resume", "accum_steps", "grad_checkpointing", "compile"}


class ConfigError(ValueError):
    """A bad flag, combination or run folder: reported as one line, before any work is done."""


class NonFiniteLoss(RuntimeError):
    pass


# -----------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to train")
    g.add_argument("--strategy", default="clip", help=f"training strategy: {', '.join(STRATEGIES)}")
    g.add_argument("--arch", default="vit-s", help="model preset (see tinyclip.list_models())")
    g.add_argument("--text-arch", default=None,
                   help=f"text tower: {', '.join(TEXT_TOWERS)} (vit-b is the paper's); default: the preset's, "
                        f"or {SYNTHETIC_DEFAULTS['text_arch']!r} on the built-in data")
    g.add_argument("--image-size", type=int, default=None,
                   help=f"input resolution (default: the preset's, 224, or {SYNTHETIC_DEFAULTS['image_size']} on "
                        "the built-in data)")
    g.add_argument("--context-length", type=int, default=None,
                   help=f"text tokens incl. SOT/EOT (default 77, or {SYNTHETIC_DEFAULTS['context_length']} on the "
                        "built-in data; the paper uses 16)")
    g.add_argument("--embed-dim", type=int, default=None, help="joint embedding width (default: the preset's)")
    g.add_argument("--mask-ratio", type=float, default=0.5, help="flip: fraction of image patches dropped")
    g.add_argument("--unmasked-steps", type=int, default=0,
                   help="flip: a tuning stage of N unmasked steps after the masked budget, with its own warmup "
                        "(20%% of it) and cosine (FLIP: about 1%% of the masked run's samples)")
    g.add_argument("--unmasked-lr", type=float, default=None,
                   help="flip: peak lr of the unmasked stage (default: --lr / 100, FLIP's ratio 4e-8 / 4e-6)")
    g.add_argument("--ssl-scale", type=float, default=1.0, help="slip: weight of the SimCLR loss (SLIP's 1.0)")
    g.add_argument("--ssl-mlp-dim", type=int, default=4096, help="slip: hidden width of the SimCLR head (SLIP's)")
    g.add_argument("--ssl-emb-dim", type=int, default=256, help="slip: output width of the SimCLR head (SLIP's)")
    g.add_argument("--ssl-norm", default="batch", choices=("batch", "layer"),
                   help="slip: norm in the SimCLR head; 'batch' is SLIP's (statistics over the global batch "
                        "under DDP), 'layer' is batch-free for small per-GPU batches")
    g.add_argument("--augment", default=None,
                   help=f"clip-aug: augmentation preset ({', '.join(AUGMENT_PRESETS)}; default stacked-randaug)")
    g.add_argument("--normalize", default="clip", choices=("clip", "pm1"),
                   help="pixel normalisation: CLIP's mean/std, or [-1, 1] as in the paper")

    g = p.add_argument_group("data and budget")
    g.add_argument("--data", default="synthetic",
                   help="synthetic (built in), pairs.csv/.tsv, or tar shards like 'shards/{00000..00099}.tar'")
    g.add_argument("--samples-seen", type=int, default=30_000,
                   help="total training samples: the paper's compute axis (epochs follow from it)")
    g.add_argument("--dataset-size", type=int, default=None, help="train on a fixed seeded subset of N pairs")
    g.add_argument("--keep-top", type=float, default=None,
                   help="keep the top fraction of pairs by --scores (the paper's quality axis)")
    g.add_argument("--scores", default=None, help="key,score file (eval.py --task score) for --keep-top")
    g.add_argument("--csv-img-key", default="filepath", help="CSV/TSV column of image paths")
    g.add_argument("--csv-caption-key", default="title", help="CSV/TSV column of captions")
    g.add_argument("--workers", type=int, default=2, help="data loader processes per rank")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=128,
                   help="GLOBAL batch, as the paper counts it, split across ranks "
                        "(open_clip's --batch-size is per GPU)")
    g.add_argument("--accum-steps", type=int, default=1,
                   help="process the batch as K micro-batches with the exact full-batch loss (gradient cache)")
    g.add_argument("--optimizer", default="adamw", choices=("adamw", "adafactor"),
                   help="adamw, or adafactor: the paper's, big_vision's variant (tinyclip/optim.py)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    g.add_argument("--wd", type=float, default=None,
                   help="weight decay of 2-D+ weights: AdamW's (x lr; default 0.1), or for adafactor big_vision's "
                        "(x the schedule only, not the lr; default 1e-4, the paper's)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 / Adafactor momentum")
    g.add_argument("--beta2", type=float, default=None,
                   help="AdamW beta2 (default 0.98) / Adafactor's cap on its beta2 (default 0.999, the paper's)")
    g.add_argument("--eps", type=float, default=1e-6, help="AdamW epsilon")
    g.add_argument("--warmup", type=int, default=None,
                   help="linear warmup steps, then cosine decay (default: 2000, or 10%% of a shorter run)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    g.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="autocast dtype; fp16 adds a gradient scaler")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in backward")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--seed", type=int, default=0, help="seeds the model init, data order and augmentations")

    g = p.add_argument_group("output")
    g.add_argument("--out", default="runs/latest", help="run folder: log.jsonl, checkpoints, ckpt.pt")
    g.add_argument("--resume", default=None, help="'auto': continue from the newest valid checkpoint in --out")
    g.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps")
    g.add_argument("--keep-checkpoints", type=int, default=2, help="step checkpoints to keep (0: all)")
    g.add_argument("--log-every", type=int, default=10, help="log a JSON line every N steps")
    g.add_argument("--eval-every", type=int, default=0,
                   help="zero-shot on the validation set every N steps (0: only at the end)")
    g.add_argument("--eval-data", default=None,
                   help="zero-shot set: ImageFolder dir, or 'none' (default: the synthetic held-out split on "
                        "synthetic data)")
    g.add_argument("--eval-label-set", default="shape-color", help="label set of the synthetic held-out split")
    g.add_argument("--eval-size", type=int, default=1000, help="images of the synthetic held-out split to score")
    args = p.parse_args(argv)

    if args.data.split(":")[0] == "synthetic":
        for name, value in SYNTHETIC_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    adafactor = args.optimizer == "adafactor"
    args.wd = args.wd if args.wd is not None else 1e-4 if adafactor else 0.1
    args.beta2 = args.beta2 if args.beta2 is not None else 0.999 if adafactor else 0.98
    main_steps = max(1, args.samples_seen // args.batch_size) if args.batch_size > 0 else 1
    args.warmup = args.warmup if args.warmup is not None else min(2000, main_steps // 10)
    if args.unmasked_lr is None:
        args.unmasked_lr = args.lr / 100
    return args


def check_args(args, world_size: int):
    """Every flag's range and combination, before anything is built."""
    for name in ("batch_size", "accum_steps", "samples_seen", "log_every", "save_every", "eval_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("lr", "wd", "warmup", "grad_clip", "workers", "unmasked_steps", "unmasked_lr", "ssl_scale",
                 "keep_checkpoints", "eval_every"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    if args.strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {args.strategy!r}; valid: {', '.join(STRATEGIES)}")
    if args.arch not in list_models():
        raise ConfigError(f"unknown arch {args.arch!r}; valid: {', '.join(list_models())}")
    if args.augment is not None and args.strategy != "clip-aug":
        raise ConfigError(f"--augment applies to --strategy clip-aug, not {args.strategy}")
    if args.augment is not None and args.augment not in AUGMENT_PRESETS:
        raise ConfigError(f"unknown augment {args.augment!r}; valid: {', '.join(AUGMENT_PRESETS)}")
    if args.strategy == "flip" and not 0.0 < args.mask_ratio < 1.0:
        raise ConfigError(f"--mask-ratio must be in (0, 1), got {args.mask_ratio}")
    if args.unmasked_steps and args.strategy != "flip":
        raise ConfigError(f"--unmasked-steps is FLIP's unmasked tuning stage; --strategy is {args.strategy}")
    if args.batch_size % world_size:
        raise ConfigError(f"--batch-size {args.batch_size} (global) does not split over {world_size} ranks")
    local_batch = args.batch_size // world_size
    if local_batch % args.accum_steps:
        raise ConfigError(f"the per-rank batch {local_batch} (= {args.batch_size} / {world_size} ranks) does not "
                          f"split into --accum-steps {args.accum_steps} equal micro-batches")
    if args.resume not in (None, "auto"):
        raise ConfigError(f"--resume takes 'auto' (the newest checkpoint in --out), got {args.resume!r}")


# -----------------------------------------------------------------------------
# strategies: what each one changes, in one place


STRATEGIES = {
    # name: (preprocessing of the image the CLIP loss sees, FLIP's masking, SLIP's SimCLR views)
    "clip": lambda args: ("none", 0.0, False),
    "slip": lambda args: ("crop", 0.0, True),  # SLIP's CLIP view: RandomResizedCrop(0.5, 1), no flip
    "flip": lambda args: ("none", args.mask_ratio, False),
    "clip-aug": lambda args: (args.augment or "stacked-randaug", 0.0, False),
}


# -----------------------------------------------------------------------------
# the model and its optimiser


def make_model(args) -> nn.Module:
    """The CLIP a run's flags describe (SLIP's head included for --strategy slip), on the CPU."""
    _, mask_ratio, ssl = STRATEGIES[args.strategy](args)
    model = create_model(args.arch, image_size=args.image_size, context_length=args.context_length,
                         text_arch=args.text_arch, embed_dim=args.embed_dim, ssl_mlp_dim=args.ssl_mlp_dim if ssl else 0,
                         ssl_emb_dim=args.ssl_emb_dim, ssl_norm=args.ssl_norm)
    if mask_ratio > 0 and not model.visual.supports_masking:
        raise ConfigError(f"--strategy flip masks image patches and needs a ViT tower; {args.arch} is not one")
    model.set_grad_checkpointing(args.grad_checkpointing)
    return model


def make_optimizer(args, model: nn.Module):
    """AdamW or the paper's Adafactor, decaying only 2-D+ weights: no decay on gains, biases, embeddings
    and the logit scale (open_clip's rule; big_vision's decays kernels only, the same set)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name or "bias_table" in name
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}]
    if args.optimizer == "adafactor":
        return Adafactor(groups, lr=args.lr, momentum=args.beta1, beta2_cap=args.beta2)
    kwargs = dict(lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps)
    try:
        # One fused kernel over all parameters: on CPU ~4x faster than torch's default per-tensor
        # loop (scripts/bench.py); torch < 2.4 has no CPU kernel and refuses, so fall back.
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except RuntimeError:
        return torch.optim.AdamW(groups, **kwargs)


def cosine_lr(step: int, steps: int, warmup: int, peak: float) -> float:
    """Linear warmup to the peak, then cosine decay to zero at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def schedule(step: int, args, main_steps: int, mask_ratio: float) -> tuple:
    """(lr, mask ratio, stage) at a step: the main run, then FLIP's unmasked tuning stage, a schedule of its
    own (FLIP: 1/100 the lr, warmup over 20% of the stage, cosine to zero), not the tail of the first."""
    if step < main_steps:
        return cosine_lr(step, main_steps, args.warmup, args.lr), mask_ratio, "main"
    tune = args.unmasked_steps
    return cosine_lr(step - main_steps, tune, max(1, tune // 5), args.unmasked_lr), 0.0, "unmasked"


# -----------------------------------------------------------------------------
# one training step


def train_step(model, raw_model, batch: dict, mask_ratio: float, optimizer, scaler, args) -> dict:
    """One optimiser step on one global batch -> its loss terms (detached).

    model is what runs the forward (the DDP wrapper under torchrun), raw_model the CLIP inside it.
    Forward, loss and backward run in one pass, or with --accum-steps K > 1 as K micro-batches
    through the gradient cache (DDP's reduction deferred to one all-reduce); then gradient
    clipping, the update, and the temperature clamp. scripts/bench.py times exactly this."""
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    optimizer.zero_grad(set_to_none=True)
    if args.accum_steps == 1:
        with autocast(batch["image"].device, args.precision):
            outputs = model(batch["image"], batch["text"], mask_ratio, batch.get("views"))
            terms = raw_model.loss(*outputs, ssl_scale=args.ssl_scale)
        scaler.scale(terms["loss"]).backward()
    else:
        terms = gradient_cache_step(model, raw_model, batch, args.accum_steps, mask_ratio, args.ssl_scale,
                                    args.precision, scaler, no_sync=model.no_sync if ddp else contextlib.nullcontext)
        if ddp:  # DDP's reducer was bypassed (no_sync): average the gradients here, once
            for p in raw_model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
    if not torch.isfinite(terms["loss"]).item():  # one host sync per step: a NaN never reaches the weights
        raise NonFiniteLoss(f"loss is {terms['loss'].item()}")
    scaler.unscale_(optimizer)
    if args.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():  # after the step, as OpenAI, open_clip and SLIP: a clamp in the forward kills its gradient
        raw_model.logit_scale.clamp_(0, LOG_MAX_LOGIT_SCALE)
    return {k: v.detach() for k, v in terms.items()}


# -----------------------------------------------------------------------------
# the run


def setup_distributed():
    """(rank, world_size, device) from torchrun's environment; a plain process is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not torch.cuda.is_available() and os.environ.get("OMP_NUM_THREADS") == "1":
        # torchrun sets OMP_NUM_THREADS=1 in every worker it starts; on CPUs that leaves all but
        # one core idle per process. Share the node's cores among its processes instead.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if world_size == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def keep_freed_memory() -> bool:
    """CPU training: keep freed memory in the process rather than handing it back to the OS.

    glibc unmaps every freed block over 32 MB and trims the heap's free top at once, so each step
    page-faults its activations in afresh: a quarter of a ViT-S/16 step at 224 px on 2 cores went
    to the kernel (scripts/bench.py). Raising the mmap threshold to 2 GB and turning trimming off
    keeps that memory for the next step; peak memory is unchanged. A no-op without glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, 2 ** 31 - 1) and mallopt(M_TRIM_THRESHOLD, -1))


def check_resumable(ckpt: dict, args, path):
    """A checkpoint of another run is refused, naming the first setting that differs and both values
    (a flag the user gave before one whose default follows from it, such as --lr before --unmasked-lr)."""
    derived = {"warmup", "unmasked_lr", "wd", "beta2", *SYNTHETIC_DEFAULTS}
    for name, value in sorted(vars(args).items(), key=lambda item: item[0] in derived):
        saved = ckpt["args"].get(name, "(not set)")
        if name not in FREE_ON_RESUME and saved != value:
            raise ConfigError(f"{path} is from a run with --{name.replace('_', '-')} {saved}, not {value}; "
                              "resume with the same setting, or use another --out")


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, device = setup_distributed()
    if device.type == "cpu":
        keep_freed_memory()
    try:
        check_args(args, world_size)
        return train(args, rank, world_size, device)
    except (ConfigError, FileNotFoundError, NonFiniteLoss) as e:
        if rank == 0:
            print(f"train.py: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train(args, rank: int, world_size: int, device: torch.device):
    # --- set-up
    augment, mask_ratio, ssl = STRATEGIES[args.strategy](args)
    out = Path(args.out)
    main_steps = max(1, args.samples_seen // args.batch_size)
    total_steps = main_steps + args.unmasked_steps

    # --- model
    torch.manual_seed(args.seed)
    raw_model = make_model(args).to(device).train()
    image_size = raw_model.visual.image_size
    # GFLOPs per sample of each stage: the main run (masked for FLIP), then the unmasked tuning stage
    flops = {"main": gflops_per_sample(raw_model, strategy=args.strategy, mask_ratio=mask_ratio)["total"]}
    flops["unmasked"] = (gflops_per_sample(raw_model, strategy=args.strategy, mask_ratio=0.0)["total"]
                         if args.unmasked_steps else flops["main"])
    # Each rank draws its own FLIP masks (as FLIP's per-device keys), from here on a stream of its own.
    torch.manual_seed(args.seed * 1000 + rank)
    random.seed(args.seed * 1000 + rank)

    # --- optimiser and resume
    optimizer = make_optimizer(args, raw_model)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    if rank == 0 and out.is_dir():
        for folder in (out, out / "checkpoints"):  # what a write killed mid-way left behind
            ckpt_io.remove_stale_temp_files(folder)
    step = 0
    path, ckpt = ckpt_io.latest_valid_checkpoint(out)
    if ckpt is not None:
        if args.resume != "auto":
            raise ConfigError(f"{out} already holds a run ({path.name}); pass --resume auto or another --out")
        check_resumable(ckpt, args, path)
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        step = ckpt["step"]

    # --- data
    loader = make_train_loader(
        args.data, transform=make_transform(augment, image_size, args.normalize),
        ssl_transform=make_transform("simclr", image_size, args.normalize) if ssl else None,
        batch_size=args.batch_size // world_size, rank=rank, world_size=world_size, workers=args.workers,
        seed=args.seed, context_length=raw_model.context_length, dataset_size=args.dataset_size,
        keep_top=args.keep_top, score_file=args.scores, start_sample=step * args.batch_size,
        csv_img_key=args.csv_img_key, csv_caption_key=args.csv_caption_key)
    if ckpt is not None:
        saved, now = ckpt["data_state"], loader.state_dict()
        if (saved["num_samples"], saved["selection"]) != (now["num_samples"], now["selection"]):
            raise ConfigError(f"--data {args.data} now selects {now['num_samples']} pairs, not the "
                              f"{saved['num_samples']} the run in {out} trained on; use another --out")
        if len(ckpt["rng"]) == world_size:  # each rank continues its own random stream
            ckpt_io.set_rng_state(ckpt["rng"][rank])
        else:  # the data order and the optimiser carry over exactly; the per-rank streams start afresh
            torch.manual_seed(args.seed * 1000 + rank + 7919 * step)
            random.seed(args.seed * 1000 + rank + 7919 * step)
        if rank == 0:
            moved = f"; world size {len(ckpt['rng'])} -> {world_size}: FLIP masks drawn afresh" \
                if len(ckpt["rng"]) != world_size else ""
            print(f"resuming from {path} at step {step}{moved}")

    model = raw_model
    if args.compile:
        raw_model.compile()  # in place, before DDP wraps it (as nanoGPT): DDP's no_sync stays reachable
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda"
                                                    else None)

    def save(path):
        # Every rank's RNG state is kept so each rank resumes its own stream of FLIP masks.
        rngs = [ckpt_io.rng_state()]
        if world_size > 1:
            rngs = [None] * world_size
            dist.all_gather_object(rngs, ckpt_io.rng_state())
        if rank == 0:
            ckpt_io.save_atomic({"model": raw_model.state_dict(), "config": dataclasses.asdict(raw_model.config),
                                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
                                 "samples_seen": step * args.batch_size, "args": vars(args), "rng": rngs,
                                 "data_state": {**loader.state_dict(), "samples_seen": step * args.batch_size}},
                                path)

    def compute_pflops(step):  # the compute axis: each stage's samples at its own GFLOPs per sample
        main = min(step, main_steps) * args.batch_size * flops["main"]
        return (main + max(0, step - main_steps) * args.batch_size * flops["unmasked"]) / 1e6

    log_file = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(vars(args), indent=1))
        log_file = open(out / "log.jsonl", "a")
        tuning = f" + {args.unmasked_steps} unmasked" if args.unmasked_steps else ""
        print(f"{args.strategy} | {args.arch} + {raw_model.config.text_arch} text | {main_steps}{tuning} steps x "
              f"{args.batch_size} = {total_steps * args.batch_size} samples | {flops['main']:.2f} GFLOPs/sample "
              f"(train, 1 multiply-add = 2 FLOPs) | {world_size} x {device.type}")

    # --- the loop
    bar = tqdm(total=total_steps, initial=step, disable=rank != 0, unit="step", dynamic_ncols=True)
    data_iter = iter(loader)
    window_start, window_samples = time.perf_counter(), 0
    while step < total_steps:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(data_iter).items()}
        lr, step_mask_ratio, stage = schedule(step, args, main_steps, mask_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            terms = train_step(model, raw_model, batch, step_mask_ratio, optimizer, scaler, args)
        except NonFiniteLoss as e:
            raise NonFiniteLoss(f"{e} at step {step}; stopping. The last good checkpoint is kept in {out}") from None
        step += 1
        window_samples += args.batch_size

        if step % args.log_every == 0 or step == total_steps:
            if world_size > 1:  # each rank holds the loss of its own rows: log the global batch's
                values = torch.stack([v.float() for v in terms.values()])
                dist.all_reduce(values)
                terms = dict(zip(terms, values / world_size))
            elapsed = time.perf_counter() - window_start
            record = {"step": step, "samples_seen": step * args.batch_size,
                      "epoch": loader.epoch_of(step * args.batch_size), "stage": stage,
                      **{k: round(v.item(), 5) for k, v in terms.items()}, "lr": lr,
                      "logit_scale": round(raw_model.logit_scale.exp().item(), 3),
                      "samples_per_s": round(window_samples / elapsed, 1), "gflops_per_sample": sig(flops[stage]),
                      "total_pflops": sig(compute_pflops(step)), "skipped": dict(loader.skipped)}
            window_start, window_samples = time.perf_counter(), 0
            if rank == 0:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix(loss=f"{record['loss']:.3f}", sps=record["samples_per_s"], lr=f"{lr:.1e}")
        bar.update(1)
        if args.eval_every and step % args.eval_every == 0 and step < total_steps:
            log_eval(args, raw_model, device, step, log_file, rank)
        if step % args.save_every == 0 and step < total_steps:
            save(ckpt_io.step_checkpoint_path(out, step))
            if rank == 0:
                ckpt_io.prune_checkpoints(out, args.keep_checkpoints)

    # --- the end
    save(out / "ckpt.pt")
    bar.close()
    result = log_eval(args, raw_model, device, step, log_file, rank)
    if log_file:
        log_file.close()
    return result


def sig(x, digits=5):
    """x rounded to significant digits: the compute figures span many orders of magnitude."""
    return float(f"{x:.{digits}g}")


def log_eval(args, model, device, step, log_file, rank):
    """Zero-shot accuracy on the validation set (rank 0 only); logged and returned."""
    if rank != 0 or args.eval_data in (None, "none"):
        return None
    was_training = model.training
    model.eval()
    result = zeroshot(model, args.eval_data, image_size=model.visual.image_size, normalize=args.normalize,
                      label_set=args.eval_label_set, size=args.eval_size, device=device)
    model.train(was_training)
    log_file.write(json.dumps({"step": step, "eval": args.eval_data, **result}) + "\n")
    log_file.flush()
    print("zero-shot " + " ".join(f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
