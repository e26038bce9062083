"""The outputs of scripts/reproduce.py: the runs table (CSV and JSON), means and standard deviations over
seeds, the figures (error vs samples seen and vs total compute, as in "Scaling (Down) CLIP", Li, Xie,
Cubuk 2024; drawn by scripts/plots.py) and the markdown summary with scripts/findings.py's verdicts.
"""
import csv
import json
import statistics
from pathlib import Path

import findings
import plots

STUDIES = ("quantity", "quality", "architecture", "strategy")
SECTIONS = {"quantity": "Data quantity", "quality": "Data quality", "architecture": "Architecture",
            "strategy": "Strategies"}  # findings.Finding.section of each study

# --- tables and figures -------------------------------------------------------------------------------

CSV_COLUMNS = ("study", "setting", "regime", "seed", "arch", "strategy", "dataset_size", "keep_top", "epochs",
               "samples_seen", "batch_size", "gflops_per_sample", "total_compute_gflops", "zeroshot_top1",
               "linear_probe_top1", "retrieval_r1", "retrieval_i2t_r1", "retrieval_t2i_r1", "wall_s", "run_id")


def aggregate(rows):
    """Mean and standard deviation over seeds per (study, setting, regime, size, samples seen): findings' points."""
    groups = {}
    for row in rows:
        key = (row["study"], row["setting"], row["regime"], row["dataset_size"], row["keep_top"], row["samples_seen"])
        groups.setdefault(key, []).append(row)
    points = []
    for members in groups.values():
        first = members[0]
        point = {k: first[k] for k in ("study", "setting", "regime", "arch", "strategy", "dataset_size", "keep_top",
                                       "epochs", "samples_seen", "gflops_per_sample")}
        point["compute"] = first["total_compute_gflops"]
        for name, column in (("zeroshot", "zeroshot_top1"), ("probe", "linear_probe_top1"), ("retrieval", "retrieval_r1")):
            values = [m[column] for m in members if m[column] is not None]
            point[name] = statistics.mean(values) if values else None
            point[name + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        point["n"] = len(members)
        points.append(point)
    return points


# (study, regime or None for all, title): one figure each
FIGURES = (("quantity", None, "Data quantity: one line per dataset size, more epochs to the right"),
           ("quality", None, "Data quality: one line per kept fraction (one epoch, then equal samples seen)"),
           ("architecture", None, "Architecture: one line per image tower"),
           ("strategy", "one-epoch", "Training strategy, one epoch per subset"),
           ("strategy", "multi-epoch", "Training strategy, several epochs per subset"))


PANELS = {"zeroshot": ("zero-shot, held-out split", "top-1 error (%)"), "probe": ("linear probe", "top-1 error (%)"),
          "retrieval": ("retrieval (image->text, text->image)", "100 - R@1 (%)")}


def draw_figures(points, out: Path, seeds: int) -> list:
    """A 2 x 3 figure per study (and regime): zero-shot, probe and retrieval error vs samples seen, vs compute."""
    paths = []
    for study, regime, title in FIGURES:
        chosen = [p for p in points if p["study"] == study and (regime is None or p["regime"] == regime)]
        if not chosen:
            continue
        settings = list(dict.fromkeys(p["setting"] for p in sorted(chosen, key=lambda p: (p["dataset_size"] or 0, p["keep_top"] or 0))))
        panels = []
        for x_key, x_label in (("samples_seen", "samples seen"), ("compute", "total compute (GFLOPs)")):
            for metric, (label, y_label) in PANELS.items():
                series = [plots.Series(s, [(p[x_key], None if p[metric] is None else 100 * (1 - p[metric]),
                                            100 * p[metric + "_std"]) for p in chosen if p["setting"] == s])
                          for s in settings]
                panels.append(plots.line_chart(series, title=label, x_label=x_label, y_label=y_label))
        legend = [plots.Series(s) for s in settings]
        name = study + (f"-{regime}" if regime else "") + ".png"
        plots.save(plots.figure(panels, columns=3, title=f"{title} (mean ± std over {seeds} seeds)", legend=legend), out / name)
        paths.append(out / name)
    return paths


def write_tables(rows, points, out: Path):
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "runs.json").write_text(json.dumps({"runs": rows, "points": points}, indent=1))


# --- the summary --------------------------------------------------------------------------------

def _fmt(value, digits=1, scale=100.0):
    return "-" if value is None else f"{scale * value:.{digits}f}"


def points_table(points, study) -> str:
    chosen = sorted((p for p in points if p["study"] == study),
                    key=lambda p: (p["regime"], p["setting"] if study in ("architecture", "strategy") else "",
                                   p["dataset_size"] or 0, p["keep_top"] or 0, p["samples_seen"]))
    lines = ["| setting | regime | pairs | epochs | samples seen | GFLOPs/sample | total GFLOPs | zero-shot top-1 | "
             "linear-probe top-1 | retrieval R@1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in chosen:
        cell = lambda m: f"{_fmt(p[m])} ± {_fmt(p[m + '_std'])}" if p[m] is not None else "-"
        lines.append(f"| {p['setting']} | {p['regime']} | {p['dataset_size'] or '-'} | {p['epochs']:g} | "
                     f"{p['samples_seen']:,} | {p['gflops_per_sample']:.4g} | {p['compute']:.4g} | {cell('zeroshot')} | "
                     f"{cell('probe')} | {cell('retrieval')} |")
    return "\n".join(lines)


def write_summary(out: Path, *, title, intro, settings, checks, points, figures, precision, notes, studies):
    """summary.md: settings, the recommendations' and findings' verdicts with their numbers, the filter's
    precision, a table and the figures per study, and what was not covered."""
    ran = {SECTIONS[s] for s in studies}
    checks = [c for c in checks if c.section in ran or c.section == "Recommendations"]
    recs = [c for c in checks if c.section == "Recommendations" and c.verdict != findings.NOT_TESTED]
    text = [f"# {title}", "", *intro, "", "## Settings", "", "| | |", "|---|---|"]
    text += [f"| {k} | {v} |" for k, v in settings]
    if recs:
        text += ["", "## The paper's recommendations", "", findings.markdown_table(recs)]
    text += ["", "## The paper's findings, one by one", "",
             findings.markdown_table([c for c in checks if c.section != "Recommendations"])]
    if precision:
        text += ["", "## The quality filter", "", precision]
    text += ["", "## Results", ""]
    for study in STUDIES:
        if any(p["study"] == study for p in points):
            text += [f"### {study}", "", points_table(points, study), ""]
            text += [f"![{f.stem}]({f.name})" for f in figures if f.stem.startswith(study)] + [""]
    text += ["## Not covered", ""] + [f"- {n}" for n in notes]
    (out / "summary.md").write_text("\n".join(text) + "\n")
