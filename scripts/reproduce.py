"""The four studies of "Scaling (Down) CLIP" (Li, Xie, Cubuk; arXiv 2404.08197, TMLR 2024), end to end:
data quantity, data quality, architecture and training strategy, each a grid of train.py runs at fixed
samples-seen budgets with one text tower for every run, evaluated with eval.py (zero-shot top-1, linear
probe top-1, retrieval R@1), then tabulated, plotted (error vs samples seen and vs total compute) and
checked against the paper's findings (scripts/findings.py) in a markdown summary.

    python scripts/reproduce.py --quick                  # CPU, 2 cores, < 20 min: micro towers, built-in data
    python scripts/reproduce.py --preset full --jobs 8   # the same studies on a bigger grid, 3 seeds (GPU)
    python scripts/reproduce.py --smoke                  # two tiny runs of the quantity study (the tests)
    python scripts/reproduce.py --data 'shards/{00000..34999}.tar' --eval-data imagenet/val \\
        --retrieval-data coco/dataset_coco.json --probe-train imagenet/train --probe-test imagenet/val \\
        --scores scores.csv --gpus 8 --dry-run           # real scale: print the torchrun/eval.py commands

Two modes build the same train.py/eval.py argument lists. On the built-in synthetic data (the micro
mode) every run executes in-process (train.main, eval.main) in a pool of --jobs single-threaded
processes. On real data (--data not synthetic) the paper's settings are the defaults (ViT-B/32 image
tower, ViT-B text tower, 16 tokens, Adafactor, lr 1e-3, wd 1e-4, batch 16k, pixels in [-1, 1]) and each
run is `torchrun train.py ...` then `python eval.py ...`; that path is written to be read and run on
GPUs, and is not exercised here beyond --dry-run.

Settings are fixed before anything runs (PRESETS, MICRO, PAPER below) and never tuned to make a
result agree. Outputs in --out: runs.csv and runs.json (one row per run and study), summary.md,
<study>.png figures, and runs/<id>/ (each run's console log, train log and eval JSON; its checkpoint
only with --keep-checkpoints or on real data). A run whose result.json exists is not run again, so an
interrupted reproduction resumes, and a second invocation only redraws the outputs.
"""
import argparse
import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import torch  # noqa: E402

import findings  # noqa: E402
import report  # noqa: E402
import runner  # noqa: E402
from report import STUDIES  # noqa: E402
from tinyclip.model import VISION_PRESETS  # noqa: E402

STRATEGIES = ("clip", "slip", "flip", "clip-aug:crop-flip", "clip-aug:randaug", "clip-aug:stacked-randaug")

# --- settings -------------------------------------------------------------------------------------

# Micro ViTs shaped like the paper's Ti/S/B family: same depth, width 1:2:4, head width fixed (32 here,
# 64 in the paper); presets of tinyclip/model.py.
MICRO_VITS = {name: VISION_PRESETS[name] for name in ("vit-ti-micro", "vit-s-micro", "vit-b-micro")}


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
    slip_head: tuple | None = None  # (hidden, out) of a scaled-down SLIP projector; None: SLIP's 4096/256
    eval_size: int = 1000  # synthetic: held-out images for zero-shot and retrieval
    probe_train: int = 1000  # synthetic: training images of the linear probe (about 20 per class)
    label_set: str = "shape-color"  # synthetic zero-shot classes (49)


# The paper's settings (PAPER.md "Setup"): Adafactor, lr 1e-3, wd 1e-4, batch 16k, 16 tokens, ViT-B text
# tower, [-1, 1] pixels, 224 px. Warmup is not stated: LiT's 10k steps. bf16 is our choice for GPUs.
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
                  strategy_multi_sizes=(1024, 3072), strategy_multi_epochs=4),
    "full": Grid(seeds=(0, 1, 2), quantity_sizes=(1024, 3072, 9216, 27648), quantity_epochs=(1, 2, 4, 8, 16),
                 quality_pool=20_480, quality_fractions=(0.2, 0.4, 0.6, 0.8, 1.0), quality_samples=40_960,
                 arch_list=("vit-ti-micro", "vit-s-micro", "vit-b-micro", "rn-test", "convnext-test", "swin-test",
                            "mixer-test"), arch_sizes=(1024, 3072, 9216, 27648), arch_epochs=4,
                 strategy_single_sizes=(3072, 9216, 27648), strategy_single_list=STRATEGIES,
                 strategy_multi_sizes=(1024, 3072, 9216), strategy_multi_epochs=16, scorer_samples=65_536),
    # The paper's grid (PAPER.md): subsets of 25M-400M pairs for 2-32 epochs; quality at one epoch and at
    # 3.4B samples; architectures (epochs not stated: 2 here); strategies at one epoch and at 30 epochs.
    "paper": Grid(seeds=(0,), quantity_sizes=(25_000_000, 50_000_000, 100_000_000, 200_000_000, 400_000_000),
                  quantity_epochs=(2, 4, 8, 16, 32), quality_pool=None, quality_fractions=(0.2, 0.4, 0.6, 0.8, 1.0),
                  quality_samples=3_400_000_000,
                  arch_list=("vit-ti-16", "vit-s-16", "vit-b-32", "vit-b-16", "vit-l-16", "rn50", "convnext-t",
                             "swin-t", "mixer-b-32"), arch_sizes=(25_000_000, 100_000_000, 400_000_000), arch_epochs=2,
                  strategy_single_sizes=(100_000_000, 400_000_000, 3_400_000_000), strategy_single_list=STRATEGIES,
                  strategy_multi_sizes=(10_000_000, 25_000_000, 50_000_000, 100_000_000), strategy_multi_epochs=30),
}
SMOKE = dataclasses.replace(MICRO, batch_size=32, eval_size=100, probe_train=500)


# --- the plan: one Run per (study, setting, seed) ------------------------------------------------------------

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


def plan(grid: Grid, scale: Scale, data: str, studies, pool_size=None):
    """Every Run of the chosen studies; a training shared by two studies appears in both."""
    runs = []
    for seed in grid.seeds:
        add = lambda *args, **kw: runs.append(Run(args[0], args[1], args[2], seed, *args[3:], **kw))
        if "quantity" in studies:
            for size in grid.quantity_sizes:
                for epochs in grid.quantity_epochs:
                    add("quantity", f"{size} pairs", "fixed-epochs", scale.base_arch, "clip", data, size, size * epochs,
                        epochs=epochs)
        if "quality" in studies and pool_size:
            pool = quality_pool_spec(grid, data)
            for fraction in grid.quality_fractions:
                kept = round(fraction * pool_size)
                for regime, samples in (("one-epoch", kept), ("equal-samples", grid.quality_samples)):
                    add("quality", f"top {round(100 * fraction)}%", regime, scale.base_arch, "clip", pool, None, samples,
                        keep_top=fraction, epochs=samples / kept)
        if "architecture" in studies:
            for arch in grid.arch_list:
                for size in grid.arch_sizes:
                    add("architecture", arch, "fixed-epochs", arch, "clip", data, size, size * grid.arch_epochs,
                        epochs=grid.arch_epochs)
        if "strategy" in studies:
            cells = [("one-epoch", s, 1, grid.strategy_single_list) for s in grid.strategy_single_sizes]
            cells += [("multi-epoch", s, grid.strategy_multi_epochs, grid.strategy_multi_list) for s in grid.strategy_multi_sizes]
            for regime, size, epochs, strategies in cells:
                for strategy in strategies:
                    add("strategy", strategy, regime, scale.base_arch, strategy, data, size, size * epochs, epochs=epochs)
    return runs


def quality_pool_spec(grid: Grid, data: str) -> str:
    if data == "synthetic":
        return f"synthetic:noise={grid.quality_noise},size={grid.quality_pool}"
    return data


# --- commands ----------------------------------------------------------------------------------------------

def batch_size(scale: Scale, strategy: str) -> int:
    return scale.batch_size * (2 if strategy == "flip" else 1)  # FLIP: mask half the patches, double the batch


def train_argv(run: Run, scale: Scale, scores: Path = None) -> list:
    """train.py's arguments for a run, without --out: the caller adds a folder named by train_id(argv)."""
    strategy, _, augment = run.strategy.partition(":")
    argv = ["--strategy", strategy, "--arch", run.arch, "--text-arch", scale.text_arch,
            "--image-size", scale.image_size, "--context-length", scale.context_length, "--data", run.data,
            "--samples-seen", run.samples_seen, "--batch-size", batch_size(scale, run.strategy), "--lr", scale.lr,
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
    return [str(a) for a in argv]


def train_id(argv: list) -> str:
    """A readable, unique folder name for a training: the same arguments always give the same id."""
    get = lambda flag: argv[argv.index(flag) + 1] if flag in argv else ""
    digest = hashlib.sha1("\0".join(argv).encode()).hexdigest()[:8]
    parts = [get("--arch"), get("--strategy"), get("--augment"), f"n{get('--dataset-size') or 'all'}",
             f"k{get('--keep-top')}" if "--keep-top" in argv else "", f"ss{get('--samples-seen')}", f"s{get('--seed')}"]
    return "-".join(p for p in parts if p) + "-" + digest


def eval_argvs(ckpt: Path, run_dir: Path, scale: Scale, args) -> list:
    """[(task, eval.py arguments)]: zero-shot, retrieval and linear probe on the synthetic held-out split,
    or on the real sets given (each one optional)."""
    common = ["--checkpoint", str(ckpt), "--precision", scale.precision]
    json_for = lambda task: ["--json", str(run_dir / f"eval-{task}.json")]
    if args.data == "synthetic":
        return [("all", common + ["--task", "zeroshot", "retrieval", "linear-probe", "--data", "synthetic",
                                  "--label-set", scale.label_set, "--size", str(scale.eval_size),
                                  "--train-size", str(scale.probe_train)] + json_for("all"))]
    out = []
    if args.eval_data:
        out.append(("zeroshot", common + ["--task", "zeroshot", "--data", args.eval_data, "--classnames",
                                          args.classnames] + json_for("zeroshot")))
    if args.retrieval_data:
        root = ["--image-root", args.image_root] if args.image_root else []
        out.append(("retrieval", common + ["--task", "retrieval", "--data", args.retrieval_data] + root + json_for("retrieval")))
    if args.probe_train and args.probe_test:
        out.append(("linear-probe", common + ["--task", "linear-probe", "--train-data", args.probe_train,
                                              "--test-data", args.probe_test] + json_for("linear-probe")))
    return out


def gflops(arch: str, strategy: str, scale: Scale) -> float:
    """Training GFLOPs per sample (forward + backward, 1 multiply-add = 2 FLOPs), counted on the meta device;
    augmentation costs no model compute, so every clip-aug variant counts as clip."""
    kind = strategy.partition(":")[0]
    return _gflops(arch, "clip" if kind == "clip-aug" else kind, scale)


@functools.lru_cache(maxsize=None)
def _gflops(arch: str, strategy: str, scale: Scale) -> float:
    from tinyclip.flops import gflops_per_sample
    from tinyclip.model import create_model
    with torch.device("meta"):
        model = create_model(arch, image_size=scale.image_size, context_length=scale.context_length,
                             text_arch=scale.text_arch, embed_dim=scale.embed_dim)
    return gflops_per_sample(model, strategy=strategy, mask_ratio=0.5)["total"]


# --- results -----------------------------------------------------------------------------------------------

def rows_for(runs, ids, results, flops, scale):
    rows = []
    for run, run_id in zip(runs, ids):
        r = results.get(run_id, {})
        g, batch = flops[(run.arch, run.strategy)], batch_size(scale, run.strategy)
        trained = max(1, run.samples_seen // batch) * batch  # what train.py runs: whole steps
        metric = lambda name: None if r.get(name) is None else round(r[name], 5)
        rows.append({"study": run.study, "setting": run.setting, "regime": run.regime, "seed": run.seed,
                     "arch": run.arch, "strategy": run.strategy, "dataset_size": run.dataset_size,
                     "keep_top": run.keep_top, "epochs": round(run.epochs * trained / run.samples_seen, 3),
                     "samples_seen": trained, "batch_size": batch, "gflops_per_sample": round(g, 6),
                     "total_compute_gflops": round(g * trained, 3), "zeroshot_top1": metric("zeroshot"),
                     "linear_probe_top1": metric("probe"), "retrieval_r1": metric("retrieval"),
                     "retrieval_i2t_r1": metric("i2t"), "retrieval_t2i_r1": metric("t2i"), "wall_s": r.get("wall_s"),
                     "run_id": run_id})
    return rows


def filter_precision(grid: Grid, scores: Path) -> list:
    """Synthetic pool only: the share of clean pairs among the top fractions kept (the scorer's quality)."""
    from tinyclip.data import read_scores
    from tinyclip.synthetic import SyntheticPairs
    pool = SyntheticPairs("train", size=grid.quality_pool, noise=grid.quality_noise)
    clean = {m["key"]: m["clean"] for m in map(pool.meta, range(len(pool)))}
    ranked = sorted(read_scores(str(scores)).items(), key=lambda kv: (-kv[1], kv[0]))
    return [(f, sum(clean[k] for k, _ in ranked[:round(f * len(ranked))]) / round(f * len(ranked)))
            for f in grid.quality_fractions]


def settings_table(scale: Scale, grid: Grid) -> list:
    """(name, value) rows describing how every run was trained and evaluated."""
    tower = lambda a: (f"{a} (width {MICRO_VITS[a]['width']}, depth {MICRO_VITS[a]['layers']}, heads "
                       f"{MICRO_VITS[a]['heads']}, patch {MICRO_VITS[a]['patch_size']})" if a in MICRO_VITS else a)
    rows = [("image tower (data and strategy studies)", tower(scale.base_arch)),
            ("image towers (architecture study)", ", ".join(map(tower, grid.arch_list))),
            ("text tower (every run)", scale.text_arch),
            ("image size / context length / embedding", f"{scale.image_size} px / {scale.context_length} tokens / "
                                                        f"{scale.embed_dim or 'preset'}"),
            ("optimizer", f"{scale.optimizer}, lr {scale.lr:g}, weight decay "
                          f"{scale.wd if scale.wd is not None else 'train.py default (0.1)'}, warmup "
                          f"{scale.warmup or 'train.py default (min(2000 steps, 10% of the run))'}, cosine decay"),
            ("batch", f"{scale.batch_size} (FLIP {2 * scale.batch_size}: 50% of patches masked, batch doubled)"),
            ("pixels / precision", f"{scale.normalize} / {scale.precision}"),
            ("SLIP projector", f"{scale.slip_head[0]} hidden, {scale.slip_head[1]} out (SLIP's 4096/256 scaled by our "
                               f"embedding width / its 512)" if scale.slip_head else "SLIP's: 4096 hidden, 256 out"),
            ("GFLOPs per sample", "tinyclip/flops.py on the towers: SLIP counts three image passes (its two extra "
                                  "views) plus the text, not its small projector; FLIP counts half the patches"),
            ("seeds", ", ".join(map(str, grid.seeds)))]
    if scale.base_arch in MICRO_VITS:
        rows += [("evaluation", f"zero-shot top-1 on {scale.eval_size} held-out images, {scale.label_set} label set "
                                f"(49 classes, chance 2%); retrieval R@1 = mean of image->text and text->image over "
                                f"the same images (5 captions each); linear probe: L-BFGS logistic regression on "
                                f"{scale.probe_train} training images, weight decay chosen on a held-out 20%"),
                 ("quality pool and scorer", f"{grid.quality_pool} pairs, noise={grid.quality_noise} (that fraction has "
                                             f"a wrong caption); scorer: {scale.base_arch} CLIP trained on "
                                             f"{grid.scorer_samples:,} samples of a disjoint, cleaner pool "
                                             f"`{grid.scorer_data}` (playing the off-the-shelf CLIP the paper does not "
                                             f"name); pairs ranked by mean image-caption cosine (eval.py --task score)")]
    return rows


NOT_COVERED = (
    "Robustness sets (ImageNet-V2/-A/-R/-Sketch/-Real, ObjectNet) and few-shot accuracy: the built-in data has no "
    "shifted test sets, and few-shot is left to `eval.py --task fewshot`.",
    "The paper's scales: its runs see up to 3.4B samples of WebLI; the micro runs see at most tens of thousands of "
    "synthetic pairs, at 32 px with towers of a few hundred thousand parameters.",
    "FLIP's optional unmasked tuning (`train.py --unmasked-steps`), Adafactor at micro scale (AdamW is used), and "
    "per-architecture learning-rate sweeps for the linear probe (one weight-decay search per model instead).",
)


# --- main ------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to run")
    g.add_argument("--preset", choices=PRESETS, default=None,
                   help="grid: smoke (2 tiny runs), quick (CPU, < 20 min), full (GPU), paper (real data; the default there)")
    g.add_argument("--quick", dest="preset", action="store_const", const="quick", help="same as --preset quick")
    g.add_argument("--smoke", dest="preset", action="store_const", const="smoke", help="same as --preset smoke")
    g.add_argument("--studies", nargs="+", choices=STUDIES, default=None,
                   help="studies to run (default: all; smoke: quantity)")
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    g.add_argument("--out", default=None, help="output folder (default runs/reproduce-<preset>)")
    g.add_argument("--dry-run", action="store_true", help="print the train.py / eval.py commands and stop")
    g = p.add_argument_group("running")
    g.add_argument("--jobs", type=int, default=None, help="runs at once (default: 2 on synthetic data, smoke 1; real 1)")
    g.add_argument("--threads", type=int, default=1, help="torch threads per run (synthetic data)")
    g.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every run's ckpt.pt once evaluated (always kept on real data)")
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
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    synthetic = args.data == "synthetic"
    preset = args.preset or ("quick" if synthetic else "paper")
    grid = PRESETS[preset]
    if args.seeds:
        grid = dataclasses.replace(grid, seeds=tuple(args.seeds))
    scale = (SMOKE if preset == "smoke" else MICRO) if synthetic else PAPER
    studies = args.studies or (("quantity",) if preset == "smoke" else STUDIES)
    out = Path(args.out or ROOT / "runs" / f"reproduce-{preset}")
    jobs = args.jobs or (1 if preset == "smoke" or not synthetic else min(2, os.cpu_count() or 1))
    command = "python scripts/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:])
    notes = list(NOT_COVERED)

    # the scorer of the quality study: trained here on synthetic data, given (--scores/--scorer) on real data
    scorer, scores, pool_size = None, None, None
    if "quality" in studies:
        if synthetic:
            pool_size = grid.quality_pool
            run = Run("scorer", "scorer", "", 0, scale.base_arch, "clip", grid.scorer_data, None, grid.scorer_samples)
            argv_s = train_argv(run, scale)
            scorer_dir = out / "runs" / ("scorer-" + train_id(argv_s))
            scores = scorer_dir / "scores.csv"
            scorer = {"run_dir": str(scorer_dir), "train": argv_s + ["--out", str(scorer_dir), "--resume", "auto"],
                      "evals": [("score", ["--checkpoint", str(scorer_dir / "ckpt.pt"), "--task", "score", "--data",
                                           quality_pool_spec(grid, args.data), "--out", str(scores)])]}
        elif args.scores or args.scorer:
            from tinyclip.sources import open_source
            pool_size = len(open_source(args.data))
            scores = Path(args.scores or out / "scores.csv")
            if not args.scores:
                scorer = {"run_dir": str(out / "runs" / "scorer"), "train": None,
                          "evals": [("score", ["--openai", args.scorer, "--task", "score", "--data", args.data,
                                               "--out", str(scores), "--precision", scale.precision])]}
        else:
            notes.append("The quality study: give --scores (or --scorer weights) to rank the real pairs.")

    runs = plan(grid, scale, args.data, studies, pool_size)
    flops = {(r.arch, r.strategy): gflops(r.arch, r.strategy, scale) for r in runs}
    launcher = [] if synthetic else ["torchrun", f"--nproc_per_node={args.gpus}"]
    ids, pending = [], {}
    for run in runs:
        argv_t = train_argv(run, scale, scores)
        run_id = train_id(argv_t)
        run_dir = out / "runs" / run_id
        ids.append(run_id)
        pending.setdefault(run_id, {"run_dir": str(run_dir), "inprocess": synthetic, "launcher": launcher,
                                    "drop_checkpoint": synthetic and not args.keep_checkpoints,
                                    "quality": run.keep_top is not None,
                                    "cost": run.samples_seen * (2.5 if run.strategy == "slip" else 1.0),
                                    "train": argv_t + ["--out", str(run_dir), "--resume", "auto"],
                                    "evals": eval_argvs(run_dir / "ckpt.pt", run_dir, scale, args)})
    if scorer:
        scorer.update(inprocess=synthetic, launcher=launcher, quality=False, cost=float("inf"))
    total = sum(r.samples_seen for r in runs if r.study)
    print(f"{preset}: studies {', '.join(studies)}; {len(runs)} rows, {len(pending) + bool(scorer)} trainings, "
          f"{sum(int(j['train'][j['train'].index('--samples-seen') + 1]) for j in pending.values()):,} samples "
          f"to train ({total:,} counted per row); {jobs} at once -> {out}")
    if args.dry_run:
        for job in ([scorer] if scorer else []) + list(pending.values()):
            if job["train"]:
                print(" ".join(job["launcher"] + ["train.py"] if job["launcher"] else ["python", "train.py"]) + " " +
                      " ".join(map(_quote, job["train"])))
            for _, argv_e in job["evals"]:
                print("python eval.py " + " ".join(map(_quote, argv_e)))
        return None

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ran = sum(not (Path(job["run_dir"]) / "result.json").exists() for job in list(pending.values()) + [scorer] if job)
    results = runner.run_jobs(scorer, pending, jobs, args.threads, start)
    wall = stored_wall_time(out, time.perf_counter() - start, ran_something=ran > 0)

    rows = rows_for(runs, ids, results, flops, scale)
    points = [p for p in report.aggregate(rows) if p["zeroshot"] is not None or p["probe"] is not None]
    report.write_tables(rows, points, out)
    figures = report.draw_figures(points, out, len(grid.seeds))
    vits = [a for a in grid.arch_list if a.startswith("vit")]
    pick = lambda prefix: next((a for a in grid.arch_list if a.startswith(prefix)), None)
    checks = findings.check_all(points, base_arch=scale.base_arch, vits=vits, resnet=pick("rn"), swin=pick("swin"),
                                mixer=pick("mixer"))
    precision = None
    if synthetic and scores and scores.exists():
        precision = (f"Share of clean pairs among those kept (the pool is {100 * (1 - grid.quality_noise):.0f}% clean): "
                     + ", ".join(f"top {round(100 * f)}%: {100 * p:.1f}%" for f, p in filter_precision(grid, scores)))
    failed = [r for r in results.values() if "error" in r]
    busy = sum(r.get("wall_s") or 0 for r in results.values())
    cpu = sum(r.get("cpu_s") or 0 for r in results.values())
    timing = (f"{len(results)} trainings ({len(failed)} failed), plus the scorer where the quality study ran, took "
              f"{wall / 60:.1f} min of wall time: "
              f"{busy / 60:.1f} min of run time over {jobs} parallel jobs of {args.threads} torch thread(s), "
              f"{cpu / 60:.1f} min of CPU time ({os.cpu_count()} CPUs, torch {torch.__version__}; other work on the "
              f"machine stretches wall time, not CPU time).")
    notes += [f"Failed run {r['run_id']}: {r['error']}" for r in failed]
    intro = ["Li, Xie, Cubuk (2024), \"Scaling (Down) CLIP: A Comprehensive Analysis of Data, Architecture, and "
             "Training Strategies\" (arXiv 2404.08197), reproduced by `scripts/reproduce.py`. Every setting below was "
             "fixed before the runs; nothing was re-run or tuned to make a result agree.", "",
             f"Command: `{command}` (preset `{preset}`). {timing}", "",
             "Compute is training FLOPs per sample (forward + backward, one multiply-add = 2 FLOPs, tinyclip/flops.py) "
             "times samples seen. Verdicts follow one rule fixed in advance (scripts/findings.py): a difference counts "
             "only when it exceeds the standard error of the difference over seeds; otherwise it is *inconclusive*. "
             "Numbers are percentages, mean ± standard deviation over seeds."]
    report.write_summary(out, title=f"Scaling (Down) CLIP at {'micro' if synthetic else 'real'} scale: does it reproduce?",
                         intro=intro, settings=settings_table(scale, grid), checks=checks, points=points,
                         figures=figures, precision=precision, notes=notes, studies=studies)
    print(timing)
    for check in checks:
        print(f"  {check.key:4s} {check.verdict:12s} {check.claim[:90]}")
    print(f"wrote {out / 'summary.md'}, {out / 'runs.csv'}, {len(figures)} figures")
    return {"rows": rows, "points": points, "findings": checks, "out": out}


def stored_wall_time(out: Path, wall: float, ran_something: bool) -> float:
    """Wall time of every invocation that trained something, kept in out/timing.json, so outputs regenerated
    from stored results (nothing left to run) still report how long the runs took."""
    path = out / "timing.json"
    total = json.loads(path.read_text())["wall_s"] if path.exists() else 0.0
    if ran_something or not path.exists():
        total += wall
        path.write_text(json.dumps({"wall_s": round(total, 1)}))
    return total


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}*;,") else arg


if __name__ == "__main__":
    main()
