"""Train a CLIP model with one of the four strategies of "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024).

    python train.py                                       # CLIP, vit-s, the built-in synthetic data
    torchrun --nproc_per_node 8 train.py --strategy flip --arch vit-s --data 'shards/{00000..00999}.tar'

Strategies (chosen in one place, STRATEGIES in tinyclip/train_flags.py with every flag):
    clip      plain CLIP: resize and centre crop, no augmentation
    flip      FLIP (Li et al. 2023): drop --mask-ratio of the image patches
    slip      SLIP (Mu et al. 2021): CLIP on SLIP's cropped view + --ssl-scale x SimCLR on two more views
    clip-aug  the paper's CLIP + data augmentation (--augment, default stacked-randaug)
Beyond the paper, for any strategy: SigLIP's sigmoid loss (--loss sigmoid) or label smoothing; a tuning stage
after the main budget (--tune-steps), unmasked (FLIP's) and at other sizes (CLIPA's reduced tokens, then
--tune-image-size/--tune-context-length); starting weights (--init) and LiT's locked image tower (--lock-image).

Runs on one process or under torchrun on many (NCCL on GPUs, gloo on CPUs), one node or many.
The loss is exact under data parallelism (tinyclip/losses.py) and under gradient accumulation
(--accum-steps: the gradient cache of Gao et al. 2021, tinyclip/gradcache.py). Checkpoints are resumable
mid-epoch: a resumed run equals an uninterrupted one bit for bit.

The file reads top to bottom: the model and its optimiser, the schedule, one training step (train_step,
which scripts/bench.py times), then the run: the processes, main(), and train() in sections: the checks,
the data, the model, the optimiser and a resumed run's state, checkpoints and the log, the loop, the end.
The flags, their defaults and checks (with what --init and a resumed checkpoint must match) are
tinyclip/train_flags.py; the data, its start-up line included, is tinyclip/data.py.
"""

import contextlib
from collections import Counter
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
from tqdm import tqdm

from tinyclip import checkpoint as ckpt_io
from tinyclip.augment import make_transform
from tinyclip.data import make_train_loader
from tinyclip.evaluation import zeroshot
from tinyclip.flops import gflops_per_sample
from tinyclip.gradcache import gradient_cache_step
from tinyclip.model import LOG_MAX_LOGIT_SCALE, autocast, build_model, create_model
from tinyclip.optim import Adafactor
from tinyclip.train_flags import (STRATEGIES, ConfigError, check_args, check_resumable, parse_args, read_init,
                                  resolve_budget)


# -----------------------------------------------------------------------------
# the model and its optimiser


def make_model(args, quick_gelu: bool = False) -> nn.Module:
    """The CLIP a run's flags describe (SLIP's head included for --strategy slip, the image tower locked for
    --lock-image), on the CPU, at the main stage's image size and the longest context of either stage."""
    _, mask_ratio, ssl = STRATEGIES[args.strategy](args)
    try:
        model = create_model(args.arch, image_size=args.image_size, text_arch=args.text_arch,
                             context_length=max(args.context_length, args.tune_context_length or 0),
                             embed_dim=args.embed_dim, ssl_mlp_dim=args.ssl_mlp_dim if ssl else 0,
                             ssl_emb_dim=args.ssl_emb_dim, ssl_norm=args.ssl_norm, loss=args.loss,
                             quick_gelu=quick_gelu)
    except ValueError as e:  # e.g. an image size the tower's patches or stride do not divide
        raise ConfigError(f"--arch {args.arch} with --image-size {args.image_size}: {e}") from None
    if mask_ratio > 0 and not model.visual.supports_masking:
        raise ConfigError(f"--strategy flip masks image patches and needs a ViT tower; {args.arch} is not one")
    if args.tune_image_size not in (None, model.visual.image_size):
        try:  # checked on a copy without weights: the model itself is resized when the stage starts
            with torch.device("meta"):
                build_model(model.config).resize_image(args.tune_image_size)
        except ValueError as e:
            raise ConfigError(f"--tune-image-size {args.tune_image_size} with --arch {args.arch}: {e}") from None
    model.set_grad_checkpointing(args.grad_checkpointing)
    return model.lock_image() if args.lock_image else model


def stage_sizes(args, image_size: int) -> dict:
    """Each stage's (image size, context length): the main budget's (image_size: the model's, from --image-size
    or the preset), then the tuning stage's (the --tune-* sizes, else the main budget's)."""
    return {"main": (image_size, args.context_length),
            "tune": (args.tune_image_size or image_size, args.tune_context_length or args.context_length)}


def stage_gflops(args) -> dict:
    """Training GFLOPs per sample of each stage, {"main", "tune"}: the main budget (masked for FLIP, at
    --image-size and --context-length) and the tuning stage (unmasked, at the --tune-* sizes); a locked
    image tower counts its forward only. Counted on the meta device, free for any model size."""
    with torch.device("meta"):
        model = make_model(args)
    mask_ratios = {"main": STRATEGIES[args.strategy](args)[1], "tune": 0.0}
    return {stage: gflops_per_sample(model, strategy=args.strategy, mask_ratio=mask_ratios[stage], image_size=size,
                                     context_length=length)["total"]
            for stage, (size, length) in stage_sizes(args, model.visual.image_size).items()}


def make_optimizer(args, model: nn.Module):
    """AdamW or the paper's Adafactor, decaying only 2-D+ weights: no decay on gains, biases, embeddings
    and the logit scale (open_clip's rule; big_vision's decays kernels only, the same set)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:  # a locked image tower (LiT): no optimiser state
            continue
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


def schedule(step: int, args, main_steps: int, mask_ratio: float) -> tuple:
    """(lr, mask ratio, stage) at a step: linear warmup to the peak, then cosine decay to zero at the stage's
    last step; the main run, then the tuning stage (unmasked: FLIP's; at full size: CLIPA's), a schedule of
    its own (FLIP: 1/100 the lr, warmup over 20% of the stage), not the tail of the first."""
    if step < main_steps:
        steps, warmup, peak, stage = main_steps, args.warmup, args.lr, "main"
    else:
        step, steps, mask_ratio, stage = step - main_steps, args.tune_steps, 0.0, "tune"
        warmup, peak = max(1, steps // 5), args.tune_lr
    if step < warmup:
        return peak * (step + 1) / warmup, mask_ratio, stage
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))), mask_ratio, stage


# -----------------------------------------------------------------------------
# one training step


def train_step(model, raw_model, batch: dict, mask_ratio: float, optimizer, scaler, args) -> dict:
    """One optimiser step on one global batch -> its loss terms (detached) and the gradient norm before
    clipping ("grad_norm"). model runs the forward (the DDP wrapper under torchrun), raw_model is the CLIP
    inside it. Forward, loss and backward run in one pass, or with --accum-steps K > 1 as K micro-batches
    through the gradient cache (DDP's reduction deferred to one all-reduce); then gradient clipping, the
    update, and the temperature clamp."""
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    loss_options = dict(ssl_scale=args.ssl_scale, label_smoothing=args.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    if args.accum_steps == 1:
        with autocast(batch["image"].device, args.precision):
            outputs = model(batch["image"], batch["text"], mask_ratio, batch.get("views"))
            terms = raw_model.loss(*outputs, **loss_options)
        scaler.scale(terms["loss"]).backward()
    else:
        terms = gradient_cache_step(model, raw_model, batch, args.accum_steps, mask_ratio, loss_options,
                                    args.precision, scaler, no_sync=model.no_sync if ddp else contextlib.nullcontext)
        if ddp:  # DDP's reducer was bypassed (no_sync): average the gradients here, once
            for p in raw_model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
    if not torch.isfinite(terms["loss"]).item():  # one host sync per step: a NaN never reaches the weights
        raise FloatingPointError(f"loss is {terms['loss'].item()}")
    scaler.unscale_(optimizer)
    # the global gradient norm, logged; clipped to --grad-clip (with 0, an infinite bound leaves it as it is)
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.grad_clip or math.inf)
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():  # after the step, as OpenAI, open_clip and SLIP: a clamp in the forward kills its gradient
        raw_model.logit_scale.clamp_(0, LOG_MAX_LOGIT_SCALE)
    return {**{k: v.detach() for k, v in terms.items()}, "grad_norm": grad_norm.detach()}


# -----------------------------------------------------------------------------
# the run


def setup_distributed(threads=None):
    """(rank, world_size, device) from torchrun's environment; a plain process is rank 0 of 1."""
    if threads:
        torch.set_num_threads(threads)
    elif "TORCHELASTIC_RUN_ID" in os.environ and not torch.cuda.is_available():
        # torchrun sets OMP_NUM_THREADS=1 in every worker it starts; on CPUs that leaves all but
        # one core idle per process. Share the node's cores among its processes instead.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
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


def main(argv=None):
    rank = int(os.environ.get("RANK", "0"))
    try:
        args = parse_args(argv)
        rank, world_size, device = setup_distributed(args.threads)
        if device.type == "cpu":
            keep_freed_memory()
        check_args(args, world_size)
        return train(args, rank, world_size, device)
    except (ConfigError, FileNotFoundError, FloatingPointError) as e:  # FloatingPointError: a NaN or inf loss
        if rank == 0:
            print(f"train.py: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train(args, rank: int, world_size: int, device: torch.device):
    # --- checks: the model the flags describe and the run folder, before anything is built
    started = time.time()
    augment, mask_ratio, ssl = STRATEGIES[args.strategy](args)
    with torch.device("meta"):  # no memory, no time: the shapes, and whether the flags fit together
        shapes = make_model(args)
    init = read_init(args, shapes) if args.init else None
    sizes = stage_sizes(args, shapes.visual.image_size)
    out = Path(args.out)
    if rank == 0:
        ckpt_io.remove_stale_temp_files(out)  # what a write killed mid-way left behind
    path, ckpt = ckpt_io.latest_valid_checkpoint(out)
    if ckpt is not None and args.resume != "auto":
        raise ConfigError(f"{out} already holds a run ({path.name}); pass --resume auto or another --out")
    step = ckpt["step"] if ckpt is not None else 0

    # --- the data, checked against a resumed run's, and the budget it sets
    def make_loader(stage: str, start_step: int, positions: dict):
        """The pairs in order from a step on, at a stage's sizes (stream mode: each worker from its position)."""
        image_size, context_length = sizes[stage]
        return make_train_loader(
            args.data, transform=make_transform(augment, image_size, args.normalize),
            ssl_transform=make_transform("simclr", image_size, args.normalize) if ssl else None,
            batch_size=args.batch_size // world_size, rank=rank, world_size=world_size, workers=args.workers,
            seed=args.seed, context_length=context_length, dataset_size=args.dataset_size, keep_top=args.keep_top,
            score_file=args.scores, start_sample=start_step * args.batch_size, csv_img_key=args.csv_img_key,
            csv_caption_key=args.csv_caption_key, csv_separator=args.csv_separator, mode=args.data_mode,
            buffer_size=args.shuffle_buffer, resampled=args.dataset_resampled, retries=args.data_retries,
            num_samples=args.train_num_samples, positions=positions)

    # stream mode: where each of this rank's loader workers stands (a resumed run's from its checkpoint)
    saved_positions = ckpt["data_state"].get("positions", []) if ckpt is not None else []
    positions = saved_positions[rank] if rank < len(saved_positions) else {}  # another world size: refused below
    try:  # rank 0 first: it builds a tar index the other ranks then read from beside the shards
        if rank > 0:
            dist.barrier()
        loader = make_loader("main", step, positions)
    except ValueError as e:  # the data's own problems (no valid sample, a missing column, ...): one line
        raise ConfigError(str(e)) from None
    finally:
        if rank == 0 and world_size > 1:
            dist.barrier()
    main_steps = resolve_budget(args, loader.num_samples)
    total_steps = main_steps + args.tune_steps
    resized = sizes["tune"][0] != sizes["main"][0]  # CLIPA: the tuning stage at another image size
    if step > main_steps and sizes["tune"] != sizes["main"]:  # a run resumed inside the tuning stage
        loader = make_loader("tune", step, positions)
    if ckpt is not None:
        check_resumable(ckpt, args, path, loader.state_dict())

    # --- model
    torch.manual_seed(args.seed)
    raw_model = make_model(args, quick_gelu=init["quick_gelu"] if init else False).to(device).train()
    if init:
        raw_model.load_state_dict(init["weights"], strict=False)  # read_init checked that every key fits
    if resized and step > main_steps:  # a resumed tuning stage: the checkpoint holds the resized embedding
        raw_model.resize_image(sizes["tune"][0])
    flops = stage_gflops(args)  # GFLOPs per sample of each stage
    ckpt_io.seed_rank_stream(args.seed, rank, 0)  # each rank its own FLIP masks, as FLIP's per-device keys

    # --- optimiser, and the state of a resumed run
    optimizer = make_optimizer(args, raw_model)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    if ckpt is not None:
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if len(ckpt["rng"]) == world_size:  # each rank continues its own random stream
            ckpt_io.set_rng_state(ckpt["rng"][rank])
        else:  # the data order and the optimiser carry over exactly; the per-rank streams start afresh
            ckpt_io.seed_rank_stream(args.seed, rank, step)
    if args.compile:
        raw_model.compile()  # in place, before DDP wraps it (as nanoGPT): DDP's no_sync stays reachable

    def wrap(raw_model):  # what runs the forward: DDP's wrapper on several processes
        device_ids = [device.index] if device.type == "cuda" else None
        return raw_model if world_size == 1 else nn.parallel.DistributedDataParallel(raw_model, device_ids=device_ids)
    model = wrap(raw_model)

    # --- checkpoints, the log, evaluation; the start-up lines
    def save(path):
        # Every rank's RNG state is kept so each rank resumes its own stream of FLIP masks.
        rngs, positions = [ckpt_io.rng_state()], [loader.positions]  # stream mode: each rank's workers' places
        if world_size > 1:
            rngs, positions = [None] * world_size, [None] * world_size
            dist.all_gather_object(rngs, ckpt_io.rng_state())
            dist.all_gather_object(positions, loader.positions)
        if rank == 0:
            ckpt_io.save_atomic({"model": raw_model.state_dict(), "config": dataclasses.asdict(raw_model.config),
                                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
                                 "samples_seen": step * args.batch_size, "args": vars(args), "rng": rngs,
                                 "data_state": {**loader.state_dict(), "samples_seen": step * args.batch_size,
                                                "positions": positions}}, path)

    def log(record):  # a JSON line with the wall-clock time and the time since the start (rank 0)
        if rank == 0:
            log_file.write(json.dumps({**record, "time": round(time.time(), 3),
                                       "elapsed_s": round(time.time() - started, 2)}) + "\n")
            log_file.flush()

    def evaluate():  # zero-shot accuracy on the validation set (rank 0 only); logged and returned
        if rank != 0 or args.eval_data in (None, "none"):
            return None
        raw_model.eval()
        result = zeroshot(raw_model, args.eval_data, image_size=raw_model.visual.image_size, normalize=args.normalize,
                          label_set=args.eval_label_set, size=args.eval_size, device=device)
        raw_model.train()
        log({"step": step, "eval": args.eval_data, **result})
        print("zero-shot " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in result.items()))
        return result

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log_file = open(out / "log.jsonl", "a")
        (out / "args.json").write_text(json.dumps(vars(args), indent=1))
        tuning = f" + {args.tune_steps} tuning at {sizes['tune'][0]} px, {sizes['tune'][1]} tokens" \
            if args.tune_steps else ""
        print(f"{args.strategy} | {args.arch} + {raw_model.config.text_arch} text | {main_steps}{tuning} steps x "
              f"{args.batch_size} = {total_steps * args.batch_size} samples | {flops['main']:.2f} GFLOPs/sample "
              f"(train, 1 multiply-add = 2 FLOPs) | {world_size} x {device.type}")
        if args.init:
            print(f"starting from {args.init} ({'the image tower' if args.init_towers == 'image' else 'every weight'}"
                  f"{', image tower locked' if args.lock_image else ''})")
        line, warning = loader.describe(total_steps * args.batch_size)
        print(line)
        if warning:
            print(f"train.py: warning: {warning}", file=sys.stderr)
        if ckpt is not None:
            moved = f"; world size {len(ckpt['rng'])} -> {world_size}: FLIP masks drawn afresh" \
                if len(ckpt["rng"]) != world_size else ""
            print(f"resuming from {path} at step {step}{moved}")
            log({"resumed": str(path), "step": step, "world_size": world_size, "saved_world_size": len(ckpt["rng"])})

    # --- the loop
    bar = tqdm(total=total_steps, initial=step, disable=rank != 0, unit="step", dynamic_ncols=True)
    data_iter, carried = iter(loader), Counter()  # carried: what an earlier stage's loader skipped
    window_start, window_samples, paused = time.perf_counter(), 0, {"eval_s": 0.0, "save_s": 0.0}
    data_s, first_window, warned = 0.0, True, False  # data_s: this window's wait for the loader
    while step < total_steps:
        if step == main_steps and sizes["tune"] != sizes["main"]:  # CLIPA: the tuning stage's sizes from here on
            carried.update(loader.skipped)
            loader = make_loader("tune", step, loader.positions)  # stream mode: reading on from where the main stopped
            carried.subtract(loader.skipped)  # what opening the data found is counted once, not once per stage
            data_iter = iter(loader)
            if resized:  # the interpolated embedding is a new parameter to the optimiser, and to DDP's buckets
                raw_model.resize_image(sizes["tune"][0])
                optimizer.state.pop(raw_model.visual.positional_embedding, None)
                model = wrap(raw_model)
        waited = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in next(data_iter).items()}
        data_s += time.perf_counter() - waited
        lr, step_mask_ratio, stage = schedule(step, args, main_steps, mask_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            terms = train_step(model, raw_model, batch, step_mask_ratio, optimizer, scaler, args)
        except FloatingPointError as e:
            raise FloatingPointError(f"{e} at step {step}; stopping. The last good checkpoint is kept in "
                                     f"{out}") from None
        step += 1
        window_samples += args.batch_size

        if step % args.log_every == 0 or step == total_steps:
            if world_size > 1:  # each rank holds the loss of its own rows: log the global batch's
                values = torch.stack([v.float() for v in terms.values()])
                dist.all_reduce(values)
                terms = dict(zip(terms, values / world_size))
            train_s = time.perf_counter() - window_start - sum(paused.values())  # eval and saves apart
            if data_s > 0.2 * train_s and not (first_window or warned) and rank == 0:  # the first: workers start
                print(f"train.py: warning: steps {step - window_samples // args.batch_size + 1}-{step} waited for "
                      f"data {data_s / train_s:.0%} of the time; the loader is the bottleneck: raise --workers (now "
                      f"{args.workers}) if the machine has idle cores", file=sys.stderr)
                warned = True
            skipped = dict(carried + Counter(loader.skipped))
            # the compute axis: each stage's samples at its own GFLOPs per sample, in PFLOPs
            pflops = (min(step, main_steps) * args.batch_size * flops["main"]
                      + max(0, step - main_steps) * args.batch_size * flops["tune"]) / 1e6
            log({"step": step, "samples_seen": step * args.batch_size, "epoch": loader.epoch_of(step * args.batch_size),
                 "stage": stage, **{k: round(v.item(), 5) for k, v in terms.items()}, "lr": lr,
                 "logit_scale": round(raw_model.logit_scale.exp().item(), 3),
                 "samples_per_s": round(window_samples / train_s, 1), "data_s": round(data_s, 3),
                 "step_s": round(train_s - data_s, 3), **{k: round(v, 2) for k, v in paused.items()},
                 # to 5 significant digits: the compute figures span many orders of magnitude
                 "gflops_per_sample": float(f"{flops[stage]:.5g}"), "total_pflops": float(f"{pflops:.5g}"),
                 "skipped": skipped})
            bar.set_postfix(loss=f"{terms['loss'].item():.3f}", sps=round(window_samples / train_s, 1), lr=f"{lr:.1e}",
                            data=f"{data_s / train_s:.0%}", **({"skipped": sum(skipped.values())} if skipped else {}))
            window_start, window_samples, paused = time.perf_counter(), 0, {"eval_s": 0.0, "save_s": 0.0}
            data_s, first_window = 0.0, False
        bar.update(1)
        if args.eval_every and step % args.eval_every == 0 and step < total_steps:
            began = time.perf_counter()
            evaluate()
            paused["eval_s"] += time.perf_counter() - began
        if step % args.save_every == 0 and step < total_steps:
            began = time.perf_counter()
            save(ckpt_io.step_checkpoint_path(out, step))
            if rank == 0:
                ckpt_io.prune_checkpoints(out, args.keep_checkpoints)
            paused["save_s"] += time.perf_counter() - began

    # --- the end
    save(out / "ckpt.pt")
    if world_size > 1:  # a rank leaving right after an all_gather could abort, gloo freeing its tensors as Python
        dist.barrier()  # exits; this last collective holds none, and rank 0 reaches it only after writing ckpt.pt
    bar.close()
    result = evaluate()
    if rank == 0:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted((carried + Counter(loader.skipped)).items())) \
            or "none"
        print(f"done: {step} steps, {step * args.batch_size} samples in {time.time() - started:.0f} s; skipped "
              f"{skipped}; {out / 'ckpt.pt'}")
        log_file.close()
    return result


if __name__ == "__main__":
    main()
