"""The explanations scripts/reproduce.py's summary offers where a finding of "Scaling (Down) CLIP" did not
reproduce at micro scale, each with the runs that could refute it, both fixed before anything runs: HYPOTHESES,
one row per explanation with the findings it would explain and its test (scripts/findings.py's rules and rule),
and hypothesis_runs, the runs of the `hypotheses` study. A test that agrees confirms its hypothesis, one that
disagrees refutes it; the findings' caveats quote the result (report.markdown_table).
"""
from dataclasses import dataclass, field, replace

from findings import AGREES, DISAGREES, NOT_TESTED, compare, judged, saturation
from settings import Grid, Run, Scale, quality_pool_spec, towers

# --- the runs ---------------------------------------------------------------------------------------

def hypothesis_runs(grid: Grid, scale: Scale, data: str, seed: int, pool_size=None, strong_scores=None) -> list:
    """The runs that test the summary's explanations of a disagreement (HYPOTHESES below), one regime per
    hypothesis ("<key>: <what>"); each cell holds the runs it compares with, which other studies share and are
    trained once. In the strategy study's multi-epoch cells: H1, colour-changing augmentation with and without
    its colour ops, and on captions that name no colour (zero-shot on the shape label set); H2, FLIP at CLIP's
    batch (as many optimizer steps); H4, SLIP with a larger projector; H10, crop-flip without its crop. H5, the
    quality filter ranked by a stronger scorer (the quality study's, trained on 4x the samples), in the quality
    study's regimes; H7, the augmentations at 4x the epochs on the smallest subset; H8, the ResNet and the
    largest ViT at twice the image size. H6 and H9 read the quantity and quality studies' runs."""
    epochs, sizes, runs = grid.strategy_multi_epochs, grid.strategy_multi_sizes, []
    run = lambda regime, setting, size, strategy, times=1, **kw: Run(
        "hypotheses", setting, regime, seed, scale.base_arch, strategy, kw.pop("data", data), size,
        size * epochs * times, epochs=epochs * times, **kw)
    aug, no_color = "clip-aug:stacked-randaug", "clip-aug:stacked-randaug-no-color"
    runs += [run("H1: colour ops", s, sizes[-1], s) for s in ("clip", aug, no_color)]
    if data == "synthetic":
        runs += [run("H1: no colour words", s, sizes[-1], s, data="synthetic:color_words=0", label_set="shape")
                 for s in ("clip", aug)]
    runs += [run("H2: FLIP at CLIP's batch", s, size, s.split(",")[0], **kw) for size in sizes for s, kw in (
        ("clip", {}), ("flip, doubled batch", {}), ("flip, CLIP's batch", {"batch": scale.batch_size}))]
    runs += [run("H4: SLIP's projector", s, sizes[-1], s.split(",")[0], **kw) for s, kw in (
        ("clip", {}), ("slip", {}), ("slip, larger projector", {"slip_head": grid.big_slip_head}))]
    runs += [run("H10: no crop", s, sizes[-1], s) for s in ("clip-aug:crop-flip", "clip-aug:flip")]
    runs += [run("H7: 4x the epochs", s, sizes[0], s, times=4) for s in ("clip", "clip-aug:crop-flip", no_color)]
    tower = towers(grid, scale)
    if tower["resnet"] and tower["vits"]:
        runs += [Run("hypotheses", arch, "H8: twice the image size", seed, arch, "clip", data, grid.arch_sizes[0],
                     grid.arch_sizes[0] * grid.arch_epochs, epochs=grid.arch_epochs, image_size=2 * scale.image_size)
                 for arch in (tower["resnet"], tower["vits"][-1])]
    if strong_scores and pool_size:
        def kept(regime, fraction, scores=None):
            samples = round(fraction * pool_size) if regime.endswith("one-epoch") else grid.quality_samples
            return Run("hypotheses", f"top {round(100 * fraction)}%" + ", stronger scorer" * bool(scores), regime, seed,
                       scale.base_arch, "clip", quality_pool_spec(grid, data), None, samples, keep_top=fraction,
                       epochs=samples / round(fraction * pool_size), scores=scores and str(scores))
        one, equal = "H5: stronger scorer, one-epoch", "H5: stronger scorer, equal-samples"
        runs += [kept(one, 0.4, strong_scores), kept(one, 1.0)]  # top 100% keeps every pair: the quality study's
        runs += [kept(equal, fraction, strong_scores) for fraction in (0.2, 0.8)]
    return runs


# --- the tests --------------------------------------------------------------------------------------

CONFIRMED, REFUTED = "confirmed", "refuted"
AS_HYPOTHESIS = {AGREES: CONFIRMED, DISAGREES: REFUTED}  # what a test's verdict says of the hypothesis


@dataclass(frozen=True)
class Hypothesis:
    """An explanation of a finding that did not reproduce, with the test that could refute it (both fixed before
    the runs); its verdict is the test's: confirmed, refuted, inconclusive or partly."""
    key: str
    explains: tuple  # the findings' keys
    claim: str
    test: str  # what would confirm it, in words
    study: str  # where its runs are
    rules: list = field(default_factory=list)
    verdict: str = NOT_TESTED
    evidence: list = field(default_factory=list)


HYPOTHESES = (
    Hypothesis("H1", ("S4", "S5", "S6"), "Colour-changing augmentation hurts because every caption and half of each "
               "zero-shot class name state the colour, so a recoloured image contradicts its text.", "Multi-epoch, "
               "largest subset: Stacked RandAugment without its colour ops (`stacked-randaug-no-color`) beats it with "
               "them, and on captions that never name a colour (`synthetic:color_words=0`, zero-shot on the 7 shapes) "
               "Stacked RandAugment is not below no augmentation (zero-shot top-1).", "hypotheses",
               [compare("clip-aug:stacked-randaug-no-color", "clip-aug:stacked-randaug", cells="H1: colour ops"),
                compare("clip-aug:stacked-randaug", "clip", cells="H1: no colour words", test="not below")]),
    Hypothesis("H2", ("S9",), "FLIP falls short because doubling its batch (as the paper does) halves the optimizer "
               "steps at equal samples seen, which a step-starved micro run feels.", "Multi-epoch cells: FLIP at "
               "CLIP's batch (as many steps as CLIP) is not below CLIP (zero-shot top-1).", "hypotheses",
               [compare("flip, CLIP's batch", "clip", cells="H2:", test="not below")]),
    Hypothesis("H3", ("A3",), "The ResNet lost at small data because the earlier micro ResNet (rn-test, 0.0099 "
               "GFLOPs/sample) was not FLOP-matched to the micro ViT-B (0.086), unlike the paper's ResNet-50 and "
               "ViT-B/32.", "rn-micro, FLOP-matched (0.091), beats vit-b-micro at the smallest subset (zero-shot "
               "top-1).", "architecture", [compare("resnet", "largest-vit", cells="first")]),
    Hypothesis("H4", ("S1", "S8"), "SLIP trails because its micro projector is SLIP's 4096/256 scaled down 16x.",
               "Multi-epoch, largest subset: SLIP with a 4x larger projector (1024/64) beats the micro one, and is not "
               "below CLIP (zero-shot top-1 and retrieval R@1).", "hypotheses",
               [compare("slip, larger projector", "slip", cells="H4:", metrics=("zeroshot", "retrieval")),
                compare("slip, larger projector", "clip", cells="H4:", metrics=("zeroshot", "retrieval"),
                        test="not below")]),
    Hypothesis("H5", ("D1b", "D3"), "The filter fails because its scorer, trained on a few thousand pairs, ranks the "
               "pool far worse than the web-scale CLIP the paper used.", "A scorer trained on 4x the samples (the "
               "quality filter section gives both scorers' precision): its top 40% beats the full set at one epoch "
               "(zero-shot top-1), and its top 80% beats its top 20% at equal samples seen (retrieval R@1).",
               "hypotheses", [compare("top 40%, stronger scorer", "top 100%", cells="H5: stronger scorer, one-epoch"),
                              compare("top 80%, stronger scorer", "top 20%, stronger scorer", metrics=("retrieval",),
                                      cells="H5: stronger scorer, equal-samples")]),
    Hypothesis("H6", ("Q2",), "Retrieval does saturate at micro scale, only later than the paper's: the smallest "
               "subset is still under-trained at 8 epochs.", "Smallest subset: retrieval R@1 at 32 epochs is not above "
               "16 epochs' beyond noise.", "quantity", [saturation(16, "retrieval")]),
    Hypothesis("H7", ("S4", "S5", "S6"), "Augmentation trails because a few epochs (the paper's multi-epoch regime is "
               "30) leave little overfitting for it to cure.", "Smallest multi-epoch subset at 4x the epochs: crop-flip "
               "and Stacked RandAugment without its colour ops each beat no augmentation (zero-shot top-1).",
               "hypotheses", [compare("each clip-aug:crop-flip clip-aug:stacked-randaug-no-color", "clip",
                                      cells="H7: 4x the epochs")]),
    Hypothesis("H8", ("A3",), "The ResNet lost at small data because 32-pixel images leave it a 1x1 final feature map "
               "(total stride 32): its attention pool has one position.", "At 64 px (a 2x2 map; the ViT then sees 64 "
               "patches, both towers at 4x the FLOPs), the ResNet beats the largest ViT at the smallest subset "
               "(zero-shot top-1).", "hypotheses", [compare("resnet", "largest-vit", cells="H8: twice the image size")]),
    Hypothesis("H9", ("D1b",), "At one epoch the top 40% sees 2.5x fewer samples than the full set, and a "
               "sample-starved micro run loses more from fewer samples than it gains from cleaner ones.", "At equal "
               "samples seen the top 40% beats the full set (zero-shot top-1: D1a's comparison).", "quality",
               [compare("top 40%", "top 100%", cells="equal-samples")]),
    Hypothesis("H10", ("S4", "S5", "S6"), "Augmentation trails because its random crops (half to all of the image) "
               "cut a 32-pixel scene's objects out of the caption's view.", "Multi-epoch, largest subset: a horizontal "
               "flip alone (`--augment flip`) beats crop-flip (zero-shot top-1).", "hypotheses",
               [compare("clip-aug:flip", "clip-aug:crop-flip", cells="H10: no crop")]),
)


def check(points, roles) -> list:
    """Every row of HYPOTHESES judged on the points (roles: findings.roles_for's)."""
    tested = [judged(hypothesis, points, roles) for hypothesis in HYPOTHESES]
    return [replace(h, verdict=AS_HYPOTHESIS.get(h.verdict, h.verdict)) for h in tested]
