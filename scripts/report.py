"""What scripts/reproduce.py writes: the runs table (CSV and JSON), means and standard deviations over seeds,
the markdown summary with scripts/findings.py's verdicts, and the figures of "Scaling (Down) CLIP" (Li, Xie,
Cubuk 2024): error vs samples seen and vs total compute on a log x axis, a coloured line with markers per
setting, error bars of one standard deviation over seeds, drawn with Pillow alone (no matplotlib among
tinyclip's dependencies) by line_chart (one panel) and figure (panels on a grid, a title, a legend).
"""
import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

import findings
import hypotheses
import settings
from tinyclip.data import read_scores
from tinyclip.model import make_config
from tinyclip.synthetic import SyntheticPairs

STUDIES = ("quantity", "quality", "architecture", "strategy", "beyond", "hypotheses")
CSV_COLUMNS = ("study", "setting", "regime", "seed", "arch", "strategy", "dataset_size", "keep_top", "epochs",
               "samples_seen", "batch_size", "gflops_per_sample", "total_compute_gflops", "zeroshot_top1",
               "linear_probe_top1", "retrieval_r1", "retrieval_i2t_r1", "retrieval_t2i_r1", "robustness_top1", "wall_s",
               "run_id")
METRIC_COLUMNS = {"zeroshot": "zeroshot_top1", "probe": "linear_probe_top1", "retrieval": "retrieval_r1",
                  "robustness": "robustness_top1"}

# --- tables ---------------------------------------------------------------------------------------

def rows_for(runs, ids, results, costs) -> list:
    """One runs.csv row per Run of scripts/reproduce.py (and its training's id): its description, what it
    trained (costs: reproduce.cost's batch, samples train.py ran in whole steps, GFLOPs) and its metrics."""
    rows = []
    for run, run_id, c in zip(runs, ids, costs):
        r = results.get(run_id, {})
        metrics = [None if r.get(m) is None else round(r[m], 5)
                   for m in ("zeroshot", "probe", "retrieval", "i2t", "t2i", "robustness")]
        rows.append(dict(zip(CSV_COLUMNS, (
            run.study, run.setting, run.regime, run.seed, run.arch, run.strategy, run.dataset_size, run.keep_top,
            round(run.epochs * c["samples_seen"] / run.samples_seen, 3), c["samples_seen"], c["batch_size"],
            round(c["gflops_per_sample"], 6), round(c["total_compute_gflops"], 3), *metrics, r.get("wall_s"),
            run_id))))
    return rows


def aggregate(rows):
    """Mean and standard deviation over seeds per (study, setting, regime, size, samples seen): findings' points."""
    groups = {}
    for row in rows:
        key = (row["study"], row["setting"], row["regime"], row["dataset_size"], row["keep_top"], row["samples_seen"])
        groups.setdefault(key, []).append(row)
    points = []
    for members in groups.values():
        point = {k: members[0][k] for k in ("study", "setting", "regime", "arch", "strategy", "dataset_size",
                                            "keep_top", "epochs", "samples_seen", "batch_size",
                                            "gflops_per_sample")}
        point.update(compute=members[0]["total_compute_gflops"], n=len(members))
        for name, column in METRIC_COLUMNS.items():
            values = [m[column] for m in members if m.get(column) is not None]  # get: a runs.csv from before a column
            point[name] = statistics.mean(values) if values else None
            point[name + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        points.append(point)
    return points


def judge(points, grid, scale) -> tuple:
    """(findings.check_all's findings and recommendations, hypotheses.check's hypotheses), with the towers of a
    reproduce.py Grid in their roles."""
    towers = settings.towers(grid, scale)
    return findings.check_all(points, **towers), hypotheses.check(points, findings.roles_for(**towers))


def points_table(points, study) -> str:
    chosen = sorted((p for p in points if p["study"] == study),
                    key=lambda p: (findings.regime_order(p["regime"]), p["setting"] if study in ("architecture", "strategy", "beyond", "hypotheses") else "",
                                   p["dataset_size"] or 0, p["keep_top"] or 0, p["samples_seen"]))
    cell = lambda p, m: "-" if p[m] is None else f"{100 * p[m]:.1f} ± {100 * p[m + '_std']:.1f}"
    lines = ["| setting | regime | pairs | epochs | samples seen | GFLOPs/sample | total GFLOPs | zero-shot top-1 | "
             "linear-probe top-1 | retrieval R@1 | robustness top-1 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {p['setting']} | {p['regime']} | {p['dataset_size'] or '-'} | {p['epochs']:g} | "
              f"{p['samples_seen']:,} | {p['gflops_per_sample']:.4g} | {p['compute']:.4g} | "
              f"{' | '.join(cell(p, m) for m in METRIC_COLUMNS)} |" for p in chosen]
    return "\n".join(lines)


def write_outputs(out: Path, runs, ids, results, costs, *, grid, scale, scores, studies, command, notes) -> dict:
    """Everything reproduce.py makes of its runs' results: runs.csv and runs.json, the figures, and summary.md
    (how it was run, the settings, the recommendations' and findings' verdicts with their numbers, the filter's
    precision at micro scale, a table and the figures per study, what was not covered); the verdicts printed.
    scores: {which scorer: its score file or None}."""
    rows = rows_for(runs, ids, results, costs)
    points = [p for p in aggregate(rows) if p["zeroshot"] is not None or p["probe"] is not None]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "runs.json").write_text(json.dumps({"runs": rows, "points": points}, indent=1))
    figures, (checks, judged) = draw_figures(points, out, len(grid.seeds)), judge(points, grid, scale)
    micro = scale.base_arch.endswith("-micro")
    recs = [c for c in checks if c.study == "recommendations" and c.verdict != findings.NOT_TESTED]
    text = [f"# Scaling (Down) CLIP at {'micro' if micro else 'real'} scale: does it reproduce?", "",
            "Li, Xie, Cubuk (2024), \"Scaling (Down) CLIP: A Comprehensive Analysis of Data, Architecture, and "
            "Training Strategies\" (arXiv 2404.08197), reproduced by `scripts/reproduce.py`. Every setting below was "
            "fixed before the runs; nothing was re-run or tuned to make a result agree.", "", f"Command: {command}", "",
            "Compute is training FLOPs per sample (forward + backward, one multiply-add = 2 FLOPs, tinyclip/flops.py) "
            "times samples seen. Verdicts follow one rule fixed in advance (scripts/findings.py): a difference counts "
            "only when it exceeds the standard error of the difference over seeds; otherwise it is *inconclusive*. "
            "Numbers are percentages, mean ± standard deviation over seeds.", "", "## Settings", "", "| | |",
            "|---|---|"]
    text += [f"| {k} | {v} |" for k, v in settings_table(scale, grid)]
    if recs:
        text += ["", "## The paper's recommendations", "", markdown_table(recs)]
    tested = [h for h in judged if h.verdict != findings.NOT_TESTED]
    text += ["", "## The paper's findings, one by one", "",
             markdown_table([c for c in checks if c.study in studies], tested)]
    if tested:
        text += ["", "## Testing the explanations", "", "Each explanation offered for a finding that did not "
                 "reproduce, with a test fixed before the runs that could refute it (study `hypotheses`, or the "
                 "study named); the same rule decides.", "", hypotheses_table(tested)]
    ranked = {name: path for name, path in (scores or {}).items() if path and Path(path).exists()}
    if micro and ranked:
        text += ["", "## The quality filter"]
        for name, path in ranked.items():
            share = filter_precision(grid, path)
            text += ["", f"{name[0].upper() + name[1:]}: {share[0].lower() + share[1:]}"]
    text += ["", "## Results", ""]
    for study in (s for s in STUDIES if any(p["study"] == s for p in points)):
        text += [f"### {study}", "", points_table(points, study), ""]
        text += [f"![{f.stem}]({f.name})" for f in figures if f.stem.startswith(study)] + [""]
    text += ["## Not covered", ""] + [f"- {n}" for n in notes]
    (out / "summary.md").write_text("\n".join(text) + "\n")
    for check in checks + judged:
        print(f"  {check.key:4s} {check.verdict:12s} {check.claim[:90]}")
    print(f"wrote {out / 'summary.md'}, {out / 'runs.csv'}, {len(figures)} figures")
    return {"rows": rows, "points": points, "findings": checks, "hypotheses": judged, "out": out}


def markdown_table(checks, tested=()) -> str:
    """| id | the paper's finding | micro-scale evidence | verdict |, then why those that do not agree may not:
    the explanations tested (scripts/hypotheses.py's rows, judged) by their results, then the caveats untested."""
    clean = lambda text: text.replace("|", "/")
    lines = ["| | Paper (PAPER.md) | Micro-scale result | Verdict |", "|---|---|---|---|"]
    lines += [f"| {c.key} | {clean(c.claim)} | {'<br>'.join(map(clean, c.evidence)) or '-'} | **{c.verdict}** |"
              for c in checks]
    notes = []
    for c in checks:
        explained = [h for h in tested if c.key in h.explains and h.verdict != findings.NOT_TESTED]
        if c.verdict not in (findings.DISAGREES, findings.INCONCLUSIVE, findings.PARTLY) or not (c.caveat or explained):
            continue
        said = [f"Tested, {h.key} {h.verdict}: {h.claim}" for h in explained]
        notes.append(f"- **{c.key}** ({c.verdict}): " + " ".join(said + [f"Not tested: {c.caveat}"] * bool(c.caveat)))
    if notes:
        lines += ["", "Why a finding may not show at this scale (the hypotheses tested below, by their results, "
                      "then the explanations no run has tested):", ""] + notes
    return "\n".join(lines)


def hypotheses_table(judged) -> str:
    """| id | findings | hypothesis | test | result | verdict |: each explanation with the runs that could refute it."""
    clean = lambda text: text.replace("|", "/")
    lines = ["| | Explains | Hypothesis | Test (fixed before the runs) | Result | Verdict |", "|---|---|---|---|---|---|"]
    lines += [f"| {h.key} | {', '.join(h.explains)} | {clean(h.claim)} | {clean(h.test)} | "
              f"{'<br>'.join(map(clean, h.evidence)) or '-'} | **{h.verdict}** |" for h in judged]
    return "\n".join(lines)


# --- the summary's settings ------------------------------------------------------------------------

NOT_COVERED = (
    "Natural robustness sets (ImageNet-V2/-A/-R/-Sketch/-Real, ObjectNet) at micro scale: the built-in data's "
    "stand-ins are rendering shifts of its own scenes. Few-shot accuracy is left to `eval.py --task fewshot`.",
    "The paper's scales: its runs see up to 3.4B samples of WebLI; the micro runs see at most tens of thousands of "
    "synthetic pairs, at 32 px with towers of a few hundred thousand parameters.",
    "FLIP's optional unmasked tuning stage (`train.py --tune-steps` after the masked budget; the beyond study "
    "runs the same stage for CLIPA) is not exercised at micro scale; nor are label smoothing, Adafactor (AdamW is used) and per-architecture "
    "learning-rate sweeps for the linear probe (one weight-decay search per model instead).",
)


def settings_table(scale, grid) -> list:
    """(name, value) rows: how every run was trained and evaluated (scripts/reproduce.py's Scale and Grid)."""
    def tower(arch):
        v = make_config(arch).vision
        if not arch.endswith("-micro") or v["kind"] != "vit":
            return arch
        return f"{arch} (width {v['width']}, depth {v['layers']}, heads {v['heads']}, patch {v['patch_size']})"
    adafactor = (" (big_vision's: factored second moment, beta2 min(0.999, 1 - t^-0.8), momentum 0.9; weight decay "
                 "decoupled, scaled by the schedule, not the lr)") if scale.optimizer == "adafactor" else ""
    rows = [("image tower (data and strategy studies)", tower(scale.base_arch)),
            ("image towers (architecture study)", ", ".join(map(tower, grid.arch_list))),
            ("text tower (every run)", scale.text_arch),
            ("image size / context length / embedding", f"{scale.image_size} px / {scale.context_length} tokens / "
                                                        f"{scale.embed_dim or 'preset'}"),
            ("optimizer", f"{scale.optimizer}{adafactor}, lr {scale.lr:g}, weight decay "
                          f"{scale.wd if scale.wd is not None else 'train.py default (0.1)'}, warmup "
                          f"{scale.warmup or 'train.py default (min(2000 steps, 10% of the run))'}, cosine decay"),
            ("batch", f"{scale.batch_size} (FLIP {2 * scale.batch_size}: 50% of patches masked, batch doubled)"),
            ("pixels / precision", f"{scale.normalize} / {scale.precision}"),
            ("SLIP projector", f"{scale.slip_head[0]} hidden, {scale.slip_head[1]} out (SLIP's 4096/256 scaled by our "
                               f"embedding width / its 512)" if scale.slip_head else "SLIP's: 4096 hidden, 256 out"),
            ("GFLOPs per sample", "tinyclip/flops.py on the model train.py builds: SLIP counts three image passes (its "
                                  "two extra views), its projector on the two views and the text; FLIP counts half "
                                  "the patches"),
            ("seeds", ", ".join(map(str, grid.seeds))),
            ("beyond the paper", f"{grid.beyond_size} pairs, the base tower; SigLIP's sigmoid loss (bias -10, "
                                 f"temperature 10) vs softmax at batch {', '.join(map(str, grid.loss_batches))}, "
                                 f"{grid.beyond_samples[-1]:,} samples; CLIPA: the main stage at {grid.reduced[0]} px "
                                 f"and {grid.reduced[1]} tokens, then {grid.tune_fraction:g} of the budget's samples at "
                                 f"full size (tune lr = lr / 10), vs full size at equal FLOPs; LiT: the image tower of a "
                                 f"CLIP trained on {grid.lit_init_samples:,} samples of `{grid.lit_init_data}` (disjoint "
                                 f"pairs), locked, text tower from scratch, vs both from scratch")]
    if scale.base_arch.endswith("-micro"):
        rows += [("evaluation", f"zero-shot top-1 on {scale.eval_size} held-out images, {scale.label_set} label set "
                                f"(49 classes, chance 2%); retrieval R@1 = mean of image->text and text->image over "
                                f"the same images (5 captions each); linear probe: L-BFGS logistic regression on "
                                f"{scale.probe_train} training images, weight decay chosen on a held-out 20%; "
                                f"robustness (quantity and architecture studies): the mean zero-shot top-1 over "
                                f"{len(scale.robust_styles)} shifted renderings of {scale.robust_size} held-out "
                                f"images each ({', '.join(scale.robust_styles)}: tinyclip/render.py's styles)"),
                 ("quality pool and scorer",
                  f"{grid.quality_pool} pairs, noise={grid.quality_noise} (that fraction has a wrong caption); scorer: "
                  f"{scale.base_arch} CLIP trained on {grid.scorer_samples:,} samples of a disjoint, cleaner pool "
                  f"`{grid.scorer_data}` (playing the off-the-shelf CLIP the paper does not name); pairs ranked by "
                  f"mean image-caption cosine (eval.py --task score)" + (
                      f"; H5's stronger scorer: the same, trained on {4 * grid.scorer_samples:,} samples"
                      if grid.hypotheses else ""))]
    return rows


def filter_precision(grid, scores: Path) -> str:
    """Synthetic pool only: the share of clean pairs among the top fractions kept (the scorer's quality)."""
    pool = SyntheticPairs("train", size=grid.quality_pool, noise=grid.quality_noise)
    clean = {m["key"]: m["clean"] for m in map(pool.meta, range(len(pool)))}
    ranked = sorted(read_scores(str(scores)).items(), key=lambda kv: (-kv[1], kv[0]))
    share = lambda f: sum(clean[k] for k, _ in ranked[:round(f * len(ranked))]) / round(f * len(ranked))
    return (f"Share of clean pairs among those kept (the pool is {100 * (1 - grid.quality_noise):.0f}% clean): "
            + ", ".join(f"top {round(100 * f)}%: {100 * share(f):.1f}%" for f in grid.quality_fractions))


# --- figures --------------------------------------------------------------------------------------

# (study, regime or its first word(s) or None for all, title, x axes): one figure each
ALONG = (("samples_seen", "samples seen"), ("compute", "total compute (GFLOPs)"))
FIGURES = (("quantity", None, "Data quantity: one line per dataset size, more epochs to the right", ALONG),
           ("quality", None, "Data quality: one line per kept fraction (one epoch, then equal samples seen)", ALONG),
           ("architecture", None, "Architecture: one line per image tower", ALONG),
           ("strategy", "one-epoch", "Training strategy, one epoch per subset", ALONG),
           ("strategy", "multi-epoch", "Training strategy, several epochs per subset", ALONG),
           ("beyond", "loss:", "SigLIP's sigmoid loss vs softmax, equal samples seen", (("batch_size", "global batch"),)),
           ("beyond", "tokens:", "CLIPA: reduced tokens + full-size tuning vs full size (equal FLOPs)", ALONG),
           ("beyond", "lit:", "LiT: a locked pretrained image tower vs both towers from scratch", ALONG))
PANELS = {"zeroshot": ("zero-shot, held-out split", "top-1 error (%)"), "probe": ("linear probe", "top-1 error (%)"),
          "retrieval": ("retrieval (image->text, text->image)", "100 - R@1 (%)")}


def draw_figures(points, out: Path, seeds: int) -> list:
    """A figure per FIGURES entry: zero-shot, probe and retrieval error, a row of three panels per x axis."""
    paths = []
    for study, regime, title, along in FIGURES:
        chosen = [p for p in points if p["study"] == study and p["regime"].startswith(regime or "")]
        if not chosen:
            continue
        order = sorted(chosen, key=lambda p: (p["dataset_size"] or 0, p["keep_top"] or 0))
        names = list(dict.fromkeys(p["setting"] for p in order))
        panels = [line_chart([Series(s, [(p[x], None if p[m] is None else 100 * (1 - p[m]), 100 * p[m + "_std"])
                                         for p in chosen if p["setting"] == s]) for s in names],
                             title=label, x_label=x_label, y_label=y_label)
                  for x, x_label in along for m, (label, y_label) in PANELS.items()]
        path = out / (study + (f"-{regime.strip(':')}" if regime else "") + ".png")
        title = f"{title} (mean ± std over {seeds} seeds)"
        save(figure(panels, columns=3, title=title, legend=[Series(s) for s in names]), path)
        paths.append(path)
    return paths


# --- line charts with Pillow -------------------------------------------------------------------------

# tab10, the colours most plotting libraries (and the paper's figures) cycle through; every 10 lines the marker
# changes: a circle, then regular polygons (sides, rotation): a square, a triangle, a diamond
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MARKERS = (None, (4, 0), (3, 0), (4, 45))
BACKGROUND, INK, GRID = "white", (30, 30, 30), (228, 228, 228)


@dataclass
class Series:
    """One line: its legend label and (x, y, y_error) points; colour and marker follow its position."""
    label: str
    points: list = field(default_factory=list)


def font(size: int):
    """DejaVu Sans where the system has it, else Pillow's bundled font (scalable from Pillow 10.1)."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow 10.0: a fixed small bitmap font
            return ImageFont.load_default()


def si(value: float) -> str:
    """1500 -> '1.5k', 2e6 -> '2M', 0.05 -> '0.05': short tick labels."""
    scale, suffix = next(((s, x) for s, x in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")) if abs(value) >= s),
                         (1, ""))
    return f"{value / scale:.3g}{suffix}" if value else "0"


def log_ticks(lo: float, hi: float, fallback=()) -> list:
    """1-2-5 ticks inside [lo, hi] (lo > 0), powers of ten alone on a wide range; on a narrow range 1-9
    ticks, or else the `fallback` values (the data's own x values) rounded to 2 significant digits."""
    exponents = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    inside = lambda mantissas: [m * 10.0 ** e for e in exponents for m in mantissas
                                if lo * (1 - 1e-9) <= m * 10.0 ** e <= hi * (1 + 1e-9)]
    ticks = inside((1, 2, 5))
    ticks = (inside((1,)) or ticks) if len(ticks) > 7 else ticks if len(ticks) > 1 else inside(range(1, 10))
    return ticks if len(ticks) > 1 else sorted({float(f"{x:.2g}") for x in fallback if lo <= float(f"{x:.2g}") <= hi})


def linear_ticks(lo: float, hi: float, count: int = 5) -> list:
    """Round-numbered ticks (steps of 1, 2 or 5 x 10^k) spanning [lo, hi]."""
    hi = hi if hi > lo else lo + 1.0
    magnitude = 10 ** math.floor(math.log10((hi - lo) / count))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= (hi - lo) / count)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


def marker(draw, x, y, index, r=4):
    """The index-th series' marker, in its colour."""
    color, shape = PALETTE[index % len(PALETTE)], MARKERS[(index // len(PALETTE)) % len(MARKERS)]
    if shape:
        draw.regular_polygon((x, y, r + 1), *shape, fill=color)
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def line_chart(series, *, title, x_label, y_label, size=(420, 310)) -> Image.Image:
    """One panel: every Series as a line with markers and ±y_err bars on a log x axis. Points with x <= 0 or
    a None y are left out; an empty chart still gets its axes and a 'no data' note, so a grid has no holes."""
    (width, height), small = size, font(11)
    image = Image.new("RGB", size, BACKGROUND)
    draw, plot = ImageDraw.Draw(image), (58, 28, width - 12, height - 44)  # left, top, right, bottom
    draw.text((width // 2, 6), title, fill=INK, font=font(13), anchor="ma")
    drawn = [sorted((x, y, e or 0.0) for x, y, e in s.points if y is not None and x > 0) for s in series]
    xs = [x for pts in drawn for x, _, _ in pts]
    if not xs:
        draw.rectangle(plot, outline=INK)
        draw.text(((plot[0] + plot[2]) // 2, (plot[1] + plot[3]) // 2), "no data", fill=INK, font=small, anchor="mm")
        return image
    pad = 10 ** (0.06 * max(math.log10(max(xs) / min(xs)), 0.5))  # widen a little so markers sit inside
    x_lo, x_hi = min(xs) / pad, max(xs) * pad
    spans = [(y - e, y + e) for pts in drawn for _, y, e in pts]
    y_ticks = linear_ticks(min(lo for lo, _ in spans), max(hi for _, hi in spans))
    log_lo, log_hi = math.log10(x_lo), math.log10(x_hi)
    px = lambda x: plot[0] + (math.log10(x) - log_lo) / (log_hi - log_lo) * (plot[2] - plot[0])
    py = lambda y: plot[3] - (y - y_ticks[0]) / ((y_ticks[-1] - y_ticks[0]) or 1.0) * (plot[3] - plot[1])
    for t in y_ticks:  # grid lines, ticks and their labels
        draw.line([(plot[0], py(t)), (plot[2], py(t))], fill=GRID)
        draw.line([(plot[0] - 4, py(t)), (plot[0], py(t))], fill=INK)
        draw.text((plot[0] - 6, py(t)), f"{t:g}", fill=INK, font=small, anchor="rm")
    for t in log_ticks(x_lo, x_hi, fallback=xs):
        draw.line([(px(t), plot[1]), (px(t), plot[3])], fill=GRID)
        draw.line([(px(t), plot[3]), (px(t), plot[3] + 4)], fill=INK)
        draw.text((px(t), plot[3] + 6), si(t), fill=INK, font=small, anchor="ma")
    draw.rectangle(plot, outline=INK)
    draw.text(((plot[0] + plot[2]) // 2, height - 6), x_label + " (log scale)", fill=INK, font=small, anchor="md")
    left, top, right, bottom = draw.textbbox((0, 0), y_label, font=small)
    rotated = Image.new("RGBA", (right - left + 4, bottom - top + 6), (255, 255, 255, 0))
    ImageDraw.Draw(rotated).text((2, 1), y_label, fill=INK, font=small)
    rotated = rotated.rotate(90, expand=True)
    image.paste(rotated, (4, (plot[1] + plot[3] - rotated.height) // 2), rotated)
    for index, pts in enumerate(drawn):
        color = PALETTE[index % len(PALETTE)]
        if len(pts) > 1:
            draw.line([(px(x), py(y)) for x, y, _ in pts], fill=color, width=2)
        for x, y, e in pts:
            if e > 0:  # the error bar and its caps
                draw.line([(px(x), py(y - e)), (px(x), py(y + e))], fill=color)
                for cap in (y - e, y + e):
                    draw.line([(px(x) - 3, py(cap)), (px(x) + 3, py(cap))], fill=color)
            marker(draw, px(x), py(y), index)
    return image


def figure(panels, *, columns: int, title: str, legend) -> Image.Image:
    """Panels (same size) on a grid, with a title above and a shared legend below whose entries (marker, line,
    label) run left to right, wrapping to new rows."""
    (w, h), fnt, rows, x = panels[0].size, font(12), [[]], 10
    for index, s in enumerate(legend):
        entry = fnt.getbbox(s.label)[2] + 40
        if rows[-1] and x + entry > w * columns - 10:
            rows, x = rows + [[]], 10
        rows[-1].append((index, s.label, x))
        x += entry
    head, body = 30, h * math.ceil(len(panels) / columns)
    out = Image.new("RGB", (w * columns, head + body + 8 + 20 * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(out)
    draw.text((out.width // 2, 8), title, fill=INK, font=font(15), anchor="ma")
    for i, panel in enumerate(panels):
        out.paste(panel, ((i % columns) * w, head + (i // columns) * h))
    for r, row in enumerate(rows):
        y = head + body + 14 + 20 * r
        for index, label, x in row:
            draw.line([(x, y), (x + 24, y)], fill=PALETTE[index % len(PALETTE)], width=2)
            marker(draw, x + 12, y, index)
            draw.text((x + 30, y), label, fill=INK, font=fnt, anchor="lm")
    return out


def save(image: Image.Image, path) -> None:
    """PNG with an adaptive 128-colour palette: line art loses nothing visible and the file halves."""
    image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
