"""The settings of scripts/reproduce.py: how every run trains and is evaluated (Scale: the paper's, and
the micro scale of a 2-core CPU), and which runs each study makes (Grid, one per preset: smoke, quick,
standard, full, paper), and what one training of a grid is (Run). Fixed before anything runs, never tuned to
make a result agree.
"""
import dataclasses

STRATEGIES = ("clip", "slip", "flip", "clip-aug:crop-flip", "clip-aug:randaug", "clip-aug:stacked-randaug")


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
    # the robustness sets (Q3, A6): synthetic.STYLES' held-out shifts, robust_size images each, on the quantity and
    # architecture studies' runs; the robustness number is their unweighted mean top-1, as the paper's
    robust_styles: tuple = ("sketch", "texture", "corrupt", "hard")
    robust_size: int = 250  # 1000 images in all, as many as the main zero-shot's


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
    quality_one_epoch: tuple | None = None  # the kept fractions run at one epoch (None: every quality fraction)
    long_epochs: tuple = ()  # Q2, H6: more epoch counts, on the smallest quantity subset only (retrieval saturating)
    hypotheses: bool = False  # the runs that test the summary's explanations (hypotheses.hypothesis_runs)
    big_slip_head: tuple = (1024, 64)  # the hypotheses' larger SLIP projector (4x the micro one, each way)
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
                  scorer_samples=256, hypotheses=True),
    # quick: the other towers at the micro ViT-B's FLOPs on two sizes (a third, 9216, would cost 4 of its 20 min;
    # ConvNeXt, in no finding, a minute more: both in standard); one-epoch cells trimmed for the hypotheses' runs
    "quick": Grid(seeds=(0, 1), quantity_sizes=(1024, 3072, 9216), quantity_epochs=(1, 2, 4), long_epochs=(8, 16, 32),
                  quality_pool=5120, quality_fractions=(0.2, 0.4, 0.6, 0.8, 1.0), quality_samples=10_240,
                  arch_list=("vit-ti-micro", "vit-s-micro", "vit-b-micro", "rn-micro", "swin-micro", "mixer-micro"),
                  arch_sizes=(1024, 3072), arch_epochs=2,
                  quality_one_epoch=(0.2, 0.4, 1.0), strategy_single_sizes=(9216,),
                  strategy_single_list=("clip", "slip", "flip", "clip-aug:stacked-randaug"),
                  strategy_multi_sizes=(1024, 3072), strategy_multi_epochs=4, hypotheses=True,
                  beyond_size=9216, beyond_samples=(9216,), loss_batches=(16, 64), lit_init_samples=9216),
    "full": Grid(seeds=(0, 1, 2), quantity_sizes=(1024, 3072, 9216, 27648), quantity_epochs=(1, 2, 4, 8, 16),
                 long_epochs=(32,), quality_pool=20_480, quality_fractions=(0.2, 0.4, 0.6, 0.8, 1.0),
                 quality_samples=40_960,
                 arch_list=("vit-ti-micro", "vit-s-micro", "vit-b-micro", "rn-micro", "convnext-micro", "swin-micro",
                            "mixer-micro"), arch_sizes=(1024, 3072, 9216, 27648), arch_epochs=4, hypotheses=True,
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
                  # beyond the paper: SigLIP's batch sizes below 16k; CLIPA's reduced tokens (it trains
                  # B/16 at 112 px, 1/4 of the tokens; the B/32 here takes 128 px, 16 of 49, since 112 does
                  # not divide into 32 px patches) and 8 tokens; LiT's image tower is given (--lit-init)
                  beyond_size=400_000_000, beyond_samples=(400_000_000, 1_600_000_000),
                  loss_batches=(1024, 4096, 16384), reduced=(128, 8)),
}
# standard: quick's grid with three seeds, ConvNeXt, the architectures on the largest subset too and the cells
# quick trims
PRESETS["standard"] = dataclasses.replace(PRESETS["quick"], seeds=(0, 1, 2), arch_sizes=(1024, 3072, 9216),
                                          arch_list=PRESETS["quick"].arch_list + ("convnext-micro",),
                                          quality_one_epoch=None, strategy_single_sizes=(3072, 9216))


@dataclasses.dataclass
class Run:
    """One training of one study's grid and how it is evaluated (scripts/reproduce.py plans them)."""
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
    slip_head: tuple | None = None  # SLIP's projector (hidden, out); None: the scale's
    label_set: str | None = None  # synthetic zero-shot classes; None: the scale's
    image_size: int | None = None  # None: the scale's
    robust: bool = False  # also evaluated on the robustness sets (Q3, A6)
    scores: str | None = None  # the score file keep_top reads; None: the quality study's scorer's


def towers(grid: Grid, scale: Scale) -> dict:
    """The towers findings' selectors name (findings.roles_for's arguments): the strategy study's, the
    architecture study's ViTs from smallest to largest, and its first ResNet, Swin and Mixer (or None)."""
    named = lambda prefix: [a for a in grid.arch_list if a.startswith(prefix)]
    first = lambda prefix: next(iter(named(prefix)), None)
    return dict(base_arch=scale.base_arch, vits=named("vit"), resnet=first("rn"), swin=first("swin"),
                mixer=first("mixer"))


def quality_pool_spec(grid: Grid, data: str) -> str:
    return f"synthetic:noise={grid.quality_noise},size={grid.quality_pool}" if data == "synthetic" else data
