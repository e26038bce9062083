"""train.py's command line: every flag with its help, the strategies and what each changes, open_clip's
names for the same things, the defaults that follow from the data, the checks that find every bad
flag or combination before anything is read or built, and what the files a run reads must match (the
weights of --init, a resumed run's checkpoint).

A bad flag raises ConfigError, which train.py reports as one line, `train.py: error: ...`, exit 2.
"""

import argparse
import os
from pathlib import Path

from tinyclip.augment import AUGMENT_PRESETS
from tinyclip.model import TEXT_TOWERS, list_models, read_weights
from tinyclip.stream import is_url
from tinyclip.synthetic import LABEL_SETS

DESCRIPTION = """Train CLIP with one of the four strategies of "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024).

    python train.py                                       # CLIP, vit-s, the built-in synthetic data
    torchrun --nproc_per_node 8 train.py --strategy flip --arch vit-s --data 'shards/{00000..00999}.tar'
"""
# The built-in data (tinyclip/synthetic.py) is 64 px scenes with short captions; on it, these defaults
# replace the preset's (real data keeps the preset's image size, 77 tokens and OpenAI's text pairing).
SYNTHETIC_DEFAULTS = dict(image_size=64, context_length=32, text_arch="small", eval_data="synthetic")
# What a resumed run may change: how it runs and reports, not what it computes. (--accum-steps,
# --grad-checkpointing and --compile keep the mathematics; their floating-point rounding may differ.)
FREE_ON_RESUME = {"workers", "data_retries", "threads", "log_every", "eval_every", "eval_data", "eval_label_set",
                  "eval_size", "save_every", "keep_checkpoints", "out", "resume", "accum_steps", "grad_checkpointing",
                  "compile", "local_loss"}


class ConfigError(ValueError):
    """A bad flag, combination or run folder: reported as one line, before any work is done."""


def flag(name: str) -> str:
    """The flag a user types for an argument's name: tune_image_size -> --tune-image-size."""
    return "--" + name.replace("_", "-")


# -----------------------------------------------------------------------------
# command line


# open_clip's flags for things tinyclip does another way: refused with one line naming tinyclip's
# (the ones it shares are accepted with open_clip's meaning: see parse_args and README)
OPEN_CLIP_FLAGS = {
    "--val-data": "tinyclip has no validation-loss set: zero-shot runs on --eval-data (an ImageFolder), "
                  "retrieval with eval.py --task retrieval",
    "--zeroshot-frequency": "use --eval-every N, which counts steps, not epochs",
    "--imagenet-val": "use --eval-data DIR (an ImageFolder) for zero-shot during training",
    "--pretrained": "use --init PATH (a tinyclip checkpoint or OpenAI/open_clip weights; nothing is downloaded)",
    "--siglip": "use --loss sigmoid",
    "--model": "use --arch (an image tower preset) and --text-arch",
    "--dataset-type": "tinyclip reads the format from --data itself (CSV/TSV, tar shards, a folder)",
    "--save-frequency": "use --save-every N, which counts steps",
    "--logs": "use --out DIR", "--name": "use --out DIR",
}


# Each strategy's own flags: given with another strategy they would be silently ignored, so they are
# refused; left unset they take these defaults (FLIP's mask ratio, SLIP's loss weight and head).
STRATEGY_FLAGS = {"flip": dict(mask_ratio=0.5), "slip": dict(ssl_scale=1.0, ssl_mlp_dim=4096, ssl_emb_dim=256,
                                                            ssl_norm="batch")}


def parse_args(argv=None):
    """The flags, with the defaults that need no data filled in (train() fills those that do: the
    budget from --epochs, the warmup). open_clip's names for the same things are accepted."""
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to train")
    g.add_argument("--strategy", default="clip", help=f"training strategy: {', '.join(STRATEGIES)}")
    g.add_argument("--arch", default="vit-s", help="model preset (see tinyclip.list_models())")
    g.add_argument("--text-arch",
                   help=f"text tower: {', '.join(TEXT_TOWERS)} (vit-b is the paper's); default: the preset's, "
                        f"or {SYNTHETIC_DEFAULTS['text_arch']!r} on the built-in data")
    g.add_argument("--image-size", type=int, help="input resolution (default: the preset's, or "
                   f"{SYNTHETIC_DEFAULTS['image_size']} on the built-in data)")
    g.add_argument("--context-length", type=int, help="text tokens incl. SOT/EOT (default 77, or "
                   f"{SYNTHETIC_DEFAULTS['context_length']} on the built-in data; the paper uses 16)")
    g.add_argument("--embed-dim", type=int, help="joint embedding width (default: the preset's)")
    g.add_argument("--mask-ratio", type=float, help="flip: fraction of image patches dropped (0.5)")
    g.add_argument("--loss", default="softmax", choices=("softmax", "sigmoid"),
                   help="softmax: CLIP's InfoNCE; sigmoid: SigLIP's (Zhai et al. 2023), a learned bias (init -10) "
                        "and temperature (init 10); for slip, its CLIP term")
    g.add_argument("--label-smoothing", type=float, default=0.0,
                   help="label smoothing of the softmax loss (Fini et al. 2023 use 0.1; default 0)")

    g = p.add_argument_group("a tuning stage after the main budget (FLIP's unmasked tuning, CLIPA's full-size tuning)")
    g.add_argument("--tune-steps", "--unmasked-steps", type=int, default=0,
                   help="N steps after the main budget, unmasked and at the --tune-* sizes, with their own warmup "
                        "(20%% of them) and cosine (FLIP: about 1%% of the masked run's samples)")
    g.add_argument("--tune-lr", "--unmasked-lr", type=float,
                   help="peak lr of the tuning stage (default: --lr / 100, FLIP's ratio 4e-8 / 4e-6)")
    g.add_argument("--tune-image-size", type=int,
                   help="image size of the tuning stage (CLIPA, Li et al. 2023: train the main budget at a lower "
                        "--image-size); the ViT's positional embedding is interpolated (default: --image-size)")
    g.add_argument("--tune-context-length", type=int,
                   help="text tokens of the tuning stage (CLIPA: a shorter --context-length before it); the text "
                        "tower is built at the longer (default: --context-length)")

    g = p.add_argument_group("starting weights (LiT, Zhai et al. 2022)")
    g.add_argument("--init", help="start from these weights: a tinyclip checkpoint or OpenAI/open_clip weights "
                                  "(open_clip's --pretrained); they must fit --arch and the other model flags")
    g.add_argument("--init-towers", choices=("all", "image"),
                   help="what --init loads: every weight (all, the default) or the image tower only, the text tower "
                        "and temperature starting fresh (LiT's 'Lu')")
    g.add_argument("--lock-image", action="store_true",
                   help="freeze the image tower --init loaded: no gradient, no optimiser state, norms in eval mode, "
                        "no image backward (LiT; open_clip's flag)")
    g.add_argument("--ssl-scale", type=float, help="slip: weight of the SimCLR loss (SLIP's 1.0)")
    g.add_argument("--ssl-mlp-dim", type=int, help="slip: hidden width of the SimCLR head (SLIP's 4096)")
    g.add_argument("--ssl-emb-dim", type=int, help="slip: output width of the SimCLR head (SLIP's 256)")
    g.add_argument("--ssl-norm", choices=("batch", "layer"),
                   help="slip: norm in the SimCLR head; 'batch' (the default) is SLIP's, with statistics over the "
                        "global batch under DDP; 'layer' is batch-free for small per-GPU batches")
    g.add_argument("--augment", help=f"clip-aug: augmentation preset ({', '.join(AUGMENT_PRESETS)}; default "
                   "stacked-randaug)")
    g.add_argument("--normalize", default="clip", choices=("clip", "pm1"),
                   help="pixel normalisation: CLIP's mean/std, or [-1, 1] as in the paper")

    g = p.add_argument_group("data and budget")
    g.add_argument("--data", "--train-data", default="synthetic",
                   help="synthetic (built in), pairs.csv/.tsv, or tar shards like 'shards/{00000..00099}.tar'")
    g.add_argument("--samples-seen", type=int, help="total training samples: the paper's compute axis (default 30,000)")
    g.add_argument("--epochs", type=float, help="the budget in passes over the data (open_clip's)")
    g.add_argument("--dataset-size", type=int, help="train on a fixed seeded subset of N pairs")
    g.add_argument("--keep-top", type=float,
                   help="keep the top fraction of pairs by --scores (the paper's quality axis)")
    g.add_argument("--scores", help="key,score file (eval.py --task score) for --keep-top")
    g.add_argument("--csv-img-key", default="filepath", help="CSV/TSV column of image paths")
    g.add_argument("--csv-caption-key", default="title", help="CSV/TSV column of captions")
    g.add_argument("--csv-separator", help="CSV/TSV separator (default: from the extension and header)")
    g.add_argument("--workers", type=int, default=2, help="data loader processes per rank")
    g.add_argument("--data-mode", choices=("index", "stream"),
                   help="tar shards: index (random reads through a header index; exact epochs, subsets, resume at any "
                        "world size) or stream (one pass per shard; pipe:/http(s) URLs; exact resume at the same world "
                        "size and --workers); default: stream for URLs, index for local paths")
    g.add_argument("--shuffle-buffer", type=int, default=1000, help="stream: samples in each worker's shuffle buffer")
    g.add_argument("--dataset-resampled", action="store_true",
                   help="stream: draw shards with replacement, forever (open_clip's); the budget is --samples-seen")
    g.add_argument("--train-num-samples", type=int,
                   help="stream: the dataset's size in pairs, for --epochs and the epoch figure (open_clip's)")
    g.add_argument("--data-retries", type=int, default=2,
                   help="stream: times a failed shard read is tried again before the rest of the shard is skipped")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=128,
                   help="GLOBAL batch, as the paper counts it, split across ranks (open_clip's is per GPU)")
    g.add_argument("--accum-steps", "--accum-freq", type=int, default=1,
                   help="process the batch as K micro-batches with the exact full-batch loss (gradient cache)")
    g.add_argument("--optimizer", default="adamw", choices=("adamw", "adafactor"),
                   help="adamw, or adafactor: the paper's, big_vision's variant (tinyclip/optim.py)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    g.add_argument("--wd", type=float,
                   help="weight decay of 2-D+ weights: AdamW's (x lr; default 0.1), or for adafactor big_vision's "
                        "(x the schedule only, not the lr; default 1e-4, the paper's)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 / Adafactor momentum")
    g.add_argument("--beta2", type=float,
                   help="AdamW beta2 (default 0.98) / Adafactor's cap on its beta2 (default 0.999, the paper's)")
    g.add_argument("--eps", type=float, default=1e-6, help="AdamW epsilon")
    g.add_argument("--warmup", type=int,
                   help="linear warmup steps, then cosine decay (default: 2000, or 10%% of a shorter run)")
    g.add_argument("--grad-clip", "--grad-clip-norm", type=float, default=1.0,
                   help="clip the global gradient norm (0: off)")
    g.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "amp", "amp_bf16"),
                   help="autocast dtype; fp16 adds a gradient scaler (open_clip's amp = fp16, amp_bf16 = bf16)")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in backward")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--local-loss", "--gather-with-grad", action="store_true",
                   help="accepted for open_clip users: the loss is always local with a gathered, graded batch")
    g.add_argument("--seed", type=int, default=0, help="seeds the model init, data order and augmentations")
    g.add_argument("--threads", type=int,
                   help="torch threads per process (default: torch's, one per core; under torchrun on CPUs the "
                        "node's cores shared among its processes, since torchrun sets OMP_NUM_THREADS=1)")

    g = p.add_argument_group("output")
    g.add_argument("--out", default="runs/latest", help="run folder: log.jsonl, checkpoints, ckpt.pt")
    g.add_argument("--resume", help="'auto' (open_clip: 'latest'): continue from the newest valid checkpoint in --out")
    g.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps")
    g.add_argument("--keep-checkpoints", type=int, default=2, help="step checkpoints to keep (0: all)")
    g.add_argument("--log-every", type=int, default=10, help="log a JSON line every N steps")
    g.add_argument("--eval-every", type=int, default=0,
                   help="zero-shot on the validation set every N steps (0: only at the end)")
    g.add_argument("--eval-data", help="zero-shot set: ImageFolder dir, or 'none' (default: the synthetic held-out "
                   "split on synthetic data)")
    g.add_argument("--eval-label-set", default="shape-color", help="label set of the synthetic held-out split")
    g.add_argument("--eval-size", type=int, default=1000, help="images of the synthetic held-out split to score")
    for theirs in OPEN_CLIP_FLAGS:
        p.add_argument(theirs, nargs="?", const="", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    for theirs, advice in OPEN_CLIP_FLAGS.items():
        if getattr(args, theirs.lstrip("-").replace("-", "_")) is not None:
            raise ConfigError(f"{theirs} is open_clip's; {advice}")
    defaults = dict(SYNTHETIC_DEFAULTS) if args.data.split(":")[0] == "synthetic" else {}
    for strategy, flags in STRATEGY_FLAGS.items():
        for name in flags:
            if getattr(args, name) is not None and args.strategy != strategy:
                raise ConfigError(f"{flag(name)} is {strategy}'s; --strategy is {args.strategy}")
        defaults.update(flags)
    adafactor = args.optimizer == "adafactor"
    defaults.update(wd=1e-4 if adafactor else 0.1, beta2=0.999 if adafactor else 0.98, tune_lr=args.lr / 100)
    for name, value in defaults.items():  # each flag left unset takes its default
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.context_length = args.context_length or 77  # OpenAI's, every preset's
    args.precision = {"amp": "fp16", "amp_bf16": "bf16"}.get(args.precision, args.precision)
    args.resume = {"latest": "auto"}.get(args.resume, args.resume)
    args.csv_separator = {"\\t": "\t"}.get(args.csv_separator, args.csv_separator)  # a shell's literal \t: a tab
    return args


def resolve_budget(args, pairs: int) -> int:
    """The defaults that depend on the data: --epochs as samples seen, then the warmup; returns the main
    budget's steps."""
    if args.epochs is not None:
        if pairs is None:
            raise ConfigError("--epochs needs the dataset's size, which stream mode does not know: give "
                              "--train-num-samples N, or the budget as --samples-seen")
        args.samples_seen = max(1, round(args.epochs * pairs))
        if args.samples_seen < args.batch_size:  # as check_args refuses for --samples-seen
            raise ConfigError(f"--epochs {args.epochs} of {pairs} pairs is {args.samples_seen} samples, less than "
                              f"one --batch-size {args.batch_size}")
    elif args.samples_seen is None:
        args.samples_seen = 30_000
    main_steps = max(1, args.samples_seen // args.batch_size)
    if args.warmup is None:
        args.warmup = min(2000, main_steps // 10)
    return main_steps


LEAST = {0: "must not be negative", 1: "must be at least 1", 2: "must hold at least the start and end tokens (2)"}


def check_at_least(args, least: int, names) -> None:
    """Each of the flags `names` that is set is at least `least` (LEAST says what that bound means)."""
    for name in names:
        if (value := getattr(args, name)) is not None and value < least:
            raise ConfigError(f"{flag(name)} {LEAST[least]}, got {value}")


def check_args(args, world_size: int):
    """Every flag's range and combination, before anything is read or built."""
    check_at_least(args, 1, ("batch_size", "accum_steps", "samples_seen", "log_every", "save_every", "eval_size",
                             "dataset_size", "image_size", "embed_dim", "threads", "tune_image_size"))
    check_at_least(args, 0, ("lr", "wd", "warmup", "grad_clip", "workers", "tune_steps", "tune_lr",
                             "keep_checkpoints", "eval_every", "epochs"))
    for what, value, valid in (("strategy", args.strategy, STRATEGIES), ("arch", args.arch, list_models()),
                               ("--text-arch", args.text_arch, TEXT_TOWERS)):
        if value is not None and value not in valid:
            raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    check_at_least(args, 2, ("context_length", "tune_context_length"))
    if args.augment is not None and args.strategy != "clip-aug":
        raise ConfigError(f"--augment applies to --strategy clip-aug, not {args.strategy}")
    if args.augment is not None and args.augment not in AUGMENT_PRESETS:
        raise ConfigError(f"unknown augment {args.augment!r}; valid: {', '.join(AUGMENT_PRESETS)}")
    if args.strategy == "flip" and not 0.0 < args.mask_ratio < 1.0:
        raise ConfigError(f"--mask-ratio must be in (0, 1), got {args.mask_ratio}")
    for name in ("tune_image_size", "tune_context_length"):
        if getattr(args, name) is not None and not args.tune_steps:
            raise ConfigError(f"{flag(name)} sets the tuning stage's size; give --tune-steps N too")
    if not 0 <= args.label_smoothing < 1:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.label_smoothing and args.loss == "sigmoid":
        raise ConfigError("--label-smoothing applies to the softmax loss; --loss is sigmoid")
    if (args.lock_image or args.init_towers) and not args.init:
        raise ConfigError(f"{'--lock-image' if args.lock_image else '--init-towers'} needs --init PATH: the image "
                          "tower's starting weights")
    if args.lock_image and args.strategy == "slip":
        raise ConfigError("--lock-image freezes the image tower that SLIP's SimCLR term trains; use another --strategy")
    if args.init and not os.path.isfile(args.init):
        raise ConfigError(f"--init {args.init}: no such file")
    if (args.keep_top is None) != (args.scores is None):
        raise ConfigError("--keep-top and --scores go together: keep the top fraction of pairs by that score file")
    if args.keep_top is not None and not 0 < args.keep_top <= 1:
        raise ConfigError(f"--keep-top is a fraction in (0, 1], got {args.keep_top}")
    if args.epochs is not None and args.samples_seen is not None:
        raise ConfigError("--epochs and --samples-seen both set the budget: give one")
    if args.samples_seen is not None and args.samples_seen < args.batch_size:
        raise ConfigError(f"--samples-seen {args.samples_seen} is less than one --batch-size {args.batch_size}")
    if args.batch_size % world_size:
        raise ConfigError(f"--batch-size {args.batch_size} (global) does not split over {world_size} ranks")
    local_batch = args.batch_size // world_size
    if local_batch % args.accum_steps:
        raise ConfigError(f"the per-rank batch {local_batch} (= {args.batch_size} / {world_size} ranks) does not "
                          f"split into --accum-steps {args.accum_steps} equal micro-batches")
    stream = args.data_mode == "stream" or (args.data_mode is None and is_url(args.data))
    if stream and not (".tar" in args.data or os.path.isdir(args.data)):
        raise ConfigError(f"--data-mode stream reads tar shards; --data {args.data} names none")
    for name, value in (("--dataset-size", args.dataset_size), ("--keep-top", args.keep_top)):
        if stream and value is not None:
            raise ConfigError(f"{name} selects exact pairs through the index; use --data-mode index (local shards)")
    for name, given in (("--dataset-resampled", args.dataset_resampled), ("--train-num-samples",
                        args.train_num_samples is not None), ("--shuffle-buffer", args.shuffle_buffer != 1000)):
        if given and not stream:
            raise ConfigError(f"{name} applies to --data-mode stream; in index mode tinyclip counts the pairs itself "
                              "and shuffles all of them (--dataset-size N trains on a seeded subset)")
    check_at_least(args, 1, ("shuffle_buffer", "train_num_samples"))
    check_at_least(args, 0, ("data_retries",))
    if args.resume not in (None, "auto"):
        raise ConfigError(f"--resume takes 'auto' (the newest checkpoint in --out), got {args.resume!r}")
    if args.eval_data not in (None, "none", "synthetic") and not os.path.isdir(args.eval_data):
        raise ConfigError(f"--eval-data {args.eval_data}: no such folder (an ImageFolder: root/class/image.jpg)")
    if args.eval_data == "synthetic" and args.eval_label_set not in LABEL_SETS:
        raise ConfigError(f"unknown --eval-label-set {args.eval_label_set!r}; valid: {', '.join(LABEL_SETS)}")


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
# what the files a run reads must match


def read_init(args, shapes) -> dict:
    """The starting weights of --init, {"weights", "quick_gelu"}, checked against the model the flags describe
    (`shapes`, on the meta device): every weight of it, or of its image tower for --init-towers image, must be
    there with its shape; the first that is not is named."""
    try:
        weights, quick_gelu = read_weights(args.init)
    except Exception as e:  # a truncated zip, a pickle with code in it, not a torch file at all...
        raise ConfigError(f"--init {args.init}: not a checkpoint or weights file ({type(e).__name__})") from None
    wanted = {k: v.shape for k, v in shapes.state_dict().items() if args.init_towers != "image" or
              k.startswith("visual.")}
    weights = {k: v for k, v in weights.items() if k in wanted or args.init_towers != "image"}
    for key in sorted(wanted.keys() | weights.keys()):
        if key not in weights or key not in wanted or weights[key].shape != wanted[key]:
            found = tuple(weights[key].shape) if key in weights else "nothing"
            needed = tuple(wanted[key]) if key in wanted else "nothing (no such weight)"
            raise ConfigError(f"--init {args.init} does not fit --arch {args.arch} and the model flags: {key} is "
                              f"{found} there, the model needs {needed}")
    return {"weights": weights, "quick_gelu": quick_gelu}


def check_resumable(ckpt: dict, args, path, data_state: dict):
    """A checkpoint of another run is refused, naming the first setting that differs and both values
    (a flag the user gave before one whose default follows from it, such as --lr before --tune-lr);
    so is one whose data the loader's `data_state` no longer matches: other pairs, or in stream mode
    other (rank, worker) slots, which its saved positions belong to."""
    derived = {"warmup", "tune_lr", "wd", "beta2", "samples_seen", *SYNTHETIC_DEFAULTS}
    defaults = vars(parse_args(["--data", args.data]))  # a flag added since the run was saved: it ran the default
    for name, value in sorted(vars(args).items(), key=lambda item: item[0] in derived):
        saved = ckpt["args"].get(name, defaults.get(name, "(not set)"))
        if name not in FREE_ON_RESUME and saved != value:
            raise ConfigError(f"{path} is from a run with {flag(name)} {saved}, not {value}; "
                              "resume with the same setting, or use another --out")
    saved, out = ckpt["data_state"], Path(args.out)
    if (saved["num_samples"], saved["selection"]) != (data_state["num_samples"], data_state["selection"]):
        raise ConfigError(f"--data {args.data} now selects {data_state['num_samples']} pairs, not the "
                          f"{saved['num_samples']} the run in {out} trained on; use another --out")
    if saved.get("slots") != data_state["slots"]:
        raise ConfigError(f"the run in {out} streamed its data over {saved['slots'][0]} rank(s) x "
                          f"{saved['slots'][1]} --workers; stream mode resumes exactly only on the same")
