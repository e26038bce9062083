"""The four studies of "Scaling (Down) CLIP" (Li, Xie, Cubuk; arXiv 2404.08197, TMLR 2024), end to end:
data quantity, data quality, architecture and training strategy, and a fifth beyond the paper (SigLIP's
sigmoid loss, CLIPA's reduced tokens, LiT's locked image tower), each a grid of train.py runs at fixed
samples-seen budgets with one text tower for every run, evaluated with eval.py (zero-shot top-1, linear
probe top-1, retrieval R@1), then tabulated, plotted and checked against the paper's findings
(scripts/findings.py) in a markdown summary (scripts/report.py).

    python scripts/reproduce.py --quick                  # CPU, 2 cores, < 20 min: micro towers, built-in data
    python scripts/reproduce.py --preset full --jobs 8   # the same studies on a bigger grid, 3 seeds (GPU)
    python scripts/reproduce.py --smoke                  # two tiny runs of the quantity study (the tests)
    python scripts/reproduce.py --data 'shards/{00000..34999}.tar' --eval-data imagenet/val \\
        --retrieval-data coco/dataset_coco.json --probe-train imagenet/train --probe-test imagenet/val \\
        --scores scores.csv --gpus 8 --dry-run           # real scale: print the torchrun/eval.py commands

Both modes build the same train.py/eval.py argument lists. On the built-in data (micro) every run executes
in-process (train.main, eval.main) in a pool of --jobs single-threaded processes; on real data, where the
paper's settings (PAPER) are the defaults, as `torchrun train.py ...` then `python eval.py ...` (a path for
GPUs, exercised here only by --dry-run). Settings are fixed before anything runs, never tuned to make a
result agree. --out gets runs.csv, runs.json, summary.md, <study>.png and runs/<id>/ (console log, train
log, eval JSON; the checkpoint only with --keep-checkpoints or on real data); a run whose result.json
exists is not run again, so an interrupted reproduction resumes and a rerun only redraws the outputs.
"""
import argparse
import concurrent.futures as futures
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import torch  # noqa: E402

import eval as evaluate  # noqa: E402
import report  # noqa: E402
import train  # noqa: E402
from report import STUDIES  # noqa: E402
from tinyclip import train_flags  # noqa: E402
from tinyclip.sources import open_source  # noqa: E402

STRATEGIES = ("clip", "slip", "flip", "clip-aug:crop-flip", "clip-aug:randaug", "clip-aug:stacked-randaug")

# --- settings -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scale:
    """How every run trains and is evaluated, whatever the study."""
    base_arch: str  # the image tower of the data and strategy studies (the paper's ViT-B/32)
    text_arch: str  # one text tower for every run, as in the paper
    image_size: int
    context_length: int
    embed_dim: int | None
    batch_size: int  # global; FLIP doubles it, as the paper does
    lr: float
    wd: float | None  # None: train.py's default
    optimizer: str
    warmup: int | None  # None: train.py's default (2000 steps, capped at 10% of the run)
    normalize: str
    precision: str
    workers: int
    save_every: int
    slip_head: tuple | None = None  # (hidden, out) of a scaled-down SLIP projector; None: train.py's 4096/256
    eval_size: int = 1000  # synthetic: held-out images for zero-shot and retrieval
    probe_train: int = 1000  # synthetic: training images of the linear probe (about 20 per class)
    label_set: str = "shape-color"  # synthetic zero-shot classes (49)


# The paper's settings (PAPER.md "Setup"): Adafactor, lr 1e-3, wd 1e-4, batch 16k, 16 tokens, ViT-B text
# tower, [-1, 1] pixels, 224 px. Warmup is not stated: LiT's 10k steps. bf16 is our choice for GPUs.
# train.py's adafactor is big_vision's, whose --wd is decoupled (multiplied by the schedule, not by the lr)
# as the paper's 1e-4 at lr 1e-3 is, so `--optimizer adafactor --wd 0.0001` runs what the paper ran.
PAPER = Scale(base_arch="vit-b-32", text_arch="vit-b", image_size=224, context_length=16, embed_dim=None,
              batch_size=16384, lr=1e-3, wd=1e-4, optimizer="adafactor", warmup=10_000, normalize="pm1",
              precision="bf16", workers=8, save_every=1000)
# Micro scale for a 2-core CPU: the paper's lr, context length and pixel range; train.py's AdamW defaults
# otherwise; 32-px images, the tiny `test` text tower (32 wide, 2 layers), batch 64 (CPU steps are dear);
# SLIP's 4096/256 projector scaled by our 32-wide embedding / its 512: 256 hidden, 16 out (--ssl-mlp-dim,
# --ssl-emb-dim), because a 4096-wide head would cost the CPU 4x more than the towers it trains.
MICRO = Scale(base_arch="vit-s-micro", text_arch="test", image_size=32, context_length=16, embed_dim=32,
              batch_size=64, lr=1e-3, wd=None, optimizer="adamw", warmup=None, normalize="pm1", precision="fp32",
              workers=0, save_every=10**9, slip_head=(256, 16))
SMOKE = dataclasses.replace(MICRO, batch_size=32, eval_size=100, probe_train=500)


@dataclasses.dataclass(frozen=True)
class Grid:
    """Which runs each study makes (dataset sizes in pairs, epochs, kept fractions, towers, strategies).
    Micro sizes are multiples of 128 so that every strategy (FLIP's batch is doubled) sees exactly the
    samples its row says; train.py runs samples_seen // batch steps."""
    seeds: tuple
    quantity_sizes: tuple
    quantity_epochs: tuple
    quality_pool: int | None  # pairs in the noisy pool (None: all of --data)
    quality_fractions: tuple
    quality_samples: int  # the equal-samples-seen budget
    arch_list: tuple
    arch_sizes: tuple
    arch_epochs: int
    strategy_single_sizes: tuple  # one epoch each
    strategy_single_list: tuple
    strategy_multi_sizes: tuple
    strategy_multi_epochs: int
    strategy_multi_list: tuple = STRATEGIES
    quality_noise: float = 0.4  # synthetic pool: fraction of pairs with a wrong caption
    scorer_data: str = "synthetic:noise=0.1,seed=1"  # a disjoint, cleaner pool (an off-the-shelf CLIP's role)
    scorer_samples: int = 16_384
    # the study beyond the paper, on one subset of beyond_size pairs: sigmoid vs softmax loss at each of
    # loss_batches (the last budget); CLIPA's main stage at `reduced` (image size, context length) then
    # tune_fraction of the budget at full size, vs full size at equal FLOPs; LiT's locked image tower (from a
    # CLIP trained on lit_init_samples of the disjoint lit_init_data) vs both towers from scratch
    beyond_size: int = 128
    beyond_samples: tuple = (128,)
    loss_batches: tuple = (16, 32)
    reduced: tuple = (16, 8)
    tune_fraction: float = 0.125
    lit_init_data: str = "synthetic:seed=1"
    lit_init_samples: int = 128


PRESETS = {
    "smoke": Grid(seeds=(0,), quantity_sizes=(128,), quantity_epochs=(1, 2), quality_pool=320,
                  quality_fractions=(0.4, 1.0), quality_samples=320, arch_list=("vit-ti-micro", "vit-s-micro"),
                  arch_sizes=(128,), arch_epochs=1, strategy_single_sizes=(128,), strategy_single_list=("clip", "flip"),
                  strategy_multi_sizes=(128,), strategy_multi_epochs=2, strategy_multi_list=("clip", "slip"),
                  scorer_samples=256),
    "quick": Grid(seeds=(0, 1), quantity_sizes=(1024, 3072, 9216), quantity_epochs=(1, 2, 4), quality_pool=5120,
                  quality_fractions=(0.2, 0.4, 0.6, 0.8, 1.0), quality_samples=10_240,
                  arch_list=("vit-ti-micro", "vit-s-micro", "vit-b-micro", "rn-test"), arch_sizes=(1024, 3072, 9216),
                  arch_epochs=2, strategy_single_sizes=(3072, 9216),
                  strategy_single_list=("clip", "slip", "flip", "clip-aug:stacked-randaug"),
                  strategy_multi_sizes=(1024, 3072), strategy_multi_epochs=4,
                  beyond_size=9216, beyond_samples=(3072, 9216), loss_batches=(16, 32, 64, 128), lit_init_samples=9216),
    "full": Grid(seeds=(0, 1, 2), quantity_sizes=(1024, 3072, 9216, 27648), quantity_epochs=(1, 2, 4, 8, 16),
                 quality_pool=20_480, quality_fractions=(0.2, 0.4, 0.6, 0.8, 1.0), quality_samples=40_960,
                 arch_list=("vit-ti-micro", "vit-s-micro", "vit-b-micro", "rn-test", "convnext-test", "swin-test",
                            "mixer-test"), arch_sizes=(1024, 3072, 9216, 27648), arch_epochs=4,
                 strategy_single_sizes=(3072, 9216, 27648), strategy_single_list=STRATEGIES,
                 strategy_multi_sizes=(1024, 3072, 9216), strategy_multi_epochs=16, scorer_samples=65_536,
                 beyond_size=27648, beyond_samples=(3072, 9216, 27648), loss_batches=(16, 32, 64, 128, 256),
                 lit_init_samples=27648),
    # The paper's grid (PAPER.md): subsets of 25M-400M pairs for 2-32 epochs; quality at one epoch and at
    # 3.4B samples; architectures (epochs not stated: 2 here); strategies at one epoch and at 30 epochs.
    "paper": Grid(seeds=(0,), quantity_sizes=(25_000_000, 50_000_000, 100_000_000, 200_000_000, 400_000_000),
                  quantity_epochs=(2, 4, 8, 16, 32), quality_pool=None, quality_fractions=(0.2, 0.4, 0.6, 0.8, 1.0),
                  quality_samples=3_400_000_000,
                  arch_list=("vit-ti-16", "vit-s-16", "vit-b-32", "vit-b-16", "vit-l-16", "rn50", "convnext-t",
                             "swin-t", "mixer-b-32"), arch_sizes=(25_000_000, 100_000_000, 400_000_000), arch_epochs=2,
                  strategy_single_sizes=(100_000_000, 400_000_000, 3_400_000_000), strategy_single_list=STRATEGIES,
                  strategy_multi_sizes=(10_000_000, 25_000_000, 50_000_000, 100_000_000), strategy_multi_epochs=30,
                  # beyond the paper: SigLIP's batch sizes below 16k, CLIPA's 112 px (1/4 of the tokens) and
                  # 8 tokens; LiT's image tower is given (--lit-init), trained on other data
                  beyond_size=400_000_000, beyond_samples=(400_000_000, 1_600_000_000),
                  loss_batches=(1024, 4096, 16384), reduced=(112, 8)),
}

# --- the plan: one Run per (study, setting, seed) ----------------------------------------------------------

@dataclasses.dataclass
class Run:
    study: str
    setting: str  # the line it belongs to in the study's plots
    regime: str  # one-epoch | multi-epoch | equal-samples | fixed-epochs
    seed: int
    arch: str
    strategy: str  # clip | slip | flip | clip-aug:<augment preset>
    data: str
    dataset_size: int | None
    samples_seen: int
    keep_top: float | None = None
    epochs: float = 1.0
    batch: int | None = None  # global batch; None: the scale's (FLIP's doubled)
    loss: str = "softmax"  # train.py --loss
    reduced: tuple | None = None  # CLIPA: (image size, context length) of the main stage, then tune_steps at full size
    tune_steps: int = 0
    init: str | None = None  # LiT: the image tower comes from this checkpoint, locked


def plan(grid: Grid, scale: Scale, data: str, studies, pool_size=None, lit_init=None):
    """Every Run of the chosen studies; a training shared by two studies appears in both. lit_init: the
    checkpoint of LiT's image tower (None: the LiT runs are left out)."""
    runs = []
    for seed in grid.seeds:
        add = lambda study, setting, regime, *rest, **kw: runs.append(Run(study, setting, regime, seed, *rest, **kw))
        if "quantity" in studies:
            for size in grid.quantity_sizes:
                for epochs in grid.quantity_epochs:
                    add("quantity", f"{size} pairs", "fixed-epochs", scale.base_arch, "clip", data, size,
                        size * epochs, epochs=epochs)
        if "quality" in studies and pool_size:
            for fraction in grid.quality_fractions:
                kept = round(fraction * pool_size)
                for regime, samples in (("one-epoch", kept), ("equal-samples", grid.quality_samples)):
                    add("quality", f"top {round(100 * fraction)}%", regime, scale.base_arch, "clip",
                        quality_pool_spec(grid, data), None, samples, keep_top=fraction, epochs=samples / kept)
        if "architecture" in studies:
            for arch in grid.arch_list:
                for size in grid.arch_sizes:
                    add("architecture", arch, "fixed-epochs", arch, "clip", data, size, size * grid.arch_epochs,
                        epochs=grid.arch_epochs)
        if "strategy" in studies:
            cells = [("one-epoch", s, 1, grid.strategy_single_list) for s in grid.strategy_single_sizes]
            cells += [("multi-epoch", s, grid.strategy_multi_epochs, grid.strategy_multi_list)
                      for s in grid.strategy_multi_sizes]
            for regime, size, epochs, strategies in cells:
                for strategy in strategies:
                    add("strategy", strategy, regime, scale.base_arch, strategy, data, size, size * epochs,
                        epochs=epochs)
        if "beyond" in studies:
            runs += beyond_runs(grid, scale, data, seed, lit_init)
    return runs


def beyond_runs(grid: Grid, scale: Scale, data: str, seed: int, lit_init) -> list:
    """The study beyond the paper, one regime per comparison ("<part>: <what is equal>, <the budget>", so that
    each budget is a cell of its own): SigLIP's loss at each batch size and equal samples; CLIPA's reduced
    tokens + full-size tuning against full size at equal training FLOPs (the main stage's samples fill what the
    tuning stage leaves); LiT's locked image tower against both towers from scratch at equal samples and at
    equal FLOPs (pretraining not counted, as LiT)."""
    size, runs = grid.beyond_size, []
    run = lambda setting, regime, samples, **kw: Run("beyond", setting, regime, seed, scale.base_arch, "clip", data,
                                                     size, samples, epochs=samples / size, **kw)
    for batch in grid.loss_batches:
        runs += [run(loss, f"loss: batch {batch}", grid.beyond_samples[-1], batch=batch, loss=loss)
                 for loss in ("softmax", "sigmoid")]
    whole = lambda samples: max(1, round(samples / scale.batch_size)) * scale.batch_size
    for samples in grid.beyond_samples:
        tokens = f"tokens: equal FLOPs to {samples:,} full-size samples"
        full = run("full size", tokens, samples)
        budget = cost(full, scale)["total_compute_gflops"]
        tune_steps = max(1, round(grid.tune_fraction * samples / scale.batch_size))
        g = stage_gflops(run("", "", scale.batch_size, reduced=grid.reduced, tune_steps=tune_steps), scale)
        main = whole((budget - tune_steps * scale.batch_size * g["tune"]) / g["main"])
        runs += [full, run("reduced + tuning", tokens, main, reduced=grid.reduced,
                           tune_steps=tune_steps)]
        if lit_init:
            locked = stage_gflops(run("", "", scale.batch_size, init=str(lit_init)), scale)["main"]
            for regime, locked_samples in ((f"equal samples, {samples:,}", samples),
                                           (f"equal FLOPs to {samples:,} samples from scratch", whole(budget / locked))):
                runs += [run("from scratch", f"lit: {regime}", samples),
                         run("locked image", f"lit: {regime}", locked_samples, init=str(lit_init))]
    return runs


def quality_pool_spec(grid: Grid, data: str) -> str:
    return f"synthetic:noise={grid.quality_noise},size={grid.quality_pool}" if data == "synthetic" else data


# --- train.py and eval.py arguments ------------------------------------------------------------------------

def batch_size(scale: Scale, run: Run) -> int:
    # FLIP: mask half the patches, double the batch
    return run.batch or scale.batch_size * (2 if run.strategy == "flip" else 1)


def train_argv(run: Run, scale: Scale, scores: Path = None) -> list:
    """train.py's arguments for a run, without --out: the caller adds a folder named by train_id(argv)."""
    strategy, _, augment = run.strategy.partition(":")
    image_size, context_length = run.reduced or (scale.image_size, scale.context_length)
    argv = ["--strategy", strategy, "--arch", run.arch, "--text-arch", scale.text_arch,
            "--image-size", image_size, "--context-length", context_length, "--data", run.data,
            "--samples-seen", run.samples_seen, "--batch-size", batch_size(scale, run), "--lr", scale.lr,
            "--optimizer", scale.optimizer, "--normalize", scale.normalize, "--precision", scale.precision,
            "--seed", run.seed, "--workers", scale.workers, "--eval-data", "none", "--save-every", scale.save_every]
    for flag, value in (("--embed-dim", scale.embed_dim), ("--wd", scale.wd), ("--warmup", scale.warmup),
                        ("--dataset-size", run.dataset_size), ("--augment", augment or None)):
        if value is not None:
            argv += [flag, value]
    if run.keep_top is not None:
        argv += ["--keep-top", run.keep_top, "--scores", scores]
    if strategy == "slip" and scale.slip_head:
        argv += ["--ssl-mlp-dim", scale.slip_head[0], "--ssl-emb-dim", scale.slip_head[1]]
    if run.loss != "softmax":
        argv += ["--loss", run.loss]
    if run.reduced:  # CLIPA: lr / 10 for the tuning stage, as train.py's lr / 100 (FLIP's, for 0.4% of a run at
        # batch 16k) would move a micro model's weights by ~1e-4 in its few steps: no tuning at all
        argv += ["--tune-steps", run.tune_steps, "--tune-image-size", scale.image_size, "--tune-context-length",
                 scale.context_length, "--tune-lr", scale.lr / 10]
    if run.init:
        argv += ["--init", run.init, "--init-towers", "image", "--lock-image"]
    return [str(a) for a in argv]


def train_id(argv: list) -> str:
    """A readable, unique folder name for a training: the same arguments always give the same id."""
    get = lambda flag: argv[argv.index(flag) + 1] if flag in argv else ""
    digest = hashlib.sha1("\0".join(argv).encode()).hexdigest()[:8]
    parts = [get("--arch"), get("--strategy"), get("--augment"), f"n{get('--dataset-size') or 'all'}",
             f"k{get('--keep-top')}" if "--keep-top" in argv else "", f"ss{get('--samples-seen')}", f"s{get('--seed')}"]
    return "-".join(p for p in parts if p) + "-" + digest


def eval_argvs(ckpt: Path, run_dir: Path, scale: Scale, args) -> list:
    """eval.py's argument lists: zero-shot, retrieval and linear probe on the synthetic held-out split in one
    call, or one call per real set given (each optional)."""
    common = ["--checkpoint", str(ckpt), "--precision", scale.precision]
    json_for = lambda task: ["--json", str(run_dir / f"eval-{task}.json")]
    if args.data == "synthetic":
        return [common + ["--task", "zeroshot", "retrieval", "linear-probe", "--data", "synthetic", "--label-set",
                          scale.label_set, "--size", str(scale.eval_size), "--train-size", str(scale.probe_train)]
                + json_for("all")]
    root = ["--image-root", args.image_root] if args.image_root else []
    tasks = [(args.eval_data, "zeroshot", ["--data", args.eval_data, "--classnames", args.classnames]),
             (args.retrieval_data, "retrieval", ["--data", args.retrieval_data] + root),
             (args.probe_train and args.probe_test, "linear-probe", ["--train-data", args.probe_train, "--test-data",
                                                                     args.probe_test])]
    return [common + ["--task", task] + extra + json_for(task) for given, task, extra in tasks if given]


def stage_gflops(run: Run, scale: Scale) -> dict:
    """Training GFLOPs per sample of each stage of the model train.py builds for such a run, {"main", "tune"}
    (train.stage_gflops: SLIP's projector included, every clip-aug variant counts as clip, a locked tower
    its forward only), counted on the meta device."""
    like = dataclasses.replace(run, study="", setting="", regime="", seed=0, data="synthetic", dataset_size=None,
                               samples_seen=batch_size(scale, run), keep_top=None, init=None)
    return _stage_gflops(tuple(train_argv(like, scale)), run.init is not None)


@functools.lru_cache(maxsize=None)
def _stage_gflops(argv: tuple, locked: bool) -> dict:
    args = train_flags.parse_args(list(argv))
    args.lock_image = locked  # without its --init, whose file may not be trained yet: the towers are the flags'
    return train.stage_gflops(args)


def cost(run: Run, scale: Scale) -> dict:
    """What a run trains, as runs.csv states it: its batch, the samples train.py runs (whole steps, the
    tuning stage included), their mean GFLOPs per sample and the total."""
    batch, g = batch_size(scale, run), stage_gflops(run, scale)
    main, tune = max(1, run.samples_seen // batch) * batch, run.tune_steps * batch
    total = main * g["main"] + tune * g["tune"]
    return {"batch_size": batch, "samples_seen": main + tune, "gflops_per_sample": total / (main + tune),
            "total_compute_gflops": total}


# --- running: one job = train.py once, then eval.py's calls, its numbers kept as result.json ---------------

def execute(job: dict) -> dict:
    """Train, then evaluate; returns (and stores as result.json) the run's metrics. In-process (micro):
    train.main and eval.main with the console output in console.log; else `torchrun train.py`, `python eval.py`."""
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    start, cpu_start, result = time.perf_counter(), time.process_time(), {"run_id": run_dir.name}
    steps = [(train.main, job["launcher"] + ["train.py"], job["train"])] if job["train"] else []
    steps += [(evaluate.main, [sys.executable, "eval.py"], argv) for argv in job["evals"]]
    try:
        with open(run_dir / "console.log", "a") as log, redirect_stdout(log), redirect_stderr(log):
            for main_fn, command, argv in steps:
                if job["launcher"]:
                    subprocess.run(command + argv, cwd=ROOT, stdout=log, stderr=log, check=True)
                else:
                    main_fn(argv)
                if main_fn is train.main:
                    result["train_s"] = round(time.perf_counter() - start, 2)
    except (Exception, SystemExit) as error:  # one failed run is reported, not fatal to the others
        return {**result, "error": f"{type(error).__name__}: {error} (see {run_dir / 'console.log'})"}
    merged = {}
    for path in sorted(run_dir.glob("eval-*.json")):
        merged.update(json.loads(path.read_text()))
    first = lambda task: next(iter(merged.get(task, {}).values()), {})
    i2t, t2i = first("retrieval").get("image_to_text_R@1"), first("retrieval").get("text_to_image_R@1")
    # CPU time of this process (in-process jobs): the wall time the run would take on an idle core
    result.update(zeroshot=first("zeroshot").get("top1"), probe=first("linear-probe").get("top1"),
                  retrieval=None if i2t is None or t2i is None else (i2t + t2i) / 2, i2t=i2t, t2i=t2i,
                  wall_s=round(time.perf_counter() - start, 2), cpu_s=round(time.process_time() - cpu_start, 2))
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    if job["drop_checkpoint"]:  # the numbers are kept; a micro checkpoint is ~20 MB, mostly token embeddings
        (run_dir / "ckpt.pt").unlink(missing_ok=True)
    return result


def run_jobs(jobs: dict, parallel: int, threads: int, start: float) -> dict:
    """{id: result} of every job, in a pool of `parallel` processes of `threads` torch threads: those not done
    yet run longest first, and a job waits for the one it comes "after" when that has to run (the quality runs
    for the scorer, the LiT runs for their image tower)."""
    results = {k: json.loads(p.read_text()) for k, j in jobs.items()
               if (p := Path(j["run_dir"]) / "result.json").exists()}
    todo = sorted((k for k in jobs if k not in results), key=lambda k: -jobs[k]["cost"])
    held = [k for k in todo if jobs[k]["after"] in todo]
    with futures.ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        running = {pool.submit(execute, jobs[k]): k for k in todo if k not in held}
        while running:
            for future in futures.wait(running, return_when=futures.FIRST_COMPLETED)[0]:
                key = running.pop(future)
                result = results[key] = future.result()
                metrics = " ".join(f"{m}={result[m]:.3f}" for m in ("zeroshot", "probe", "retrieval")
                                   if result.get(m) is not None)
                done, minutes = len(results) - len(jobs) + len(todo), (time.perf_counter() - start) / 60
                print(f"[{done}/{len(todo)} {minutes:5.1f} min] {result['run_id']} {result.get('error') or metrics} "
                      f"({result.get('wall_s', 0):.0f} s)", flush=True)
                running.update({pool.submit(execute, jobs[k]): k for k in held if jobs[k]["after"] == key})
    return results


# --- main ------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to run")
    g.add_argument("--preset", choices=PRESETS, help="grid: smoke (2 tiny runs), quick (CPU, < 20 min), full (GPU), "
                                                      "paper (real data; the default there)")
    g.add_argument("--quick", dest="preset", action="store_const", const="quick", help="same as --preset quick")
    g.add_argument("--smoke", dest="preset", action="store_const", const="smoke", help="same as --preset smoke")
    g.add_argument("--studies", nargs="+", choices=STUDIES, help="studies to run (default: all; smoke: quantity)")
    g.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    g.add_argument("--out", help="output folder (default runs/reproduce-<preset>)")
    g.add_argument("--dry-run", action="store_true", help="print the train.py / eval.py commands and stop")
    g = p.add_argument_group("running")
    g.add_argument("--jobs", type=int, help="runs at once (default: 2 on synthetic data, smoke 1; real 1)")
    g.add_argument("--threads", type=int, default=1, help="torch threads per run (synthetic data)")
    g.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every run's ckpt.pt once evaluated (real data: always)")
    g.add_argument("--gpus", type=int, default=1, help="real data: torchrun --nproc_per_node")
    g = p.add_argument_group("real data (the paper's settings are the defaults)")
    g.add_argument("--data", default="synthetic", help="training pairs: synthetic, CSV/TSV, tar shards (as train.py)")
    g.add_argument("--eval-data", help="zero-shot ImageFolder (e.g. ImageNet val)")
    g.add_argument("--classnames", default="imagenet", help="zero-shot class names (eval.py --classnames)")
    g.add_argument("--retrieval-data", help="retrieval pairs: COCO-style captions JSON or any pairs source")
    g.add_argument("--image-root", help="images of --retrieval-data (eval.py --image-root)")
    g.add_argument("--probe-train", help="linear probe training ImageFolder")
    g.add_argument("--probe-test", help="linear probe test ImageFolder")
    g.add_argument("--scores", help="quality study: key,score file for --data (eval.py --task score)")
    g.add_argument("--scorer", help="quality study: OpenAI/open_clip weights to write --scores with")
    g.add_argument("--lit-init", help="beyond study: the checkpoint whose image tower LiT locks (trained on other "
                                      "data than --data; synthetic data: trained here)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    synthetic = args.data == "synthetic"
    preset = args.preset or ("quick" if synthetic else "paper")
    grid = dataclasses.replace(PRESETS[preset], **({"seeds": tuple(args.seeds)} if args.seeds else {}))
    scale = (SMOKE if preset == "smoke" else MICRO) if synthetic else PAPER
    studies = args.studies or (("quantity",) if preset == "smoke" else STUDIES)
    out = Path(args.out or ROOT / "runs" / f"reproduce-{preset}")
    parallel = args.jobs or (1 if preset == "smoke" or not synthetic else min(2, os.cpu_count() or 1))
    job = lambda run_dir, train_args, evals, **kw: {  # what execute needs, and how run_jobs orders it
        "run_dir": str(run_dir), "train": train_args, "evals": evals, "drop_checkpoint": False, "after": None,
        "cost": float("inf"), "launcher": [] if synthetic else ["torchrun", f"--nproc_per_node={args.gpus}"], **kw}
    jobs, scores, pool_size, notes = {}, None, None, list(report.NOT_COVERED)

    # the scorer of the quality study: trained here on synthetic data, given (--scores/--scorer) on real data
    if "quality" in studies and synthetic:
        pool_size = grid.quality_pool
        argv_s = train_argv(Run("scorer", "scorer", "", 0, scale.base_arch, "clip", grid.scorer_data, None,
                                grid.scorer_samples), scale)
        scorer_dir = out / "runs" / ("scorer-" + train_id(argv_s))
        scores = scorer_dir / "scores.csv"
        jobs["scorer"] = job(scorer_dir, argv_s + ["--out", str(scorer_dir), "--resume", "auto"],
                             [["--checkpoint", str(scorer_dir / "ckpt.pt"), "--task", "score", "--data",
                               quality_pool_spec(grid, args.data), "--out", str(scores)]])
    elif "quality" in studies and (args.scores or args.scorer):
        try:
            pool_size = len(open_source(args.data))
        except (FileNotFoundError, ValueError) as error:
            sys.exit(f"reproduce.py: error: --data: {error}")
        scores = Path(args.scores or out / "scores.csv")
        if not args.scores:
            jobs["scorer"] = job(out / "runs" / "scorer", None, [["--openai", args.scorer, "--task", "score", "--data",
                                                                 args.data, "--out", str(scores), "--precision",
                                                                 scale.precision]])
    elif "quality" in studies:
        notes.append("The quality study: give --scores (or --scorer weights) to rank the real pairs.")
    # LiT's image tower: a CLIP trained here on a disjoint split of the built-in data, or given
    lit_init = Path(args.lit_init) if args.lit_init else None
    if "beyond" in studies and synthetic and not lit_init:
        argv_l = train_argv(Run("lit-init", "", "", 0, scale.base_arch, "clip", grid.lit_init_data, None,
                                grid.lit_init_samples), scale)
        init_dir = out / "runs" / ("lit-init-" + train_id(argv_l))
        lit_init = init_dir / "ckpt.pt"
        jobs["lit-init"] = job(init_dir, argv_l + ["--out", str(init_dir), "--resume", "auto"],
                               eval_argvs(lit_init, init_dir, scale, args))
    elif "beyond" in studies and not lit_init:
        notes.append("The beyond study's LiT runs: give --lit-init, a checkpoint trained on other data.")

    try:  # every model builds before any run starts
        runs, ids = plan(grid, scale, args.data, studies, pool_size, lit_init), []
        costs = [cost(r, scale) for r in runs]
    except train_flags.ConfigError as error:
        sys.exit(f"reproduce.py: error: --preset {preset} on --data {args.data}: {error}")
    for run in runs:
        argv_t = train_argv(run, scale, scores)
        ids.append(train_id(argv_t))
        run_dir = out / "runs" / ids[-1]
        jobs.setdefault(ids[-1], job(run_dir, argv_t + ["--out", str(run_dir), "--resume", "auto"],
                                     eval_argvs(run_dir / "ckpt.pt", run_dir, scale, args),
                                     after="scorer" if run.keep_top is not None else "lit-init" if run.init else None,
                                     drop_checkpoint=synthetic and not args.keep_checkpoints,
                                     cost=costs[len(ids) - 1]["total_compute_gflops"]))
    trained = sum(int(j["train"][j["train"].index("--samples-seen") + 1]) for k, j in jobs.items()
                  if k not in ("scorer", "lit-init"))
    print(f"{preset}: studies {', '.join(studies)}; {len(runs)} rows, {len(jobs)} trainings, {trained:,} samples to "
          f"train ({sum(r.samples_seen for r in runs):,} counted per row); {parallel} at once -> {out}")
    if args.dry_run:
        quote = lambda arg: f"'{arg}'" if any(c in arg for c in " {}*;,") else arg
        for j in jobs.values():
            if j["train"]:
                print(" ".join(j["launcher"] or ["python"]) + " train.py " + " ".join(map(quote, j["train"])))
            for argv_e in j["evals"]:
                print("python eval.py " + " ".join(map(quote, argv_e)))
        return None

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ran = any(not (Path(j["run_dir"]) / "result.json").exists() for j in jobs.values())
    results = run_jobs(jobs, parallel, args.threads, start)
    # the wall time of every invocation that trained something, so that outputs redrawn from stored results
    # (nothing left to run) still say how long the runs took
    timing_file, wall = out / "timing.json", time.perf_counter() - start
    if timing_file.exists():
        wall = json.loads(timing_file.read_text())["wall_s"] + (wall if ran else 0.0)
    timing_file.write_text(json.dumps({"wall_s": round(wall, 1)}))
    results.pop("scorer", None)
    rows = report.rows_for(runs, ids, results, costs)
    points = [p for p in report.aggregate(rows) if p["zeroshot"] is not None or p["probe"] is not None]
    report.write_tables(rows, points, out)
    figures = report.draw_figures(points, out, len(grid.seeds))
    checks = report.judge(points, grid, scale)
    failed = [r for r in results.values() if "error" in r]
    busy, cpu = (sum(r.get(k) or 0 for r in results.values()) for k in ("wall_s", "cpu_s"))
    timing = (f"{len(results)} trainings ({len(failed)} failed), plus the scorer where the quality study ran, took "
              f"{wall / 60:.1f} min of wall time: {busy / 60:.1f} min of run time over {parallel} parallel jobs of "
              f"{args.threads} torch thread(s), {cpu / 60:.1f} min of CPU time ({os.cpu_count()} CPUs, torch "
              f"{torch.__version__}; other work on the machine stretches wall time, not CPU time).")
    command = "python scripts/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report.write_summary(out, scale, grid, scores, command=f"`{command}` (preset `{preset}`). {timing}",
                         checks=checks, points=points, figures=figures, studies=studies,
                         notes=notes + [f"Failed run {r['run_id']}: {r['error']}" for r in failed])
    print(timing)
    for check in checks:
        print(f"  {check.key:4s} {check.verdict:12s} {check.claim[:90]}")
    print(f"wrote {out / 'summary.md'}, {out / 'runs.csv'}, {len(figures)} figures")
    return {"rows": rows, "points": points, "findings": checks, "out": out}


if __name__ == "__main__":
    main()
