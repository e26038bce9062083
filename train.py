"""Train a CLIP model with one of the four strategies of "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024).

    python train.py                                       # CLIP, vit-s, the built-in synthetic data
    torchrun --nproc_per_node 8 train.py --strategy flip --arch vit-s --data shards/{00000..00999}.tar

Strategies (chosen in one place, `strategy_settings`):
    clip      plain CLIP: base preprocessing, no augmentation
    flip      FLIP (Li et al. 2023): drop --mask-ratio of the image patches; optional unmasked tuning
    slip      SLIP (Mu et al. 2021): CLIP + --ssl-scale x SimCLR on two extra augmented views
    clip-aug  the paper's CLIP + data augmentation (--augment, default stacked-randaug)

Runs on one process or under torchrun on many (NCCL on GPUs, gloo on CPUs), one node or many.
The loss is exact under data parallelism (tinyclip/losses.py) and under gradient accumulation
(--accum-steps: the gradient cache of Gao et al. 2021, tinyclip/gradcache.py). Checkpoints are resumable
mid-epoch: a resumed run equals an uninterrupted one bit for bit.
"""

import argparse
import contextlib
import ctypes
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from tinyclip import checkpoint as ckpt_io
from tinyclip.augment import AUGMENT_PRESETS, make_transform
from tinyclip.data import make_train_loader
from tinyclip.flops import gflops_per_sample
from tinyclip.gradcache import gradient_cache_step
from tinyclip.losses import SimCLRHead, clip_loss, simclr_loss
from tinyclip.model import create_model, list_models

STRATEGIES = ("clip", "slip", "flip", "clip-aug")
SYNTHETIC_IMAGE_SIZE = 64     # the built-in data's native resolution
SYNTHETIC_CONTEXT_LENGTH = 32  # its captions are short; CLIP's 77 would be mostly padding


class ConfigError(ValueError):
    """A bad combination of flags: reported as one line, before any work is done."""


# -----------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to train")
    g.add_argument("--strategy", default="clip", help=f"training strategy: {', '.join(STRATEGIES)}")
    g.add_argument("--arch", default="vit-s", help="image tower preset (see tinyclip.list_models())")
    g.add_argument("--text-arch", default=None,
                   help="text tower: openai (512 wide), vit-b (768, the paper's), small, test; "
                        "default: the arch's OpenAI pairing, or 'small' on the built-in data")
    g.add_argument("--image-size", type=int, default=None,
                   help=f"input resolution (default: 224, or {SYNTHETIC_IMAGE_SIZE} on the built-in data)")
    g.add_argument("--context-length", type=int, default=None,
                   help=f"text tokens incl. SOT/EOT (default 77, or {SYNTHETIC_CONTEXT_LENGTH} on the built-in "
                        "data; the paper uses 16)")
    g.add_argument("--embed-dim", type=int, default=None, help="joint embedding width (default: the preset's)")
    g.add_argument("--mask-ratio", type=float, default=0.5, help="flip: fraction of image patches dropped")
    g.add_argument("--unmasked-steps", type=int, default=0, help="flip: train the last N steps unmasked")
    g.add_argument("--ssl-scale", type=float, default=1.0, help="slip: weight of the SimCLR loss")
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
    g.add_argument("--optimizer", default="adamw", choices=("adamw", "adafactor"), help="adafactor is the paper's")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    g.add_argument("--wd", type=float, default=0.1, help="weight decay (2-D+ weights only)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW/Adafactor beta1")
    g.add_argument("--beta2", type=float, default=0.98, help="AdamW beta2")
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
                   help="zero-shot set: ImageFolder dir, or 'none' (default: the synthetic held-out split on synthetic data)")
    g.add_argument("--eval-label-set", default="shape-color", help="label set of the synthetic held-out split")
    g.add_argument("--eval-size", type=int, default=1000, help="images of the synthetic held-out split to score")
    return p.parse_args(argv)


@dataclasses.dataclass
class Strategy:
    """What a strategy changes in a step: the preprocessing, the masking, and the extra loss."""
    augment: str
    mask_ratio: float
    ssl: bool


def strategy_settings(args) -> Strategy:
    if args.strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {args.strategy!r}; valid: {', '.join(STRATEGIES)}")
    if args.augment is not None and args.strategy != "clip-aug":
        raise ConfigError(f"--augment applies to --strategy clip-aug, not {args.strategy}")
    if args.augment is not None and args.augment not in AUGMENT_PRESETS:
        raise ConfigError(f"unknown augment {args.augment!r}; valid: {', '.join(AUGMENT_PRESETS)}")
    if args.strategy == "flip":
        if not 0.0 < args.mask_ratio < 1.0:
            raise ConfigError(f"--mask-ratio must be in (0, 1), got {args.mask_ratio}")
        return Strategy(augment="none", mask_ratio=args.mask_ratio, ssl=False)
    if args.strategy == "slip":
        return Strategy(augment="none", mask_ratio=0.0, ssl=True)
    if args.strategy == "clip-aug":
        return Strategy(augment=args.augment or "stacked-randaug", mask_ratio=0.0, ssl=False)
    return Strategy(augment="none", mask_ratio=0.0, ssl=False)


# -----------------------------------------------------------------------------
# distributed set-up


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


class Towers(nn.Module):
    """What DDP wraps: the CLIP model's two encoders, and the optional SLIP head, in one forward.

    forward returns *unnormalised* embeddings so a loss stage can run apart from the towers (the
    gradient cache needs that); DDP needs every parameter to be reached through this forward.
    """

    def __init__(self, clip, ssl_head=None):
        super().__init__()
        self.clip, self.ssl_head = clip, ssl_head

    def forward(self, image, text, views=None, mask_ratio=0.0):
        out = {"image": self.clip.encode_image(image, mask_ratio=mask_ratio),   # n, D
               "text": self.clip.encode_text(text),                            # n, D
               "logit_scale": self.clip.logit_scale}
        if views is not None:
            v1, v2 = views
            both = self.clip.encode_image(torch.cat([v1, v2]))                 # 2n, D
            out["views"] = both
        return out


def loss_stage(feats, ssl_head, ssl_scale: float) -> dict:
    """Features of the whole (rank-local) batch -> the strategy's loss terms."""
    f = nn.functional.normalize
    logit_scale = feats["logit_scale"].clamp(max=math.log(100)).exp()
    terms = clip_loss(f(feats["image"], dim=-1), f(feats["text"], dim=-1), logit_scale)
    if "views" in feats:
        # The SLIP head runs here, on the whole batch at once, so its BatchNorm sees the same batch
        # with or without gradient accumulation.
        v1, v2 = feats["views"].chunk(2)                      # n, D each: [all first views; all second]
        z1, z2 = ssl_head(v1), ssl_head(v2)                  # SLIP runs its head on each view apart
        ssl = simclr_loss(z1, z2)["ssl"]
        terms = {"loss": terms["clip"] + ssl_scale * ssl, "clip": terms["clip"], "ssl": ssl}
    return terms


# -----------------------------------------------------------------------------
# optimisation


def param_groups(module: nn.Module, weight_decay: float):
    """Decay only 2-D+ weights: no decay on gains, biases, embeddings and the logit scale."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name or "bias_table" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(args, module):
    groups = param_groups(module, args.wd)
    if args.optimizer == "adafactor":
        if not hasattr(torch.optim, "Adafactor"):
            raise ConfigError(f"--optimizer adafactor needs torch>=2.5 (torch.optim.Adafactor); this is {torch.__version__}")
        # The paper's optimizer (beta2 0.999 in Big Vision's sense; torch's Adafactor decays beta2
        # by a schedule instead and has no first moment, so --beta1/--beta2 do not apply to it).
        return torch.optim.Adafactor(groups, lr=args.lr)
    kwargs = dict(lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps)
    try:
        # One fused kernel over all parameters: on CPU ~4x faster than torch's default per-tensor
        # loop (scripts/bench.py); torch < 2.4 has no CPU kernel and refuses, so fall back.
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except RuntimeError:
        return torch.optim.AdamW(groups, **kwargs)


def lr_at(step: int, total_steps: int, warmup: int, peak: float) -> float:
    """Linear warmup to the peak, then cosine decay to zero at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


# -----------------------------------------------------------------------------
# one training step


def train_step(towers, head, batch, settings, mask_ratio, accum_steps, scaler, autocast, ssl_scale):
    """Forward, loss and backward for one global batch; returns the loss terms (detached).

    With accum_steps K > 1 the batch runs as K micro-batches without changing the mathematics:
    the gradient cache of tinyclip/gradcache.py, with DDP's gradient reduction deferred to one
    all-reduce at the end.
    """
    encode = lambda mb: towers(mb["image"], mb["text"], mb.get("views"), mask_ratio)
    loss_of = lambda feats: loss_stage(feats, head, ssl_scale)

    def backward(terms):
        _check_finite(terms)
        scaler.scale(terms["loss"]).backward()

    if accum_steps == 1:
        with autocast():
            terms = loss_of(encode(batch))
        backward(terms)
    else:
        terms = gradient_cache_step(encode, loss_of, backward, batch, accum_steps, _unwrap(towers).clip.logit_scale,
                                    autocast=autocast, no_sync=lambda: _no_sync(towers))
        _average_gradients(towers)
    return {k: v.detach() for k, v in terms.items()}


def _unwrap(module):
    module = getattr(module, "_orig_mod", module)       # torch.compile
    return getattr(module, "module", module)            # DDP


def _no_sync(towers):
    return towers.no_sync() if isinstance(towers, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


def _average_gradients(towers):
    """With the gradient cache DDP's reducer is bypassed (no_sync): average the gradients here."""
    if not isinstance(towers, nn.parallel.DistributedDataParallel):
        return
    world = dist.get_world_size()
    for p in towers.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


class NonFiniteLoss(RuntimeError):
    pass


def _check_finite(terms):
    # One host sync per step buys the guarantee that a NaN never reaches the weights.
    if not torch.isfinite(terms["loss"]).item():
        raise NonFiniteLoss(f"loss is {terms['loss'].item()}")


# -----------------------------------------------------------------------------
# main


def resolve_defaults(args):
    """Fill the data-dependent defaults: the built-in data is small-resolution with short captions."""
    synthetic = args.data.split(":")[0] == "synthetic"
    if args.image_size is None:
        args.image_size = SYNTHETIC_IMAGE_SIZE if synthetic else 224
    if args.context_length is None:
        args.context_length = SYNTHETIC_CONTEXT_LENGTH if synthetic else 77
    if args.text_arch is None and synthetic:
        args.text_arch = "small"
    if args.eval_data is None and synthetic:
        args.eval_data = "synthetic"
    return args


def build_everything(args, rank, world_size, device):
    """Model, SLIP head, optimiser, scaler and the strategy settings, with flag checks first."""
    settings = strategy_settings(args)
    if args.batch_size % world_size:
        raise ConfigError(f"--batch-size {args.batch_size} (global) does not split over {world_size} ranks")
    local_batch = args.batch_size // world_size
    if local_batch % args.accum_steps:
        raise ConfigError(f"the per-rank batch {local_batch} (= {args.batch_size} / {world_size} ranks) does not "
                          f"split into --accum-steps {args.accum_steps} equal micro-batches")
    if args.arch not in list_models():
        raise ConfigError(f"unknown arch {args.arch!r}; valid: {', '.join(list_models())}")
    overrides = {"image_size": args.image_size, "context_length": args.context_length}
    if args.text_arch is not None:
        overrides["text_arch"] = args.text_arch
    if args.embed_dim is not None:
        overrides["embed_dim"] = args.embed_dim
    torch.manual_seed(args.seed)
    model = create_model(args.arch, **overrides)
    if settings.mask_ratio > 0 and not model.visual.supports_masking:
        raise ConfigError(f"--strategy flip masks image patches and needs a ViT tower; {args.arch} is not one")
    head = (SimCLRHead(model.config.embed_dim, args.ssl_mlp_dim, args.ssl_emb_dim, norm=args.ssl_norm)
            if settings.ssl else None)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    towers = Towers(model, head).to(device)
    optimizer = make_optimizer(args, towers)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    return settings, towers, optimizer, scaler


def check_compatible(ckpt, args, config):
    """A run folder holding another run's checkpoint is refused rather than silently mixed."""
    ours = dataclasses.asdict(config)
    if ckpt["config"] != ours or ckpt["args"].get("strategy") != args.strategy:
        raise ConfigError(f"{args.out} holds a checkpoint of another run "
                          f"({ckpt['args'].get('strategy')}/{ckpt['args'].get('arch')}); use another --out")


def main(argv=None):
    args = resolve_defaults(parse_args(argv))
    rank, world_size, device = setup_distributed()
    if device.type == "cpu":
        keep_freed_memory()
    try:
        return run(args, rank, world_size, device)
    except (ConfigError, FileNotFoundError, NonFiniteLoss) as e:
        if rank == 0:
            print(f"train.py: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(args, rank, world_size, device):
    settings, towers, optimizer, scaler = build_everything(args, rank, world_size, device)
    model, head = towers.clip, towers.ssl_head
    out = Path(args.out)
    total_steps = max(1, args.samples_seen // args.batch_size)
    warmup = args.warmup if args.warmup is not None else min(2000, total_steps // 10)

    # resume, or refuse to overwrite another run
    step, start_samples = 0, 0
    path, ckpt = ckpt_io.latest_valid_checkpoint(out)
    if ckpt is not None:
        if args.resume != "auto":
            raise ConfigError(f"{out} already holds a run ({path.name}); pass --resume auto or another --out")
        check_compatible(ckpt, args, model.config)
        model.load_state_dict(ckpt["model"])
        if head is not None:
            head.load_state_dict(ckpt["ssl_head"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        step, start_samples = ckpt["step"], ckpt["samples_seen"]
        if rank == 0:
            print(f"resuming from {path} at step {step}")
    elif args.resume not in (None, "auto"):
        raise ConfigError(f"--resume takes 'auto' (the newest checkpoint in --out), got {args.resume!r}")

    loader = make_train_loader(
        args.data, transform=make_transform(settings.augment, args.image_size, args.normalize),
        ssl_transform=make_transform("simclr", args.image_size, args.normalize) if settings.ssl else None,
        batch_size=args.batch_size // world_size, rank=rank, world_size=world_size, workers=args.workers,
        seed=args.seed, context_length=args.context_length, dataset_size=args.dataset_size,
        keep_top=args.keep_top, score_file=args.scores, start_sample=start_samples,
        csv_img_key=args.csv_img_key, csv_caption_key=args.csv_caption_key)

    flops = gflops_per_sample(model, strategy=args.strategy, mask_ratio=settings.mask_ratio, train=True)
    ddp = towers
    if world_size > 1:
        ddp = nn.parallel.DistributedDataParallel(towers, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        ddp = torch.compile(ddp)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    autocast = lambda: torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(vars(args), indent=1))
        print(f"{args.strategy} | {args.arch} + {model.config.text_arch} text | {total_steps} steps x "
              f"{args.batch_size} = {total_steps * args.batch_size} samples | {flops['total']:.2f} GFLOPs/sample "
              f"(train, 1 multiply-add = 2 FLOPs) | {world_size} x {device.type}")
    log_file = open(out / "log.jsonl", "a") if rank == 0 else None
    bar = _progress(rank, total_steps, step)

    def save(path):
        # Every rank's RNG state is kept so each rank resumes its own stream of FLIP masks.
        rngs = [ckpt_io.rng_state()]
        if world_size > 1:
            rngs = [None] * world_size
            dist.all_gather_object(rngs, ckpt_io.rng_state())
        if rank == 0:
            state = {"model": model.state_dict(), "config": dataclasses.asdict(model.config),
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
                     "samples_seen": step * args.batch_size, "args": vars(args), "rng": rngs,
                     "data_state": {"samples_seen": step * args.batch_size, "seed": args.seed}}
            if head is not None:
                state["ssl_head"] = head.state_dict()
            ckpt_io.save_atomic(state, path)

    towers.train()
    data_iter = iter(loader)
    if ckpt is not None:
        # Restored last: building the loader and counting FLOPs above draw from the global RNG too.
        ckpt_io.set_rng_state(ckpt["rng"][rank])
    window_start, window_samples = time.perf_counter(), 0
    while step < total_steps:
        batch = {k: (tuple(t.to(device, non_blocking=True) for t in v) if k == "views" else v.to(device, non_blocking=True))
                 for k, v in next(data_iter).items()}
        lr = lr_at(step, total_steps, warmup, args.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        mask_ratio = settings.mask_ratio if step < total_steps - args.unmasked_steps else 0.0
        optimizer.zero_grad(set_to_none=True)
        try:
            terms = train_step(ddp, head, batch, settings, mask_ratio, args.accum_steps, scaler, autocast,
                               args.ssl_scale)
        except NonFiniteLoss as e:
            raise NonFiniteLoss(f"{e} at step {step}; stopping. The last good checkpoint is kept in {out}") from None
        scaler.unscale_(optimizer)
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(towers.parameters(), args.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        window_samples += args.batch_size

        if step % args.log_every == 0 or step == total_steps:
            if world_size > 1:  # each rank holds the loss of its own rows: log the global batch's
                values = torch.stack([v.float() for v in terms.values()])
                dist.all_reduce(values)
                terms = dict(zip(terms, values / world_size))
            elapsed = time.perf_counter() - window_start
            record = {"step": step, "samples_seen": step * args.batch_size,
                      "epoch": loader.epoch_of(step * args.batch_size),
                      **{k: round(v.item(), 5) for k, v in terms.items()}, "lr": lr,
                      "logit_scale": round(model.logit_scale.exp().item(), 3),
                      "samples_per_s": round(window_samples / elapsed, 1), "gflops_per_sample": _sig(flops["total"]),
                      "total_pflops": _sig(flops["total"] * step * args.batch_size / 1e6),
                      "skipped": dict(loader.skipped)}
            window_start, window_samples = time.perf_counter(), 0
            if rank == 0:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix(loss=f"{record['loss']:.3f}", sps=record["samples_per_s"], lr=f"{lr:.1e}")
        if rank == 0:
            bar.update(1)
        if args.eval_every and step % args.eval_every == 0 and step < total_steps:
            _log_eval(args, model, device, step, log_file, rank)
        if step % args.save_every == 0 and step < total_steps:
            save(ckpt_io.step_checkpoint_path(out, step))
            if rank == 0:
                ckpt_io.prune_checkpoints(out, args.keep_checkpoints)

    save(out / "ckpt.pt")
    if rank == 0:
        bar.close()
    result = _log_eval(args, model, device, step, log_file, rank)
    if log_file:
        log_file.close()
    return result


def _sig(x, digits=5):
    """x rounded to significant digits: the compute figures span many orders of magnitude."""
    return float(f"{x:.{digits}g}")


def _progress(rank, total, initial):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, disable=rank != 0, unit="step", dynamic_ncols=True)


def _log_eval(args, model, device, step, log_file, rank):
    """Zero-shot accuracy on the validation set (rank 0 only); logged and returned."""
    if rank != 0 or args.eval_data in (None, "none"):
        return None
    from tinyclip import tasks
    was_training = model.training
    model.eval()
    result = tasks.zeroshot(model, args.eval_data, image_size=args.image_size, normalize=args.normalize,
                            label_set=args.eval_label_set, size=args.eval_size, device=device)
    model.train(was_training)
    record = {"step": step, "eval": args.eval_data, **result}
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()
    print("zero-shot " + " ".join(f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
