"""scripts/reproduce.py, the paper's four studies at micro scale: a smoke run of the smallest study (two
quantity points, a few steps each) writes the runs CSV with the expected columns and consistent compute,
a non-blank figure and a summary with the findings table; the real-data mode builds the paper's
train.py/eval.py commands (ViT-B/32, ViT-B text tower, 16 tokens, Adafactor, lr 1e-3, wd 1e-4, FLIP's
doubled batch); the quick grid trains every strategy on exactly the samples its row claims; GFLOPs per
sample count SLIP's projector and nothing for augmentation; the Pillow charts of scripts/report.py draw
what they are given; the agreement rule of scripts/findings.py gives known verdicts on hand-made results;
the robustness rules (Q3: still gaining where zero-shot stalls; A6: effective robustness above the study's
line) and the hypotheses' verdicts (confirmed or refuted by their tests, and quoted by the findings they
explain) give known verdicts too; a smoke run of the hypotheses and the architectures shares trainings and
scores the robustness styles; and the stored runs (results/runs.csv) give every verdict and number
results/summary.md states."""

import csv
import dataclasses
import io
import json
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageColor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import findings  # noqa: E402
import hypotheses  # noqa: E402
import report  # noqa: E402
import reproduce  # noqa: E402

# -----------------------------------------------------------------------------
# the smoke run, end to end (in a subprocess, as a user runs it)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    proc = subprocess.run([sys.executable, "scripts/reproduce.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


def test_smoke_writes_the_runs_table(smoke):
    out, _ = smoke
    with open(out / "runs.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == report.CSV_COLUMNS
    assert len(rows) == 2  # one dataset size x two epoch counts, one seed
    assert sorted(int(r["samples_seen"]) for r in rows) == [128, 256]
    for row in rows:
        assert row["study"] == "quantity" and row["arch"] == "vit-s-micro" and row["strategy"] == "clip"
        assert int(row["samples_seen"]) == int(row["dataset_size"]) * float(row["epochs"])
        assert float(row["total_compute_gflops"]) == pytest.approx(
            float(row["gflops_per_sample"]) * int(row["samples_seen"]), rel=1e-3)
        for metric in ("zeroshot_top1", "linear_probe_top1", "retrieval_r1", "retrieval_i2t_r1", "retrieval_t2i_r1"):
            assert 0.0 <= float(row[metric]) <= 1.0
        assert float(row["retrieval_r1"]) == pytest.approx((float(row["retrieval_i2t_r1"]) + float(row["retrieval_t2i_r1"])) / 2)
        assert float(row["wall_s"]) > 0
    points = json.loads((out / "runs.json").read_text())["points"]
    assert len(points) == 2 and all(p["n"] == 1 for p in points)
    # each run keeps its numbers and logs; its checkpoint is dropped once evaluated
    assert len(list(out.glob("runs/*/result.json"))) == 2 and not list(out.glob("runs/*/ckpt.pt"))


def test_smoke_draws_a_figure_and_writes_the_summary(smoke):
    out, stdout = smoke
    image = Image.open(out / "quantity.png").convert("L")
    assert image.width >= 900 and image.height >= 500
    assert (np.asarray(image) < 200).sum() > 2000  # axes, text and lines, not a blank page
    summary = (out / "summary.md").read_text()
    for text in ("## Settings", "## The paper's findings, one by one", "| Q1 |", "| Q2 |", "### quantity",
                 "![quantity](quantity.png)", "vit-s-micro", "## Not covered"):
        assert text in summary
    assert "| D1a |" not in summary  # studies that did not run are left out
    assert "Q1" in stdout and "wrote" in stdout


# -----------------------------------------------------------------------------
# the plan and the real-data commands (nothing is trained)


def test_quick_grid_trains_exactly_the_samples_each_row_claims():
    grid, scale = reproduce.PRESETS["quick"], reproduce.MICRO
    runs = reproduce.plan(grid, scale, "synthetic", reproduce.STUDIES, pool_size=grid.quality_pool)
    assert {r.study for r in runs} == set(reproduce.STUDIES) and {r.seed for r in runs} == {0, 1}
    for run in runs:  # whole steps for every strategy, FLIP's doubled batch included: equal samples seen is exact
        assert run.samples_seen % reproduce.batch_size(scale, run) == 0, run
    argvs = [reproduce.train_argv(r, scale, Path("scores.csv")) for r in runs]
    flip = next(a for a in argvs if a[a.index("--strategy") + 1] == "flip")
    assert flip[flip.index("--batch-size") + 1] == str(2 * scale.batch_size)
    # the text tower is the same for every run; trainings shared between studies are run once
    assert {a[a.index("--text-arch") + 1] for a in argvs} == {scale.text_arch}
    ids = [reproduce.train_id(a) for a in argvs]
    assert len(set(ids)) < len(ids)
    clip_9216_one_epoch = [i for r, i in zip(runs, ids) if r.strategy == "clip" and r.dataset_size == 9216
                           and r.samples_seen == 9216 and r.seed == 0 and r.study in ("quantity", "strategy")]
    assert len(clip_9216_one_epoch) == 2 and len(set(clip_9216_one_epoch)) == 1  # quantity and strategy share it


def real_dry_run(monkeypatch, *studies) -> list:
    """The lines `reproduce.py --dry-run` prints for the paper's grid on (named, absent) real data."""
    monkeypatch.setattr(reproduce, "stage_gflops", lambda *args: {"main": 1.0, "tune": 1.0})  # beside the point
    out = io.StringIO()
    with redirect_stdout(out):
        reproduce.main(["--data", "shards/{00000..00009}.tar", "--eval-data", "imagenet/val", "--retrieval-data",
                        "coco/dataset_coco.json", "--probe-train", "imagenet/train", "--probe-test", "imagenet/val",
                        "--studies", *studies, "--gpus", "8", "--dry-run", "--out", "/nonexistent"])
    return out.getvalue().splitlines()


def test_real_data_builds_the_papers_commands(monkeypatch):
    lines = real_dry_run(monkeypatch, "quantity", "strategy")
    train = [line for line in lines if "train.py" in line]
    evals = [line for line in lines if line.startswith("python eval.py")]
    assert train and all(line.startswith("torchrun --nproc_per_node=8 train.py") for line in train)
    for flag in ("--arch vit-b-32", "--text-arch vit-b", "--context-length 16", "--lr 0.001", "--wd 0.0001",
                 "--optimizer adafactor", "--normalize pm1", "--image-size 224", "--eval-data none"):
        assert all(flag in line for line in train), flag
    assert any("--strategy flip" in line and "--batch-size 32768" in line for line in train)
    assert any("--strategy clip " in line and "--batch-size 16384" in line for line in train)
    assert any("--dataset-size 25000000 " in line and "--samples-seen 50000000 " in line for line in train)
    assert any("--task zeroshot" in line and "--classnames imagenet" in line for line in evals)
    assert any("--task retrieval" in line for line in evals) and any("--task linear-probe" in line for line in evals)
    assert not Path("/nonexistent").exists()


def test_the_papers_beyond_study_fits_its_towers_on_real_data(monkeypatch):
    # CLIPA's reduced image size must divide into the ViT-B/32's patches (112 px did not: the grid stopped)
    clipa = [line for line in real_dry_run(monkeypatch, "beyond") if "--tune-image-size" in line]
    assert clipa and all("--image-size 128 " in line and "--tune-image-size 224" in line for line in clipa)


def test_a_grid_whose_towers_do_not_fit_the_images_stops_in_one_line_before_any_run(tmp_path):
    # the paper's grid on the built-in 32 px data: Swin-T needs a multiple of 224 px
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["--preset", "paper", "--studies", "architecture", "--dry-run", "--out", str(tmp_path / "r")])
    message = str(stop.value.code)
    assert message.startswith("reproduce.py: error: --preset paper") and "swin-t" in message and "\n" not in message
    assert not (tmp_path / "r").exists()


def test_gflops_count_slips_projector_and_no_augmentation():
    gflops = lambda strategy, scale=reproduce.MICRO: reproduce.stage_gflops(
        reproduce.Run("", "", "", 0, "vit-s-micro", strategy, "synthetic", None, 64), scale)["main"]
    clip = gflops("clip")
    assert gflops("clip-aug:stacked-randaug") == clip
    small_head = gflops("slip")  # a 256/16 projector
    full_head = gflops("slip", dataclasses.replace(reproduce.MICRO, slip_head=None))  # 4096/256
    assert clip < small_head < full_head  # the two extra views, then the projector on them


def test_beyond_study_compares_at_equal_samples_and_at_equal_flops():
    grid, scale = reproduce.PRESETS["quick"], reproduce.MICRO
    runs = reproduce.plan(grid, scale, "synthetic", ("beyond",), lit_init="init/ckpt.pt")
    cells = {}
    for run in runs:
        argv = reproduce.train_argv(run, scale)
        flag = lambda name, argv=argv: argv[argv.index(name) + 1] if name in argv else None
        cells.setdefault((run.seed, run.regime), {})[run.setting] = (run, reproduce.cost(run, scale), argv, flag)
    assert {regime for _, regime in cells} == {f"loss: batch {b}" for b in grid.loss_batches} | {
        regime for n in grid.beyond_samples for regime in (
            f"tokens: equal FLOPs to {n:,} full-size samples", f"lit: equal samples, {n:,}", f"lit: equal FLOPs to {n:,} samples from scratch")}
    for (_, regime), cell in cells.items():
        if regime.startswith("loss:"):  # the batch of its name, the same samples, only the loss differs
            (_, soft, _, soft_flag), (_, sig, _, sig_flag) = cell["softmax"], cell["sigmoid"]
            assert soft["samples_seen"] == sig["samples_seen"] == grid.beyond_samples[-1]
            assert soft_flag("--batch-size") == sig_flag("--batch-size") == regime.split()[-1]
            assert soft_flag("--loss") is None and sig_flag("--loss") == "sigmoid"
            continue
        (a, a_cost, _, _), (b, b_cost, _, b_flag) = cell.values()
        assert len(cell) == 2  # one budget per cell: each comparison pairs one run with one
        if regime.startswith("lit: equal samples"):
            assert a_cost["samples_seen"] == b_cost["samples_seen"]
            assert b_cost["total_compute_gflops"] < a_cost["total_compute_gflops"]  # no image backward
        else:  # equal FLOPs: the two totals differ by less than one batch at the dearer rate
            one_batch = scale.batch_size * max(a_cost["gflops_per_sample"], b_cost["gflops_per_sample"])
            assert abs(a_cost["total_compute_gflops"] - b_cost["total_compute_gflops"]) < one_batch
            assert b_cost["samples_seen"] > 2 * a_cost["samples_seen"]  # the cheaper run sees far more
        if regime.startswith("tokens:"):  # main stage reduced, then tune_fraction of the budget at full size
            assert (b_flag("--image-size"), b_flag("--context-length")) == tuple(map(str, grid.reduced))
            assert (b_flag("--tune-image-size"), b_flag("--tune-context-length")) == ("32", "16")
            assert int(b_flag("--tune-steps")) * scale.batch_size == round(grid.tune_fraction * a.samples_seen)
        if regime.startswith("lit:"):
            assert (b_flag("--init"), b_flag("--init-towers")) == ("init/ckpt.pt", "image")
            assert "--lock-image" in cell["locked image"][2] and "--init" not in cell["from scratch"][2]
    # the full-size run at the top budget is one training: the softmax point at batch 64, CLIPA's and LiT's reference
    ids = {reproduce.train_id(reproduce.train_argv(r, scale)) for r in runs if r.seed == 0 and r.samples_seen ==
           grid.beyond_samples[-1] and r.setting in ("softmax", "full size", "from scratch") and r.batch in (None, 64)}
    assert len(ids) == 1
    # without a tower to lock (real data and no --lit-init), the LiT runs are left out
    assert not [r for r in reproduce.plan(grid, scale, "synthetic", ("beyond",)) if r.init]


@pytest.fixture(scope="module")
def smoke_beyond(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke-beyond")
    proc = subprocess.run([sys.executable, "scripts/reproduce.py", "--smoke", "--studies", "beyond", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_smoke_beyond_trains_the_locked_tower_first_and_reports_b1_to_b3(smoke_beyond):
    out = smoke_beyond
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["study"] for r in rows} == {"beyond"} and all(r["zeroshot_top1"] for r in rows)  # every run ran
    by = {(r["regime"], r["setting"]): r for r in rows}
    grid = reproduce.PRESETS["smoke"]
    reduced = by[(f"tokens: equal FLOPs to {grid.beyond_samples[0]:,} full-size samples", "reduced + tuning")]  # its tuning stage's samples counted
    assert int(reduced["samples_seen"]) > grid.beyond_samples[0]
    assert float(reduced["total_compute_gflops"]) == pytest.approx(
        float(reduced["gflops_per_sample"]) * int(reduced["samples_seen"]), rel=1e-3)
    # the tower LiT locks was trained on the disjoint split and kept; the runs' own checkpoints are dropped
    assert [p.parent.name.startswith("lit-init-") for p in out.glob("runs/*/ckpt.pt")] == [True]
    console = (out / "runs" / by[(f"lit: equal samples, {grid.beyond_samples[0]:,}", "locked image")]["run_id"] / "console.log").read_text()
    assert "lit-init-" in console
    summary = (out / "summary.md").read_text()
    for text in ("| B1 |", "| B2 |", "| B3 |", "### beyond", "![beyond-loss](beyond-loss.png)",
                 "![beyond-tokens](beyond-tokens.png)", "![beyond-lit](beyond-lit.png)"):
        assert text in summary
    assert all((out / f"beyond-{part}.png").stat().st_size > 5000 for part in ("loss", "tokens", "lit"))


# -----------------------------------------------------------------------------
# the plotting helper


def test_line_chart_draws_its_series():
    series = [report.Series("a", [(1e3, 80.0, 2.0), (1e4, 60.0, 1.0)]), report.Series("b", [(2e3, 70.0, 0.0)])]
    chart = report.line_chart(series, title="t", x_label="samples seen", y_label="error (%)", size=(400, 300))
    assert chart.size == (400, 300)
    colours = {tuple(c) for c in np.asarray(chart).reshape(-1, 3)}
    assert ImageColor.getrgb(report.PALETTE[0]) in colours and ImageColor.getrgb(report.PALETTE[1]) in colours
    empty = report.line_chart([], title="t", x_label="x", y_label="y", size=(400, 300))
    assert len(np.unique(np.asarray(empty).reshape(-1, 3), axis=0)) > 1  # axes and a note, not a blank image
    grid = report.figure([chart] * 5, columns=3, title="T", legend=series)
    assert grid.width == 1200 and grid.height > 600


def test_ticks():
    assert report.log_ticks(900, 40_000) == [1000, 2000, 5000, 10_000, 20_000]
    assert report.log_ticks(119, 343, fallback=[128, 320]) == [200, 300]
    assert report.linear_ticks(41.3, 89.0) == [40, 50, 60, 70, 80, 90]
    assert [report.si(v) for v in (1500, 2e6, 0.05, 0)] == ["1.5k", "2M", "0.05", "0"]


# -----------------------------------------------------------------------------
# the agreement rule


def point(study, zeroshot, std=0.0, n=2, **fields):
    return {"study": study, "zeroshot": zeroshot, "zeroshot_std": std, "probe": zeroshot, "probe_std": std,
            "retrieval": zeroshot, "retrieval_std": std, "n": n, "setting": fields.pop("setting", "s"), **fields}


def test_decision_rule():
    a, b = point("x", 0.50, std=0.02), point("x", 0.45, std=0.02)  # margin = hypot(0.02, 0.02) / sqrt(2) = 0.02
    assert findings.beats(a, b, "zeroshot")[0] == findings.AGREES
    assert findings.beats(b, a, "zeroshot")[0] == findings.DISAGREES
    assert findings.beats(point("x", 0.46, std=0.02), b, "zeroshot")[0] == findings.INCONCLUSIVE
    A, D, I, N = findings.AGREES, findings.DISAGREES, findings.INCONCLUSIVE, findings.NOT_TESTED
    assert findings.combine([A, A, N]) == A and findings.combine([D, D]) == D and findings.combine([I, N]) == I
    assert findings.combine([A, D]) == findings.PARTLY and findings.combine([A, I]) == findings.PARTLY
    assert findings.combine([N]) == N and findings.combine([]) == N


def quantity_points(small_gain, large_gain):
    return [point("quantity", zs, std=0.005, dataset_size=size, epochs=epochs, samples_seen=size * epochs)
            for size, gain in ((1000, small_gain), (9000, large_gain))
            for epochs, zs in ((1, 0.2), (4, 0.2 + gain))]


@pytest.mark.parametrize("small_gain,large_gain,verdict", [(0.01, 0.10, findings.AGREES),
                                                            (0.10, 0.01, findings.DISAGREES),
                                                            (0.05, 0.051, findings.INCONCLUSIVE)])
def test_epochs_finding(small_gain, large_gain, verdict):
    checks = {f.key: f for f in findings.check_all(quantity_points(small_gain, large_gain), base_arch="v", vits=[])}
    assert checks["Q1"].verdict == verdict
    assert checks["R2"].verdict == verdict  # Recommendation 2 rests on Q1 alone
    assert checks["D1a"].verdict == findings.NOT_TESTED and checks["Q3"].verdict == findings.NOT_TESTED
    assert any("+1.0 pts" in e or "+10.0 pts" in e or "+5.0 pts" in e for e in checks["Q1"].evidence)


def test_quality_findings():
    values = {0.2: 0.30, 0.4: 0.40, 0.6: 0.38, 0.8: 0.36, 1.0: 0.33}
    pts = [point("quality", zs, std=0.01, keep_top=k, regime=regime, setting=f"top {round(100 * k)}%")
           for regime in ("equal-samples", "one-epoch") for k, zs in values.items()]
    checks = {f.key: f for f in findings.check_all(pts, base_arch="v", vits=[])}
    assert checks["D1a"].verdict == checks["D1b"].verdict == checks["D2"].verdict == findings.AGREES
    assert checks["D3"].verdict == findings.DISAGREES  # retrieval peaks at 40% here, not at 80%
    assert checks["R1"].verdict == findings.PARTLY
    assert "top 40% 40.0±1.0 vs top 100% 33.0±1.0" in checks["D1a"].evidence[0]


def test_equal_compute_interpolation():
    curve = [{"compute": 10.0, "zeroshot": 0.2, "zeroshot_std": 0.0, "n": 2},
             {"compute": 1000.0, "zeroshot": 0.4, "zeroshot_std": 0.0, "n": 2}]
    assert findings.interpolate(curve, 100.0, "zeroshot")[0] == pytest.approx(0.3)  # halfway in log compute
    assert findings.interpolate(curve, 5000.0, "zeroshot") is None


def test_beyond_findings_read_only_their_own_cells():
    cell = lambda regime, a, b, za, zb: [point("beyond", za, std=0.01, regime=regime, setting=a, gflops_per_sample=1.0),
                                         point("beyond", zb, std=0.01, regime=regime, setting=b, gflops_per_sample=1.0)]
    pts = cell("loss: batch 16", "sigmoid", "softmax", 0.30, 0.20) + cell("loss: batch 64", "sigmoid", "softmax", 0.35, 0.25)
    pts += cell("tokens: equal FLOPs", "reduced + tuning", "full size", 0.20, 0.40)
    pts += cell("lit: equal samples", "locked image", "from scratch", 0.50, 0.30)
    pts += cell("lit: equal FLOPs", "locked image", "from scratch", 0.30, 0.302)
    checks = {f.key: f for f in findings.check_all(pts, base_arch="v", vits=[])}
    assert checks["B1"].verdict == findings.AGREES and len(checks["B1"].evidence) == 4  # 2 cells x 2 metrics
    assert checks["B2"].verdict == findings.DISAGREES
    assert checks["B3"].verdict == findings.PARTLY  # beats at equal samples, within noise at equal FLOPs
    assert checks["S1"].verdict == findings.NOT_TESTED


def test_markdown_table_lists_caveats_of_findings_that_do_not_agree():
    checks = findings.check_all(quantity_points(0.10, 0.01), base_arch="v", vits=[])
    text = report.markdown_table([c for c in checks if c.key in ("Q1", "Q2")])
    assert text.startswith("| | Paper (PAPER.md) | Micro-scale result | Verdict |")
    assert "**disagrees**" in text and "- **Q1** (disagrees):" in text


def epoch_points(size, series, **fields):
    """Quantity points of one subset: series = ((epochs, zero-shot, robustness), ...); retrieval = zero-shot."""
    return [point("quantity", zs, std=0.005, dataset_size=size, epochs=e, samples_seen=size * e, robustness=rob,
                  robustness_std=0.005, **fields) for e, zs, rob in series]


def test_retrieval_saturation_reads_every_subset_run_past_eight_epochs():
    flat = epoch_points(1000, ((1, 0.10, None), (8, 0.30, None), (16, 0.302, None)))
    short = epoch_points(9000, ((1, 0.2, None), (4, 0.5, None)))  # not run past 8 epochs: not read
    q2 = {c.key: c for c in findings.check_all(flat + short, base_arch="v", vits=[])}["Q2"]
    assert q2.verdict == findings.AGREES and len(q2.evidence) == 1
    assert q2.evidence[0].startswith("1000 pairs, retrieval R@1 per epoch count: 1: 10.0±0.5, 8: 30.0±0.5, 16: 30.2")
    rising = epoch_points(1000, ((1, 0.10, None), (8, 0.30, None), (16, 0.40, None)))
    assert {c.key: c for c in findings.check_all(rising, base_arch="v", vits=[])}["Q2"].verdict == findings.DISAGREES
    assert {c.key: c for c in findings.check_all(short, base_arch="v", vits=[])}["Q2"].verdict == findings.NOT_TESTED


@pytest.mark.parametrize("robustness_at_16,verdict", [(0.20, findings.AGREES), (0.151, findings.INCONCLUSIVE),
                                                      (0.10, findings.DISAGREES)])
def test_robustness_keeps_improving_where_zero_shot_stalls(robustness_at_16, verdict):
    # 1000 pairs: zero-shot stalls from 8 to 16 epochs, so its robustness decides; 9000 pairs: zero-shot still
    # rises from 1 to 4 epochs, which decides nothing
    pts = epoch_points(1000, ((8, 0.30, 0.15), (16, 0.301, robustness_at_16)))
    pts += epoch_points(9000, ((1, 0.2, 0.1), (4, 0.5, 0.1)))
    q3 = {c.key: c for c in findings.check_all(pts, base_arch="v", vits=[])}["Q3"]
    assert q3.verdict == verdict
    assert "(stalled)" in q3.evidence[0] and "(still moving)" in q3.evidence[1] and q3.evidence[0].endswith(verdict)
    moving = epoch_points(9000, ((1, 0.2, 0.1), (4, 0.5, 0.3)))  # never stalls: measured, not decided
    q3 = {c.key: c for c in findings.check_all(moving, base_arch="v", vits=[])}["Q3"]
    assert q3.verdict == findings.INCONCLUSIVE and "did not stall" in q3.evidence[-1]


def test_effective_robustness_is_robustness_above_the_studys_line():
    # robustness = 0.5 x zero-shot for the ResNet; the largest ViT sits 0.02 above that line, the smallest 0.02
    # below, at either size: at equal zero-shot the larger ViT is more robust (A6 agrees), and the reverse
    arch = lambda setting, rows: [point("architecture", zs, std=0.004, setting=setting, dataset_size=size,
                                        robustness=rob, robustness_std=0.004) for size, zs, rob in rows]
    pts = arch("rn", ((1000, 0.25, 0.125), (3000, 0.35, 0.175)))
    pts += arch("ti", ((1000, 0.20, 0.08), (3000, 0.30, 0.13)))
    pts += arch("b", ((1000, 0.22, 0.13), (3000, 0.32, 0.18)))
    checks = {c.key: c for c in findings.check_all(pts, base_arch="b", vits=["ti", "b"], resnet="rn")}
    assert checks["A6"].verdict == findings.AGREES and len(checks["A6"].evidence) == 3  # the line, then 2 sizes
    assert checks["A6"].evidence[0].startswith("the study's line: robustness = ")
    swapped = [{**p, "setting": {"ti": "b", "b": "ti"}.get(p["setting"], p["setting"])} for p in pts]
    checks = {c.key: c for c in findings.check_all(swapped, base_arch="b", vits=["ti", "b"], resnet="rn")}
    assert checks["A6"].verdict == findings.DISAGREES


@pytest.mark.parametrize("flip_at_clips_batch,verdict", [(0.295, hypotheses.CONFIRMED), (0.20, hypotheses.REFUTED)])
def test_a_hypothesis_is_confirmed_or_refuted_by_its_test_and_the_finding_says_which(flip_at_clips_batch, verdict):
    # H2: FLIP at CLIP's batch is not below CLIP (within noise: confirmed; below beyond noise: refuted)
    h2 = lambda setting, zs: point("hypotheses", zs, std=0.01, setting=setting, regime="H2: FLIP at CLIP's batch",
                                   dataset_size=1000)
    s9 = lambda setting, zs: point("strategy", zs, std=0.01, setting=setting, regime="multi-epoch", dataset_size=1000,
                                   gflops_per_sample=1.0, samples_seen=4000)
    pts = [h2("clip", 0.30), h2("flip, CLIP's batch", flip_at_clips_batch), h2("flip, doubled batch", 0.2),
           s9("clip", 0.30), s9("flip", 0.20), s9("slip", 0.10)]
    checks = findings.check_all(pts, base_arch="v", vits=[])
    judged = hypotheses.check(pts, findings.roles_for(base_arch="v", vits=[]))
    hypothesis = next(c for c in judged if c.key == "H2")
    assert hypothesis.verdict == verdict and next(c for c in judged if c.key == "H1").verdict == findings.NOT_TESTED
    # S1 (disagrees, explained by H4, which is not in the table) comes first: a finding's quote reads every
    # hypothesis, not those of the findings before it
    text = report.markdown_table([c for c in checks if c.key in ("S1", "S9")], [hypothesis])
    assert f"- **S9** (disagrees): Tested, H2 {verdict}: FLIP falls short" in text and "Not tested: " in text
    assert "- **S1** (disagrees): Not tested: " in text
    assert "| H2 | S9 | FLIP falls short" in report.hypotheses_table([hypothesis])
    assert report.hypotheses_table([hypothesis]).endswith(f"| **{verdict}** |")


def test_h6_and_h9_read_the_quantity_and_quality_studies():
    # H6: retrieval flat from 16 to 32 epochs on the smallest subset (confirmed), rising (refuted); H9: the top
    # 40% above the full set at equal samples (confirmed) while below it at one epoch (D1b disagrees)
    roles = findings.roles_for(base_arch="v", vits=[])
    quality = [point("quality", zs, std=0.01, keep_top=k, regime=regime, setting=f"top {round(100 * k)}%")
               for regime, values in (("equal-samples", {0.4: 0.40, 1.0: 0.33}), ("one-epoch", {0.4: 0.2, 1.0: 0.3}))
               for k, zs in values.items()]
    for at_32, verdict in ((0.302, hypotheses.CONFIRMED), (0.40, hypotheses.REFUTED)):
        pts = epoch_points(1000, ((8, 0.20, None), (16, 0.30, None), (32, at_32, None))) + quality
        judged = {h.key: h for h in hypotheses.check(pts, roles)}
        assert judged["H6"].verdict == verdict and judged["H9"].verdict == hypotheses.CONFIRMED
        assert judged["H6"].evidence[0].endswith(f"from 16 to 32; saturated = no gain beyond seed noise: "
                                                 f"{findings.AGREES if at_32 < 0.31 else findings.DISAGREES})")
    checks = {c.key: c for c in findings.check_all(pts, base_arch="v", vits=[])}
    assert checks["D1b"].verdict == findings.DISAGREES and checks["Q2"].verdict == findings.DISAGREES
    text = report.markdown_table([checks["Q2"], checks["D1b"]], list(judged.values()))
    assert "- **Q2** (disagrees): Tested, H6 refuted: Retrieval does saturate" in text
    assert "Tested, H6 refuted" in text and "- **Q2** (disagrees): Tested, H6 refuted: " in text
    assert "Not tested" not in text.split("- **Q2**")[1].split("\n")[0]  # Q2 offers nothing untested
    assert "- **D1b** (disagrees): Tested, H9 confirmed: At one epoch" in text


@pytest.fixture(scope="module")
def smoke_hypotheses(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke-hypotheses")
    proc = subprocess.run([sys.executable, "scripts/reproduce.py", "--smoke", "--studies", "architecture",
                           "hypotheses", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


def test_smoke_hypotheses_and_robustness_end_to_end(smoke_hypotheses):
    """The hypotheses' runs share the trainings they compare with, each gets a row and a verdict in the summary,
    and the architecture runs (not the hypotheses') are scored on the four robustness styles."""
    out, stdout = smoke_hypotheses
    rows_and_trainings = re.search(r"(\d+) rows, (\d+) trainings", stdout)
    assert int(rows_and_trainings[2]) < int(rows_and_trainings[1])  # clip, flip and slip are trained once
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        assert (row["robustness_top1"] != "") == (row["study"] == "architecture"), row
    robust = json.loads((out / "runs" / rows[0]["run_id"] / "result.json").read_text())
    assert sorted(robust["robust_sets"]) == sorted(f"synthetic:style={s}" for s in reproduce.MICRO.robust_styles)
    assert robust["robustness"] == pytest.approx(sum(robust["robust_sets"].values()) / 4)
    summary = (out / "summary.md").read_text()
    assert "## Testing the explanations" in summary
    for key in ("H1", "H2", "H4"):
        row = next(line for line in summary.splitlines() if line.startswith(f"| {key} |"))
        assert row.split("|")[-2].strip().strip("*") in (hypotheses.CONFIRMED, hypotheses.REFUTED, findings.INCONCLUSIVE,
                                                         findings.PARTLY), row


def test_the_quick_grids_extra_runs_are_the_ones_its_findings_read():
    grid, scale = reproduce.PRESETS["quick"], reproduce.MICRO
    runs = reproduce.plan(grid, scale, "synthetic", reproduce.STUDIES, pool_size=grid.quality_pool)
    # Q2: epochs past 8 on the smallest subset only
    long = {(r.dataset_size, r.epochs) for r in runs if r.study == "quantity" and r.epochs > 4}
    assert long == {(grid.quantity_sizes[0], e) for e in grid.long_epochs} and max(grid.long_epochs) > 8
    # the robustness sets: every quantity and architecture run, and only those
    assert {r.study for r in runs if r.robust} == {"quantity", "architecture"}
    args = type("Args", (), {"data": "synthetic"})
    no_colour = next(r for r in runs if r.regime == "H1: no colour words" and r.strategy != "clip")
    evals = reproduce.eval_argvs(Path("run"), scale, args, no_colour)
    assert len(evals) == 1 and evals[0][evals[0].index("--label-set") + 1] == "shape"
    assert reproduce.train_argv(no_colour, scale)[reproduce.train_argv(no_colour, scale).index("--data") + 1] == \
        "synthetic:color_words=0"
    robust = reproduce.eval_argvs(Path("run"), scale, args, next(r for r in runs if r.robust))
    assert len(robust) == 2 and robust[1][robust[1].index("--data") + 1:][:4] == [
        f"synthetic:style={s}" for s in scale.robust_styles]
    # H7: the smallest multi-epoch cell at 4x the epochs, its CLIP run the quantity study's (trained once);
    # H8: the ResNet and the largest ViT at twice the image size
    h7 = [r for r in runs if r.regime.startswith("H7:") and r.seed == 0]
    assert {r.setting for r in h7} == {"clip", "clip-aug:crop-flip", "clip-aug:stacked-randaug-no-color"}
    assert {(r.dataset_size, r.epochs) for r in h7} == {(grid.strategy_multi_sizes[0], 4 * grid.strategy_multi_epochs)}
    h7_clip = reproduce.train_argv(next(r for r in h7 if r.setting == "clip"), scale)
    assert h7_clip in [reproduce.train_argv(r, scale) for r in runs if r.study == "quantity"]
    h10 = [reproduce.train_argv(r, scale) for r in runs if r.regime == "H10: no crop" and r.seed == 0]
    assert sorted(a[a.index("--augment") + 1] for a in h10) == ["crop-flip", "flip"]
    h8 = [reproduce.train_argv(r, scale) for r in runs if r.regime.startswith("H8:") and r.seed == 0]
    assert sorted(a[a.index("--arch") + 1] + " " + a[a.index("--image-size") + 1] for a in h8) == [
        f"rn-micro {2 * scale.image_size}", f"vit-b-micro {2 * scale.image_size}"]
    # H2's FLIP runs at CLIP's batch, H4's SLIP with the larger projector
    flip = next(r for r in runs if r.setting == "flip, CLIP's batch")
    assert reproduce.batch_size(scale, flip) == scale.batch_size
    slip = reproduce.train_argv(next(r for r in runs if r.setting == "slip, larger projector"), scale)
    assert slip[slip.index("--ssl-mlp-dim") + 1] == str(grid.big_slip_head[0])
    # H5: the stronger scorer's file filters its runs; its full-pool run is the quality study's (kept trains once)
    runs = reproduce.plan(grid, scale, "synthetic", reproduce.STUDIES, grid.quality_pool, None, Path("strong.csv"))
    h5 = [r for r in runs if r.regime.startswith("H5:") and r.seed == 0]
    argvs = {r.setting + " " + r.regime: reproduce.train_argv(r, scale, Path("scores.csv")) for r in h5}
    assert sorted(argvs) == ["top 100% H5: stronger scorer, one-epoch",
                             "top 20%, stronger scorer H5: stronger scorer, equal-samples",
                             "top 40%, stronger scorer H5: stronger scorer, one-epoch",
                             "top 80%, stronger scorer H5: stronger scorer, equal-samples"]
    assert all(("strong.csv" in a) == ("stronger" in k.split(" H5")[0]) for k, a in argvs.items())
    full_pool = next(r for r in runs if r.study == "quality" and r.keep_top == 1.0 and r.regime == "one-epoch"
                     and r.seed == 0)
    assert argvs["top 100% H5: stronger scorer, one-epoch"] == reproduce.train_argv(full_pool, scale,
                                                                                    Path("scores.csv"))


# -----------------------------------------------------------------------------
# the stored reproduction: results/runs.csv holds every run of the last --quick reproduction and
# results/summary.md what it concluded; the findings drawn from the runs again must be the same


def stored_rows(path):
    integers = ("seed", "dataset_size", "samples_seen", "batch_size")
    typed = lambda key, text: None if text == "" else int(text) if key in integers else (
        float(text) if re.fullmatch(r"[-+0-9.e]+", text) else text)
    with open(path) as f:
        return [{k: typed(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_stored_runs_give_the_summarys_verdicts_and_numbers():
    rows = stored_rows(ROOT / "results" / "runs.csv")
    points = [p for p in report.aggregate(rows) if p["zeroshot"] is not None or p["probe"] is not None]
    checks = sum(report.judge(points, reproduce.PRESETS["quick"], reproduce.MICRO), [])  # findings, hypotheses
    stated = {}  # key -> (evidence cell, verdict) of the summary's tables
    for line in (ROOT / "results" / "summary.md").read_text().splitlines():
        found = re.fullmatch(r"\| (\w+) \| .* \| (.*) \| \*\*(.*)\*\* \|", line)
        if found:
            stated[found[1]] = found[2], found[3]
    assert {c.key for c in checks} == set(stated)
    # the measured numbers (mean, std, differences, GFLOPs: those with a decimal point) of each finding;
    # the sentences around them may be worded differently
    numbers = lambda text: sorted(re.findall(r"[-+]?\d+\.\d+", text))
    for check in checks:
        evidence, verdict = stated[check.key]
        assert check.verdict == verdict, check.key
        assert numbers(" ".join(check.evidence)) == numbers(evidence), check.key
