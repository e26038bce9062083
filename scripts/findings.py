"""Does a micro-scale run agree with "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024)? The paper's findings
(its Recommendations 1-4 and the key results of its data, architecture and strategy sections, as
listed in PAPER.md) written as checks on the aggregated results of scripts/reproduce.py.

Input: a list of aggregated points, one per (study, setting, regime, data size, samples seen), each a
dict with the run's description (study, setting, regime, arch, strategy, dataset_size, keep_top,
epochs, samples_seen, compute) and, per metric m in METRICS, its mean over seeds `m`, standard
deviation `m_std` and seed count `n`.

A comparison "A beats B" is decided before looking at any number, by one rule: with d = mean(A) -
mean(B) and a margin equal to the standard error of that difference, sqrt(sA^2/nA + sB^2/nB), the
check AGREES when d > margin, DISAGREES when d < -margin, and is INCONCLUSIVE (within seed noise)
otherwise. A finding made of several comparisons agrees when all do, disagrees when all do, is
inconclusive when none is decided, and is PARTLY otherwise. A finding whose runs are missing from
the grid is NOT TESTED. Every verdict carries the numbers it was made from.
"""
import math
from dataclasses import dataclass, field

AGREES, DISAGREES, INCONCLUSIVE, PARTLY, NOT_TESTED = "agrees", "disagrees", "inconclusive", "partly", "not tested"
METRICS = {"zeroshot": "zero-shot top-1", "probe": "linear-probe top-1", "retrieval": "retrieval R@1"}


@dataclass
class Finding:
    key: str
    section: str
    claim: str  # the paper's finding, in PAPER.md's words
    verdict: str = NOT_TESTED
    evidence: list = field(default_factory=list)  # lines with the numbers
    caveat: str = ""  # why a micro-scale run may not reproduce it (shown unless it agrees)


# --- comparisons ----------------------------------------------------------------------------------

def pct(point, metric):
    """'62.3±1.2' (percent, mean ± std over seeds)."""
    return f"{100 * point[metric]:.1f}±{100 * point.get(metric + '_std', 0.0):.1f}"


def _se(point, metric):
    return point.get(metric + "_std", 0.0) / math.sqrt(max(1, point.get("n", 1)))


def decide(diff: float, margin: float) -> str:
    """The module's one rule: beyond the margin either way, or inconclusive."""
    if diff > margin:
        return AGREES
    if diff < -margin:
        return DISAGREES
    return INCONCLUSIVE


def beats(a, b, metric):
    """Verdict for "a is better than b" on metric (higher is better), and the difference in points."""
    diff = a[metric] - b[metric]
    return decide(diff, math.hypot(_se(a, metric), _se(b, metric))), diff


def combine(verdicts) -> str:
    decided = [v for v in verdicts if v != NOT_TESTED]
    if not decided:
        return NOT_TESTED
    if all(v == AGREES for v in decided):
        return AGREES
    if all(v == DISAGREES for v in decided):
        return DISAGREES
    if all(v == INCONCLUSIVE for v in decided):
        return INCONCLUSIVE
    return PARTLY


class Points:
    """The aggregated points with a small query helper."""

    def __init__(self, points):
        self.points = list(points)

    def select(self, study, **match):
        return [p for p in self.points if p["study"] == study and all(p.get(k) == v for k, v in match.items())]

    def get(self, study, **match):
        found = self.select(study, **match)
        return found[0] if found else None

    def values(self, study, key, **match):
        return sorted({p[key] for p in self.select(study, **match) if p.get(key) is not None})


def _compare_line(finding, label_a, a, label_b, b, metric):
    verdict, diff = beats(a, b, metric)
    finding.evidence.append(f"{label_a} {pct(a, metric)} vs {label_b} {pct(b, metric)} "
                            f"({METRICS[metric]}, {100 * diff:+.1f} pts: {verdict})")
    return verdict


# --- data quantity ---------------------------------------------------------------------------------

def quantity_findings(pts: Points):
    epochs_gain = Finding("Q1", "Data quantity", "Small subsets gain little from more epochs; large ones keep gaining "
                          "(Recommendation 2: more epochs help only when the dataset is large).",
                          caveat="At micro scale every subset is tiny next to what the model could absorb, so the "
                                 "largest subset may still be far from the data-limited regime, or the smallest may "
                                 "still be under-trained after few epochs (both shrink the contrast).")
    sizes, epochs = pts.values("quantity", "dataset_size"), pts.values("quantity", "epochs")
    if len(sizes) >= 2 and len(epochs) >= 2:
        gains = {}
        for size in (sizes[0], sizes[-1]):
            first, last = pts.get("quantity", dataset_size=size, epochs=epochs[0]), pts.get("quantity", dataset_size=size, epochs=epochs[-1])
            if first and last:
                gains[size] = (last["zeroshot"] - first["zeroshot"], math.hypot(_se(first, "zeroshot"), _se(last, "zeroshot")))
                epochs_gain.evidence.append(f"{size} pairs: {epochs[0]:g} -> {epochs[-1]:g} epochs, zero-shot "
                                            f"{pct(first, 'zeroshot')} -> {pct(last, 'zeroshot')} ({100 * gains[size][0]:+.1f} pts)")
        if len(gains) == 2:
            (small, (g_small, s_small)), (large, (g_large, s_large)) = sorted(gains.items())
            epochs_gain.verdict = decide(g_large - g_small, math.hypot(s_small, s_large))
            epochs_gain.evidence.append(f"gain of the largest minus the smallest subset: {100 * (g_large - g_small):+.1f} pts "
                                        f"({epochs_gain.verdict})")

    saturation = Finding("Q2", "Data quantity", "Retrieval saturates after about 8 epochs.",
                         caveat="Needs runs of 8 and more epochs on the largest subset.")
    if sizes and epochs and epochs[-1] > 8 and 8 in epochs:
        at8, last = (pts.get("quantity", dataset_size=sizes[-1], epochs=e) for e in (8, epochs[-1]))
        if at8 and last:
            verdict, diff = beats(last, at8, "retrieval")
            saturation.verdict = {AGREES: DISAGREES, DISAGREES: AGREES, INCONCLUSIVE: AGREES}[verdict]
            saturation.evidence.append(f"{sizes[-1]} pairs, retrieval R@1 at 8 epochs {pct(at8, 'retrieval')}, at "
                                       f"{epochs[-1]} {pct(last, 'retrieval')} ({100 * diff:+.1f} pts; saturated = no "
                                       f"gain beyond seed noise)")
    else:
        saturation.evidence.append(f"epochs run: {epochs}; this grid does not go past 8 epochs")

    robustness = Finding("Q3", "Data quantity", "Some robustness sets (ImageNet-A, -R, -Sketch) keep improving when "
                         "ImageNet does not.", caveat="The synthetic data has no distribution-shifted test sets.")
    robustness.evidence.append("no robustness variants of the built-in data: not tested")
    return [epochs_gain, saturation, robustness]


# --- data quality ------------------------------------------------------------------------------------

def quality_findings(pts: Points):
    out = []
    caveat = ("The synthetic noise is half swapped captions (easy to score) and half one-attribute edits (hard); "
              "a scorer trained on a few thousand pairs is far weaker than the web-scale model the paper used, "
              "and a small pool leaves the top 20-40% with very few pairs.")
    for regime, name in (("equal-samples", "at equal samples seen"), ("one-epoch", "at one epoch")):
        f = Finding(f"D1{'a' if regime == 'equal-samples' else 'b'}", "Data quality",
                    f"The top 40% by image-text similarity beats the full set {name} (Recommendation 1).", caveat=caveat)
        if regime == "one-epoch":
            f.caveat += (" At one epoch the 40% subset also sees 2.5x fewer samples; at micro scale the model is "
                         "sample-starved, so fewer samples can outweigh cleaner ones.")
        top40, full = pts.get("quality", regime=regime, keep_top=0.4), pts.get("quality", regime=regime, keep_top=1.0)
        if top40 and full:
            f.verdict = _compare_line(f, "top 40%", top40, "top 100%", full, "zeroshot")
        out.append(f)

    f = Finding("D2", "Data quality", "The top 20% falls short of the top 40%.", caveat=caveat)
    verdicts = []
    for regime in ("equal-samples", "one-epoch"):
        top20, top40 = pts.get("quality", regime=regime, keep_top=0.2), pts.get("quality", regime=regime, keep_top=0.4)
        if top20 and top40:
            verdicts.append(_compare_line(f, f"top 40% ({regime})", top40, "top 20%", top20, "zeroshot"))
    f.verdict = combine(verdicts)
    out.append(f)

    f = Finding("D3", "Data quality", "The top 80% is best for retrieval (Recommendation 1: keep 80% for retrieval).",
                caveat=caveat)
    candidates = pts.select("quality", regime="equal-samples")
    top80 = pts.get("quality", regime="equal-samples", keep_top=0.8)
    if top80 and len(candidates) > 1:
        best = max(candidates, key=lambda p: p["retrieval"])
        f.evidence.append("retrieval R@1 at equal samples seen: " + ", ".join(
            f"top {round(100 * p['keep_top'])}% {pct(p, 'retrieval')}" for p in sorted(candidates, key=lambda p: p["keep_top"])))
        if best is top80:
            f.verdict = AGREES
        else:
            verdict, diff = beats(best, top80, "retrieval")
            f.verdict = INCONCLUSIVE if verdict == INCONCLUSIVE else DISAGREES
            f.evidence.append(f"best is top {round(100 * best['keep_top'])}%, {100 * diff:.1f} pts above top 80% ({f.verdict})")
    out.append(f)
    return out


# --- architecture ------------------------------------------------------------------------------------

def architecture_findings(pts: Points, vits, resnet=None, swin=None, mixer=None):
    """vits: the ViT settings from smallest to largest; resnet/swin/mixer: their setting names."""
    out, sizes = [], pts.values("architecture", "dataset_size")
    caveat = ("The micro ViTs differ by width only (4 layers, 16 tokens) and share a 32-wide text tower, which may "
              "cap what a wider image tower can use; the largest micro dataset (tens of thousands of samples seen) "
              "is nowhere near the billions at which the paper's large ViTs win.")
    at = lambda arch, size: pts.get("architecture", setting=arch, dataset_size=size)

    f = Finding("A1", "Architecture", "Small ViTs win at small data; the largest ViT is worst at small data and best "
                "at the most data (Recommendation 3).", caveat=caveat)
    if len(vits) >= 2 and len(sizes) >= 2:
        verdicts = []
        for size, want_large in ((sizes[0], False), (sizes[-1], True)):
            smaller = [p for p in (at(a, size) for a in vits[:-1]) if p]
            largest = at(vits[-1], size)
            if smaller and largest:
                best_small = max(smaller, key=lambda p: p["zeroshot"])
                if want_large:
                    verdicts.append(_compare_line(f, f"{size} pairs: {vits[-1]}", largest, best_small["setting"], best_small, "zeroshot"))
                else:
                    verdicts.append(_compare_line(f, f"{size} pairs: {best_small['setting']}", best_small, vits[-1], largest, "zeroshot"))
        f.verdict = combine(verdicts)
    out.append(f)

    f = Finding("A2", "Architecture", "The smallest ViT's linear probe stops gaining with more data; the largest keeps "
                "gaining.", caveat=caveat)
    if len(vits) >= 2 and len(sizes) >= 2:
        gains = {}
        for arch in (vits[0], vits[-1]):
            before, after = at(arch, sizes[-2]), at(arch, sizes[-1])
            if before and after:
                gains[arch] = (after["probe"] - before["probe"], math.hypot(_se(before, "probe"), _se(after, "probe")))
                f.evidence.append(f"{arch}: probe {pct(before, 'probe')} at {sizes[-2]} pairs -> {pct(after, 'probe')} at "
                                  f"{sizes[-1]} ({100 * gains[arch][0]:+.1f} pts)")
        if len(gains) == 2:
            (g_small, s_small), (g_large, s_large) = gains[vits[0]], gains[vits[-1]]
            f.verdict = decide(g_large - g_small, math.hypot(s_small, s_large))
            f.evidence.append(f"largest minus smallest ViT's gain: {100 * (g_large - g_small):+.1f} pts ({f.verdict})")
    out.append(f)

    f = Finding("A3", "Architecture", "ResNet wins with few samples or low compute (inductive bias); the ViT-B wins "
                "with more data (Recommendation 3).",
                caveat="The micro ResNet is not FLOP-matched to the micro ViT-B (see GFLOPs/sample), unlike the "
                       "paper's ResNet-50 vs ViT-B/32; and 32-pixel images leave the ResNet a 1x1 final feature map.")
    if resnet and vits and len(sizes) >= 2:
        verdicts = []
        rn_small, vit_small, rn_large, vit_large = at(resnet, sizes[0]), at(vits[-1], sizes[0]), at(resnet, sizes[-1]), at(vits[-1], sizes[-1])
        if rn_small and vit_small:
            verdicts.append(_compare_line(f, f"{sizes[0]} pairs: {resnet}", rn_small, vits[-1], vit_small, "zeroshot"))
        if rn_large and vit_large:
            verdicts.append(_compare_line(f, f"{sizes[-1]} pairs: {vits[-1]}", vit_large, resnet, rn_large, "zeroshot"))
        f.verdict = combine(verdicts)
    out.append(f)

    f = Finding("A4", "Architecture", "Swin-T is usually below ViT-B/32.", caveat=caveat)
    if swin and vits:
        f.verdict = combine([_compare_line(f, f"{s} pairs: {vits[-1]}", at(vits[-1], s), swin, at(swin, s), "zeroshot")
                             for s in sizes if at(vits[-1], s) and at(swin, s)])
    out.append(f)

    f = Finding("A5", "Architecture", "Mixer is good at linear probing under 100M samples and worst at retrieval.",
                caveat=caveat)
    if mixer and vits:
        verdicts = []
        for s in sizes:
            others = [p for p in pts.select("architecture", dataset_size=s) if p["setting"] != mixer]
            mix = at(mixer, s)
            if mix and others:
                median = sorted(others, key=lambda p: p["probe"])[len(others) // 2]
                verdicts.append(_compare_line(f, f"{s} pairs: {mixer}", mix, f"median arch {median['setting']}", median, "probe"))
                worst = min(others, key=lambda p: p["retrieval"])
                verdicts.append(_compare_line(f, f"{s} pairs: worst other {worst['setting']}", worst, mixer, mix, "retrieval"))
        f.verdict = combine(verdicts)
    out.append(f)
    out.append(Finding("A6", "Architecture", "At equal ImageNet accuracy, larger ViTs are more robust.",
                       evidence=["no robustness variants of the built-in data: not tested"],
                       caveat="The synthetic data has no distribution-shifted test sets."))
    return out


# --- training strategies -------------------------------------------------------------------------------

AUGMENTED = ("clip-aug:crop-flip", "clip-aug:randaug", "clip-aug:stacked-randaug")


def _clip_by_compute(pts: Points, base_arch, size):
    """Plain-CLIP points of the base tower on `size` pairs from every study, by compute (one per samples seen)."""
    found = {}
    for p in pts.points:
        if (p.get("strategy") == "clip" and p.get("arch") == base_arch and p.get("keep_top") is None
                and p.get("dataset_size") == size and p.get("compute")):
            found.setdefault(p["samples_seen"], p)
    return sorted(found.values(), key=lambda p: p["compute"])


def interpolate(curve, compute, metric):
    """(mean, standard error) of `metric` at `compute`, linear in log compute between neighbouring points,
    or None when compute lies outside the curve."""
    for a, b in zip(curve, curve[1:]):
        if a["compute"] <= compute <= b["compute"]:
            t = (math.log(compute) - math.log(a["compute"])) / ((math.log(b["compute"]) - math.log(a["compute"])) or 1.0)
            return (1 - t) * a[metric] + t * b[metric], (1 - t) * _se(a, metric) + t * _se(b, metric)
    return None


def strategy_findings(pts: Points, base_arch):
    out = []
    get = lambda setting, regime, size: pts.get("strategy", setting=setting, regime=regime, dataset_size=size)
    cells = sorted({(p["regime"], p["dataset_size"]) for p in pts.select("strategy")})
    multi = sorted(s for r, s in cells if r == "multi-epoch")
    single = sorted(s for r, s in cells if r == "one-epoch")
    scale = ("Every micro run is many orders of magnitude below the ~1B samples where the paper sees the strategies "
             "cross over, and the micro SLIP head is scaled down (see the settings table).")

    f = Finding("S1", "Strategies", "SLIP is best for zero-shot below ~1B samples seen (Recommendation 4: SLIP for "
                "low-sample training).", caveat=scale)
    verdicts = []
    for regime, size in cells:
        slip, rivals = get("slip", regime, size), [p for p in (get("clip", regime, size), get("flip", regime, size)) if p]
        if slip and rivals:
            best = max(rivals, key=lambda p: p["zeroshot"])
            verdicts.append(_compare_line(f, f"{regime} {size} pairs: slip", slip, best["setting"], best, "zeroshot"))
    f.verdict = combine(verdicts)
    out.append(f)

    f = Finding("S2", "Strategies", "SLIP is the worst at equal compute (it costs about 2-3x CLIP per sample).",
                caveat=scale + " CLIP at SLIP's compute is interpolated from CLIP runs with more epochs on the same pairs.")
    verdicts = []
    for regime, size in cells:
        slip = get("slip", regime, size)
        curve = _clip_by_compute(pts, base_arch, size)
        matched = interpolate(curve, slip["compute"], "zeroshot") if slip and slip.get("compute") else None
        if matched:
            mean, se = matched
            verdict = decide(mean - slip["zeroshot"], math.hypot(se, _se(slip, "zeroshot")))
            verdicts.append(verdict)
            f.evidence.append(f"{regime} {size} pairs at {slip['compute']:.3g} GFLOPs: clip {100 * mean:.1f} (interpolated) "
                              f"vs slip {pct(slip, 'zeroshot')} ({100 * (mean - slip['zeroshot']):+.1f} pts: {verdict})")
    f.verdict = combine(verdicts)
    if not verdicts:
        f.evidence.append("no CLIP runs bracket SLIP's compute on the same pairs")
    out.append(f)

    f = Finding("S3", "Strategies", "With more samples, CLIP and FLIP are similar and beat SLIP.", caveat=scale)
    top = max(((r, s) for r, s in cells), key=lambda c: (get("clip", *c) or {}).get("samples_seen", 0), default=None)
    if top and all(get(name, *top) for name in ("clip", "flip", "slip")):
        clip, flip, slip = (get(name, *top) for name in ("clip", "flip", "slip"))
        similar, diff = beats(clip, flip, "zeroshot")
        similar = AGREES if similar == INCONCLUSIVE else DISAGREES
        f.evidence.append(f"{top[0]} {top[1]} pairs: clip {pct(clip, 'zeroshot')} vs flip {pct(flip, 'zeroshot')} "
                          f"({100 * diff:+.1f} pts; similar = within noise: {similar})")
        f.verdict = combine([similar,
                             _compare_line(f, "clip", clip, "slip", slip, "zeroshot"),
                             _compare_line(f, "flip", flip, "slip", slip, "zeroshot")])
    out.append(f)

    aug_caveat = ("Our multi-epoch regime is a few epochs, not the paper's 30, so there is less overfitting for "
                  "augmentation to cure; the 32-pixel synthetic scenes are also hurt by crops that cut objects out and, "
                  "above all, by colour changes (RandAugment's colour ops, Stacked RandAugment's jitter and grayscale): "
                  "colour is named in every caption and in half of each zero-shot class name, so a recoloured image no "
                  "longer matches its text, which web photos with loose alt-text rarely suffer.")
    f = Finding("S4", "Strategies", "CLIP + data augmentation is best in the multi-epoch regime, especially for linear "
                "probing (Recommendation 4).", caveat=aug_caveat)
    verdicts = []
    for size in multi:
        augs = [p for p in (get(a, "multi-epoch", size) for a in AUGMENTED) if p]
        rivals = [p for p in (get(s, "multi-epoch", size) for s in ("clip", "slip", "flip")) if p]
        for metric in ("zeroshot", "probe"):
            if augs and rivals:
                best_aug, best_rival = max(augs, key=lambda p: p[metric]), max(rivals, key=lambda p: p[metric])
                verdicts.append(_compare_line(f, f"{size} pairs: {best_aug['setting']}", best_aug, best_rival["setting"],
                                              best_rival, metric))
    f.verdict = combine(verdicts)
    out.append(f)

    f = Finding("S5", "Strategies", "In the multi-epoch regime every augmentation beats none.", caveat=aug_caveat)
    f.verdict = combine([_compare_line(f, f"{size} pairs: {a}", get(a, "multi-epoch", size), "clip",
                                       get("clip", "multi-epoch", size), "zeroshot")
                         for size in multi for a in AUGMENTED if get(a, "multi-epoch", size) and get("clip", "multi-epoch", size)])
    out.append(f)

    f = Finding("S6", "Strategies", "Stacked RandAugment on half the data matches no augmentation on all of it.",
                caveat=aug_caveat)
    verdicts = []
    for small, large in zip(multi, multi[1:]):
        stacked, clip = get("clip-aug:stacked-randaug", "multi-epoch", small), get("clip", "multi-epoch", large)
        if stacked and clip:
            verdict, diff = beats(stacked, clip, "zeroshot")
            verdicts.append(DISAGREES if verdict == DISAGREES else AGREES)
            f.evidence.append(f"stacked-randaug on {small} pairs {pct(stacked, 'zeroshot')} vs clip on {large} "
                              f"({large / small:.3g}x the data) {pct(clip, 'zeroshot')} ({100 * diff:+.1f} pts; "
                              f"matches = not below beyond noise: {verdicts[-1]})")
    f.verdict = combine(verdicts)
    out.append(f)

    f = Finding("S7", "Strategies", "With one epoch per subset, augmentation hurts (Recommendation 4: not for "
                "one-epoch runs).", caveat="At micro scale one epoch is a few dozen steps, so all runs are close to chance "
                                           "and differences may drown in seed noise.")
    f.verdict = combine([_compare_line(f, f"{size} pairs: clip", get("clip", "one-epoch", size), a,
                                       get(a, "one-epoch", size), "zeroshot")
                         for size in single for a in AUGMENTED if get(a, "one-epoch", size) and get("clip", "one-epoch", size)])
    out.append(f)

    f = Finding("S8", "Strategies", "SLIP is best at retrieval throughout (Recommendation 4: SLIP for "
                "retrieval-focused training).", caveat=scale)
    verdicts = []
    for regime, size in cells:
        slip = get("slip", regime, size)
        others = [p for p in pts.select("strategy", regime=regime, dataset_size=size) if p["setting"] != "slip"]
        if slip and others:
            best = max(others, key=lambda p: p["retrieval"])
            verdicts.append(_compare_line(f, f"{regime} {size} pairs: slip", slip, best["setting"], best, "retrieval"))
    f.verdict = combine(verdicts)
    out.append(f)

    f = Finding("S9", "Strategies", "FLIP is a cheaper CLIP at scale (Recommendation 4).",
                caveat="FLIP doubles the batch (as the paper does), which halves the number of optimizer steps at equal "
                       "samples seen; a step-starved micro run feels that far more than a billion-sample run.")
    verdicts = []
    for regime, size in cells:
        clip, flip = get("clip", regime, size), get("flip", regime, size)
        if clip and flip:
            verdict, diff = beats(flip, clip, "zeroshot")
            verdicts.append(DISAGREES if verdict == DISAGREES else AGREES)
            f.evidence.append(f"{regime} {size} pairs: flip {pct(flip, 'zeroshot')} at {flip['gflops_per_sample']:.3g} "
                              f"GFLOPs/sample vs clip {pct(clip, 'zeroshot')} at {clip['gflops_per_sample']:.3g} "
                              f"({100 * diff:+.1f} pts; cheaper CLIP = not below beyond noise: {verdicts[-1]})")
    f.verdict = combine(verdicts)
    out.append(f)
    return out


# --- recommendations and the report ------------------------------------------------------------------------

RECOMMENDATIONS = (
    ("R1", "Filter data by image-text similarity; keep about the top 40% for classification, 80% for retrieval.",
     ("D1a", "D1b", "D3")),
    ("R2", "More epochs help only when the dataset is large.", ("Q1",)),
    ("R3", "Match model size to data: small ViTs or ResNet at small data/compute; large ViTs at billions.", ("A1", "A3")),
    ("R4", "SLIP for low-sample or retrieval-focused training; FLIP as a cheaper CLIP at scale; CLIP + Stacked "
           "RandAugment for multi-epoch training on limited data (not for one-epoch runs).", ("S1", "S8", "S9", "S4", "S7")),
)


def recommendations(findings):
    by_key = {f.key: f for f in findings}
    out = []
    for key, claim, parts in RECOMMENDATIONS:
        found = [by_key[p] for p in parts if p in by_key]
        rec = Finding(key, "Recommendations", claim, combine([f.verdict for f in found]))
        rec.evidence = [f"{f.key}: {f.verdict}" for f in found]
        out.append(rec)
    return out


def check_all(points, *, base_arch, vits, resnet=None, swin=None, mixer=None):
    """Every finding, then the four recommendations built from them."""
    pts = Points(points)
    findings = (quantity_findings(pts) + quality_findings(pts) + architecture_findings(pts, vits, resnet, swin, mixer)
                + strategy_findings(pts, base_arch))
    return findings + recommendations(findings)


def markdown_table(findings) -> str:
    """| id | the paper's finding | micro-scale evidence | verdict |, then the caveats of those that do not agree."""
    clean = lambda text: text.replace("|", "/")
    lines = ["| | Paper (PAPER.md) | Micro-scale result | Verdict |", "|---|---|---|---|"]
    for f in findings:
        evidence = "<br>".join(clean(e) for e in f.evidence) or "-"
        lines.append(f"| {f.key} | {clean(f.claim)} | {evidence} | **{f.verdict}** |")
    notes = [f"- **{f.key}** ({f.verdict}): {f.caveat}" for f in findings
             if f.verdict in (DISAGREES, INCONCLUSIVE, PARTLY) and f.caveat]
    if notes:
        lines += ["", "Why a finding may not show at this scale (hypotheses, not tested):", ""] + notes
    return "\n".join(lines)
