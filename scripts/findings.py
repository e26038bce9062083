"""Does a micro-scale run agree with "Scaling (Down) CLIP" (Li, Xie, Cubuk 2024)? The paper's findings (its
Recommendations 1-4 and the key results of its data, architecture and strategy sections, as PAPER.md lists
them) as a table, FINDINGS: one row per finding with the comparisons that decide it, which check_all walks
over the points of scripts/reproduce.py (one per study, setting, regime, data size and samples seen: the
runs' description and, per metric m of METRICS, the mean over seeds `m`, its std `m_std` and seed count `n`).
The points of a study with the same regime and data size are a cell (in the strategy study, a strategy each).

A comparison "A beats B" is decided by one rule fixed before looking at any number: with d = mean(A) -
mean(B) and a margin equal to the standard error of that difference, sqrt(sA^2/nA + sB^2/nB), it AGREES when
d > margin, DISAGREES when d < -margin, and is INCONCLUSIVE (within seed noise) otherwise. A finding made of
several comparisons agrees when all do, disagrees when all do, is inconclusive when none is decided, and is
PARTLY otherwise; one whose runs are missing from the grid is NOT TESTED. Every verdict carries its numbers.
"""
import math
import re
from dataclasses import dataclass, field, replace

AGREES, DISAGREES, INCONCLUSIVE, PARTLY, NOT_TESTED = "agrees", "disagrees", "inconclusive", "partly", "not tested"
METRICS = {"zeroshot": "zero-shot top-1", "probe": "linear-probe top-1", "retrieval": "retrieval R@1",
           "robustness": "robustness top-1", "effective_robustness": "effective robustness"}
AUGMENTED = ("clip-aug:crop-flip", "clip-aug:randaug", "clip-aug:stacked-randaug")

# --- the one rule ---------------------------------------------------------------------------------

def pct(point, metric):
    """'62.3±1.2' (percent, mean ± std over seeds)."""
    return f"{100 * point[metric]:.1f}±{100 * point.get(metric + '_std', 0.0):.1f}"


def _se(point, metric):
    return point.get(metric + "_std", 0.0) / math.sqrt(max(1, point.get("n", 1)))


def decide(diff: float, margin: float) -> str:
    """Beyond the margin either way, or inconclusive."""
    return AGREES if diff > margin else DISAGREES if diff < -margin else INCONCLUSIVE


def beats(a, b, metric):
    """Verdict for "a is better than b" on metric (higher is better), and the difference."""
    diff = a[metric] - b[metric]
    return decide(diff, math.hypot(_se(a, metric), _se(b, metric))), diff


def combine(verdicts) -> str:
    decided = {v for v in verdicts if v != NOT_TESTED}
    if len(decided) == 1:
        return decided.pop()
    return PARTLY if decided else NOT_TESTED


# What "A beats B"'s outcome means for the other claims a comparison can make (and how its line says so).
TESTS = {"beats": ("", {AGREES: AGREES, DISAGREES: DISAGREES, INCONCLUSIVE: INCONCLUSIVE}),
         "not below": ("; not below beyond noise", {AGREES: AGREES, DISAGREES: DISAGREES, INCONCLUSIVE: AGREES}),
         "similar": ("; similar = within noise", {AGREES: DISAGREES, DISAGREES: DISAGREES, INCONCLUSIVE: AGREES})}


def interpolate(curve, compute, metric):
    """(mean, standard error) of `metric` at `compute`, linear in log compute between neighbouring points,
    or None when compute lies outside the curve."""
    for a, b in zip(curve, curve[1:]):
        if a["compute"] <= compute <= b["compute"]:
            lo, hi = math.log(a["compute"]), math.log(b["compute"])
            t = (math.log(compute) - lo) / ((hi - lo) or 1.0)
            return (1 - t) * a[metric] + t * b[metric], (1 - t) * _se(a, metric) + t * _se(b, metric)
    return None


# --- points, cells and selectors ---------------------------------------------------------------------

def select(points, study, **match):
    return [p for p in points if p["study"] == study and all(p.get(k) == v for k, v in match.items())]


def one(points, study, **match):
    return next(iter(select(points, study, **match)), None)


def regime_order(regime):
    """A sort key that puts "batch 16" before "batch 128" (numbers by value, thousands commas ignored)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", (regime or "").replace(",", ""))]


def study_cells(points, study) -> dict:
    """{(regime, dataset_size): its points}, in order."""
    keys = sorted({(p.get("regime"), p.get("dataset_size")) for p in select(points, study)},
                  key=lambda c: (regime_order(c[0]), c[1] or 0))
    return {c: select(points, study, regime=c[0], dataset_size=c[1]) for c in keys}


def admitted(found: dict, which: str) -> list:
    """The cells `which` names: "all", one regime or the regimes it begins ("loss:"), the "first" or "last"
    data size (of two or more), or "top" (the cell with the most samples seen)."""
    sizes = sorted({size for _, size in found if size is not None})
    if which == "top":
        return [max(found, key=lambda c: max(p["samples_seen"] for p in found[c]))] if found else []
    if which in ("first", "last"):
        return [c for c in found if len(sizes) > 1 and c[1] == sizes[0 if which == "first" else -1]]
    return [c for c in found if which in ("all", c[0]) or which.endswith(":") and c[0].startswith(which)]


def opening(found: dict, cell) -> str:
    """An evidence line's opening: the cell's regime (where the study has several) and data size."""
    words = [cell[0] if len({r for r, _ in found}) > 1 else None, None if cell[1] is None else f"{cell[1]} pairs"]
    return ", ".join(w for w in words if w) + ": " if any(words) else ""


def names(selector, roles):
    """("one" | "best" | "worst" | "median" | "each", the settings a selector names through roles)."""
    how, _, rest = selector.partition(" ")
    how, words = (how, rest.split()) if how in ("best", "worst", "median", "each") else ("one", [selector])
    values = [roles.get(w, w) for w in words]
    return how, [n for v in values for n in ([v] if isinstance(v, str) else v or ())]


def pick(selector, cell, metric, roles, other):
    """[(label, point)] a selector takes from a cell's points: a setting or a role of check_all's, or
    "best|worst|median|each" + settings or roles ("others": those the `other` selector does not name)."""
    how, wanted = names(selector, roles)
    if "others" in wanted:
        wanted = [p["setting"] for p in cell if p["setting"] not in names(other, roles)[1]]
    chosen = [p for name in wanted for p in cell if p["setting"] == name and p.get(metric) is not None]
    if how in ("one", "each") or not chosen:
        return [(p["setting"], p) for p in chosen]
    median = lambda points, key: sorted(points, key=key)[len(points) // 2]
    p = {"best": max, "worst": min}.get(how, median)(chosen, key=lambda p: p[metric])
    return [(p["setting"] if how == "best" else f"{how} {p['setting']}", p)]


# --- the kinds of rule: each returns judge(points, study, roles) -> (verdicts, evidence lines) ---------------

def compare(a, b, metrics=("zeroshot",), cells="all", test="beats", b_next=False, gflops=False):
    """`a` beats `b` (or, by `test`, is not below it / similar to it) on each metric in every cell that `cells`
    admits; a and b are selectors (pick); b_next takes b from the next larger data size of the regime; gflops
    shows each point's GFLOPs per sample."""
    phrase, meaning = TESTS[test]

    def judge(points, study, roles):
        found, verdicts, lines = study_cells(points, study), [], []
        for cell in admitted(found, cells):
            b_cell = next((c for c in found if c[0] == cell[0] and c[1] > cell[1]), None) if b_next else cell
            for metric in metrics if b_cell else ():
                show = lambda label, p: f"{label} {pct(p, metric)}" + (
                    f" at {p['gflops_per_sample']:.3g} GFLOPs/sample" if gflops else "")
                for label_a, pa in pick(a, found[cell], metric, roles, b):
                    for label_b, pb in pick(b, found[b_cell], metric, roles, a):
                        if b_next:
                            label_b += f" on {b_cell[1]} pairs ({b_cell[1] / cell[1]:.3g}x the data)"
                        verdict, diff = beats(pa, pb, metric)
                        verdicts.append(meaning[verdict])
                        lines.append(f"{opening(found, cell)}{show(label_a, pa)} vs {show(label_b, pb)} "
                                     f"({METRICS[metric]}, {100 * diff:+.1f} pts{phrase}: {verdicts[-1]})")
        return verdicts, lines
    return judge


def gain(series, x, metric, difference):
    """The larger of series = (key, smaller, larger) gains more in `metric` than the smaller from start to end
    along x = (key, start, end): an int is a position among the study's sorted values of the key (along x, those
    both series have), a string a role or a value; `difference` names the difference of the gains in the last
    evidence line."""
    def judge(points, study, roles):
        def value(key, ref, among=None):
            found = sorted({p[key] for p in select(points, study) if p.get(key) is not None
                            and (among is None or all(one(points, study, **{s_key: s, key: p[key]}) for s in among))})
            return roles.get(ref, ref) if isinstance(ref, str) else found[ref] if len(found) > 1 else None
        name = lambda key, v: (f"{v} pairs" if key == "dataset_size" else f"{v:g} epoch" + "s" * (v != 1)
                               if key == "epochs" else v)
        (s_key, *ends), (x_key, *xs) = series, x
        ends = [value(s_key, e) for e in ends]
        xs = [value(x_key, v, ends) for v in xs]
        if None in ends + xs or ends[0] == ends[1] or xs[0] == xs[1]:
            return [], []
        gains, lines = [], []
        for s in ends:
            first, last = (one(points, study, **{s_key: s, x_key: v}) for v in xs)
            if first and last:
                gains.append((last[metric] - first[metric], math.hypot(_se(first, metric), _se(last, metric))))
                lines.append(f"{name(s_key, s)}: {METRICS[metric]} {pct(first, metric)} at {name(x_key, xs[0])} "
                             f"-> {pct(last, metric)} at {name(x_key, xs[1])} ({100 * gains[-1][0]:+.1f} pts)")
        if len(gains) < 2:
            return [], lines
        diff = gains[1][0] - gains[0][0]
        verdict = decide(diff, math.hypot(gains[0][1], gains[1][1]))
        return [verdict], lines + [f"{difference}: {100 * diff:+.1f} pts ({verdict})"]
    return judge


def best(target, metric, cells="all"):
    """`target` has the best `metric` of the settings in each admitted cell: agrees when it is the best,
    disagrees when another beats it beyond noise, inconclusive when within noise."""
    def judge(points, study, roles):
        found, verdicts, lines = study_cells(points, study), [], []
        for cell in admitted(found, cells):
            ranked = [p for p in found[cell] if p.get(metric) is not None]
            top = max(ranked, key=lambda p: p[metric], default=None)
            aim = next((p for p in ranked if p["setting"] == target), None)
            if aim and len(ranked) > 1:
                listed = sorted(ranked, key=lambda p: (p.get("keep_top") or 0, p["setting"]))
                lines.append(f"{opening(found, cell)}{METRICS[metric]}: "
                             + ", ".join(f"{p['setting']} {pct(p, metric)}" for p in listed))
                verdict, diff = beats(top, aim, metric)
                verdicts.append(AGREES if top is aim else INCONCLUSIVE if verdict == INCONCLUSIVE else DISAGREES)
                if top is not aim:
                    lines.append(f"best is {top['setting']}, {100 * diff:.1f} pts above {target} ({verdicts[-1]})")
        return verdicts, lines
    return judge


def equal_compute(curve, point, metric="zeroshot"):
    """`curve` beats `point` at the point's compute in each cell: the curve is every run of that strategy on the
    base tower and the cell's pairs in any study (one per samples seen), interpolated in log compute."""
    def judge(points, study, roles):
        verdicts, lines = [], []
        for regime, size in study_cells(points, study):
            p, runs = one(points, study, setting=point, regime=regime, dataset_size=size), {}
            for q in points:  # the curve's runs, the first of each samples seen
                if q.get("compute") and (q.get("strategy"), q.get("arch"), q.get("keep_top"),
                                         q.get("dataset_size")) == (curve, roles["base"], None, size):
                    runs.setdefault(q["samples_seen"], q)
            by_compute = sorted(runs.values(), key=lambda q: q["compute"])
            matched = p and p.get("compute") and interpolate(by_compute, p["compute"], metric)
            if matched:
                (mean, se), diff = matched, matched[0] - p[metric]
                verdicts.append(decide(diff, math.hypot(se, _se(p, metric))))
                lines.append(f"{regime} {size} pairs at {p['compute']:.3g} GFLOPs: {curve} {100 * mean:.1f} "
                             f"(interpolated) vs {point} {pct(p, metric)} ({100 * diff:+.1f} pts: {verdicts[-1]})")
        return verdicts, lines or [f"no {curve.upper()} runs bracket {point.upper()}'s compute on the same pairs"]
    return judge


def subsets(points, study) -> dict:
    """{data size: its epoch counts, sorted} of a study's points."""
    sizes = sorted({p["dataset_size"] for p in select(points, study) if p.get("dataset_size")})
    return {size: sorted({p["epochs"] for p in select(points, study, dataset_size=size) if p.get("epochs")})
            for size in sizes}


def saturation(after, metric):
    """`metric` stops gaining after `after` epochs: on every subset run past `after`, the last epoch count is
    not above `after`'s beyond noise."""
    def judge(points, study, roles):
        verdicts, lines = [], []
        for size, epochs in subsets(points, study).items():
            if after not in epochs or epochs[-1] <= after:
                continue
            at, last = (one(points, study, dataset_size=size, epochs=e) for e in (after, epochs[-1]))
            verdict, diff = beats(at, last, metric)
            verdicts.append(TESTS["not below"][1][verdict])
            lines.append(f"{size} pairs, {METRICS[metric]} per epoch count: " + ", ".join(
                f"{e:g}: {pct(one(points, study, dataset_size=size, epochs=e), metric)}" for e in epochs)
                + f" ({-100 * diff:+.1f} pts from {after} to {epochs[-1]:g}; saturated = no gain beyond seed noise: "
                  f"{verdicts[-1]})")
        return verdicts, lines or [f"no subset was run past {after} epochs"]
    return judge


def keeps_improving(metric, reference):
    """Where `reference` stops gaining (its last two epoch counts on a subset within seed noise), `metric` still
    gains beyond noise; subsets where the reference still gains do not decide."""
    def judge(points, study, roles):
        verdicts, lines = [], []
        for size, epochs in subsets(points, study).items():
            if len(epochs) < 2:
                continue
            before, last = (one(points, study, dataset_size=size, epochs=e) for e in epochs[-2:])
            if before.get(metric) is None or last.get(metric) is None:
                continue
            stalled, diff_ref = beats(last, before, reference)
            verdict, diff = beats(last, before, metric)
            line = (f"{size} pairs, {epochs[-2]:g} -> {epochs[-1]:g} epochs: {METRICS[reference]} {100 * diff_ref:+.1f} "
                    f"pts ({'stalled' if stalled == INCONCLUSIVE else 'still moving'}), {METRICS[metric]} "
                    f"{pct(before, metric)} -> {pct(last, metric)} ({100 * diff:+.1f} pts)")
            if stalled == INCONCLUSIVE:
                verdicts.append(verdict)
                line += f": {verdict}"
            lines.append(line)
        if not verdicts:
            lines.append(f"{METRICS[reference]} did not stall on any subset, so the claim is not decided here")
            verdicts = [INCONCLUSIVE] if lines[:-1] else []
        return verdicts, lines
    return judge


def with_effective_robustness(rule):
    """`rule` on points given "effective_robustness": robustness minus the line that robustness follows against
    zero-shot top-1 over every point of the study with both (least squares on the means; Taori et al. 2020's
    effective robustness, linear here), with the robustness's own seed spread."""
    def judge(points, study, roles):
        have = [p for p in select(points, study) if p.get("robustness") is not None and p.get("zeroshot") is not None]
        if len(have) < 3:
            return [], []
        xs, ys = [p["zeroshot"] for p in have], [p["robustness"] for p in have]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sum((x - mx) ** 2 for x in xs) or 1.0)
        fitted = [{**p, "effective_robustness": p["robustness"] - (my + slope * (p["zeroshot"] - mx)),
                   "effective_robustness_std": p.get("robustness_std", 0.0)} if p in have else p for p in points]
        verdicts, lines = rule(fitted, study, roles)
        return verdicts, [f"the study's line: robustness = {my - slope * mx:.3f} + {slope:.3f} x zero-shot top-1"] + lines
    return judge


# --- the findings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """A row of the table (key, study, claim, caveat, rules), and once judged its verdict and evidence."""
    key: str
    study: str  # quantity | quality | architecture | strategy | beyond | recommendations
    claim: str  # the paper's finding, in PAPER.md's words
    caveat: str = ""  # why a micro-scale run may not reproduce it (shown unless it agrees)
    rules: list = field(default_factory=list)  # compare, gain, best, equal_compute, saturation: verdicts combine
    verdict: str = NOT_TESTED
    evidence: list = field(default_factory=list)  # lines with the numbers


QUANTITY = ("At micro scale every subset is tiny next to what the model could absorb, so the largest subset may still "
            "be far from the data-limited regime, or the smallest may still be under-trained after few epochs (both "
            "shrink the contrast).")
QUALITY = ("The synthetic noise is half swapped captions (easy to score) and half one-attribute edits (hard), and a "
           "small pool leaves the top 20-40% with very few pairs.")
ARCH = ("The micro ViTs differ by width only (4 layers, 16 tokens) and share a 32-wide text tower, which may cap what a "
        "wider image tower can use; the largest micro dataset (tens of thousands of samples seen) is nowhere near the "
        "billions at which the paper's large ViTs win.")
SCALE = ("Every micro run is many orders of magnitude below the ~1B samples where the paper sees the strategies cross "
         "over.")
BEYOND = ("At micro scale every batch is tiny next to the 16k+ of these papers, the towers are a few hundred thousand "
          "parameters and 32-pixel images have 16 patches, so a trick that pays at web scale may not show here.")
SHIFTED = ("The robustness sets are rendering shifts of the same synthetic scenes (tinyclip/render.py's styles), "
           "far narrower than the natural shifts of ImageNet's variants.")

FINDINGS = (
    Finding("Q1", "quantity", "Small subsets gain little from more epochs; large ones keep gaining (Recommendation 2: "
            "more epochs help only when the dataset is large).", QUANTITY,
            [gain(("dataset_size", 0, -1), ("epochs", 0, -1), "zeroshot", "gain of the largest minus the smallest subset")]),
    Finding("Q2", "quantity", "Retrieval saturates after about 8 epochs.", rules=[saturation(8, "retrieval")]),
    Finding("Q3", "quantity", "Some robustness sets (ImageNet-A, -R, -Sketch) keep improving when ImageNet does not.",
            SHIFTED, [keeps_improving("robustness", "zeroshot")]),
    Finding("D1a", "quality", "The top 40% by image-text similarity beats the full set at equal samples seen "
            "(Recommendation 1).", QUALITY, [compare("top 40%", "top 100%", cells="equal-samples")]),
    Finding("D1b", "quality", "The top 40% by image-text similarity beats the full set at one epoch (Recommendation 1).",
            QUALITY, [compare("top 40%", "top 100%", cells="one-epoch")]),
    Finding("D2", "quality", "The top 20% falls short of the top 40%.", QUALITY, [compare("top 40%", "top 20%")]),
    Finding("D3", "quality", "The top 80% is best for retrieval (Recommendation 1: keep 80% for retrieval).", QUALITY,
            [best("top 80%", "retrieval", cells="equal-samples")]),
    Finding("A1", "architecture", "Small ViTs win at small data; the largest ViT is worst at small data and best at the "
            "most data (Recommendation 3).", ARCH, [compare("best smaller-vits", "largest-vit", cells="first"),
                                                    compare("largest-vit", "best smaller-vits", cells="last")]),
    Finding("A2", "architecture", "The smallest ViT's linear probe stops gaining with more data; the largest keeps "
            "gaining.", ARCH, [gain(("setting", "smallest-vit", "largest-vit"), ("dataset_size", -2, -1), "probe",
                                    "largest minus smallest ViT's gain")]),
    Finding("A3", "architecture", "ResNet wins with few samples or low compute (inductive bias); the ViT-B wins with more "
            "data (Recommendation 3).", rules=[compare("resnet", "largest-vit", cells="first"),
                                                compare("largest-vit", "resnet", cells="last")]),
    Finding("A4", "architecture", "Swin-T is usually below ViT-B/32.", ARCH, [compare("largest-vit", "swin")]),
    Finding("A5", "architecture", "Mixer is good at linear probing under 100M samples and worst at retrieval.", ARCH,
            [compare("mixer", "median others", metrics=("probe",)), compare("worst others", "mixer", metrics=("retrieval",))]),
    Finding("A6", "architecture", "At equal ImageNet accuracy, larger ViTs are more robust.", SHIFTED,
            [with_effective_robustness(compare("largest-vit", "smallest-vit", metrics=("effective_robustness",)))]),
    Finding("S1", "strategy", "SLIP is best for zero-shot below ~1B samples seen (Recommendation 4: SLIP for low-sample "
            "training).", SCALE, [compare("slip", "best clip flip")]),
    Finding("S2", "strategy", "SLIP is the worst at equal compute (it costs about 2-3x CLIP per sample).", SCALE + " CLIP "
            "at SLIP's compute is interpolated from CLIP runs with more epochs on the same pairs.",
            [equal_compute("clip", "slip")]),
    Finding("S3", "strategy", "With more samples, CLIP and FLIP are similar and beat SLIP.", SCALE,
            [compare("clip", "flip", cells="top", test="similar"), compare("clip", "slip", cells="top"),
             compare("flip", "slip", cells="top")]),
    Finding("S4", "strategy", "CLIP + data augmentation is best in the multi-epoch regime, especially for linear probing "
            "(Recommendation 4).", rules=[compare("best augmented", "best clip slip flip", metrics=("zeroshot", "probe"),
                                                  cells="multi-epoch")]),
    Finding("S5", "strategy", "In the multi-epoch regime every augmentation beats none.",
            rules=[compare("each augmented", "clip", cells="multi-epoch")]),
    Finding("S6", "strategy", "Stacked RandAugment on half the data matches no augmentation on all of it.",
            rules=[compare("clip-aug:stacked-randaug", "clip", cells="multi-epoch", test="not below", b_next=True)]),
    Finding("S7", "strategy", "With one epoch per subset, augmentation hurts (Recommendation 4: not for one-epoch runs).",
            "At micro scale one epoch is a few dozen steps, so all runs are close to chance and differences may drown in "
            "seed noise.", [compare("clip", "each augmented", cells="one-epoch")]),
    Finding("S8", "strategy", "SLIP is best at retrieval throughout (Recommendation 4: SLIP for retrieval-focused "
            "training).", SCALE, [compare("slip", "best others", metrics=("retrieval",))]),
    Finding("S9", "strategy", "FLIP is a cheaper CLIP at scale (Recommendation 4).", SCALE,
            [compare("flip", "clip", test="not below", gflops=True)]),
    # beyond the paper: the claims of the papers each train.py flag comes from
    Finding("B1", "beyond", "SigLIP (Zhai et al. 2023): the sigmoid loss beats the softmax loss at small batch sizes "
            "(`--loss sigmoid`).", BEYOND + " The sigmoid loss starts from a bias of -10 tuned for large batches.",
            [compare("sigmoid", "softmax", metrics=("zeroshot", "retrieval"), cells="loss:")]),
    Finding("B2", "beyond", "CLIPA (Li, Wang, Xie 2023): at equal training compute, training at reduced image and text "
            "tokens and tuning briefly at full size beats full size throughout (`--image-size`/`--context-length`, then "
            "`--tune-steps` at `--tune-image-size`/`--tune-context-length`).", BEYOND + " At 16 px a 8-px-patch ViT "
            "sees 4 patches, far fewer than CLIPA's smallest (16-36 at 224 px), and the tuning stage is a few dozen "
            "steps.", [compare("reduced + tuning", "full size", metrics=("zeroshot", "retrieval"), cells="tokens:",
                               gflops=True)]),
    Finding("B3", "beyond", "LiT (Zhai et al. 2022): a locked pretrained image tower with a text tower trained from "
            "scratch beats training both towers from scratch (`--init --init-towers image --lock-image`).", BEYOND +
            " The locked tower was pretrained on a few thousand synthetic pairs, not on the large labelled or "
            "image-text sets LiT locks; its pretraining compute is not counted, as in LiT.",
            [compare("locked image", "from scratch", metrics=("zeroshot", "retrieval"), cells="lit:", gflops=True)]),
)

RECOMMENDATIONS = (
    ("R1", "Filter data by image-text similarity; keep about the top 40% for classification, 80% for retrieval.",
     ("D1a", "D1b", "D3")),
    ("R2", "More epochs help only when the dataset is large.", ("Q1",)),
    ("R3", "Match model size to data: small ViTs or ResNet at small data/compute; large ViTs at billions.", ("A1", "A3")),
    ("R4", "SLIP for low-sample or retrieval-focused training; FLIP as a cheaper CLIP at scale; CLIP + Stacked "
           "RandAugment for multi-epoch training on limited data (not for one-epoch runs).", ("S1", "S8", "S9", "S4", "S7")),
)


# --- the interpreter and the report --------------------------------------------------------------------

def roles_for(*, base_arch, vits, resnet=None, swin=None, mixer=None) -> dict:
    """The names selectors use for settings. vits: the ViT settings from smallest to largest; base_arch: the
    strategy study's tower; resnet/swin/mixer: setting names."""
    return {"base": base_arch, "smallest-vit": vits[0] if vits else None, "largest-vit": vits[-1] if vits else None,
            "smaller-vits": tuple(vits[:-1]), "resnet": resnet, "swin": swin, "mixer": mixer, "augmented": AUGMENTED}


def judged(row, points, roles):
    """The row (a Finding, or a Hypothesis of scripts/hypotheses.py) with its rules' combined verdict and lines."""
    results = [rule(points, row.study, roles) for rule in row.rules]
    return replace(row, verdict=combine([v for verdicts, _ in results for v in verdicts]),
                   evidence=[line for _, lines in results for line in lines])


def check_all(points, **towers):
    """Every finding of FINDINGS, then the four recommendations built from them; towers: roles_for's."""
    roles = roles_for(**towers)
    checks = [judged(finding, points, roles) for finding in FINDINGS]
    by_key = {c.key: c for c in checks}
    for key, claim, parts in RECOMMENDATIONS:
        found = [by_key[p] for p in parts]
        checks.append(Finding(key, "recommendations", claim, verdict=combine([c.verdict for c in found]),
                              evidence=[f"{c.key}: {c.verdict}" for c in found]))
    return checks
