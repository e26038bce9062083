"""scripts/bench.py's arithmetic: the memory extrapolation behind the largest-batch figures, and
the choice of timed windows (scripts/measure.py); and a tiny sweep reporting every section. (The
timings themselves are benchmarks, never tests.)"""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench  # noqa: E402
import measure  # noqa: E402


@pytest.mark.parametrize("k", [1, 4, 8])
def test_largest_batch_solves_the_memory_quadratic(k):
    # Memory a + b*B + c*B^2 (weights; activations; the B x B logits), measured at B and B/2.
    fixed, per_sample, per_pair = 900.0, 3.5, 2e-5
    peak = lambda batch: fixed + per_sample * batch + per_pair * batch ** 2
    budget = 16 * 1024
    got = bench.max_batch_extrapolated(256, peak(256), peak(128), per_pair, budget, k)
    exact = (-per_sample + math.sqrt(per_sample ** 2 + 4 * per_pair * (budget - fixed))) / (2 * per_pair)
    assert got == int(exact // k * k)
    assert got % k == 0 and peak(got) <= budget < peak(got + k)


def test_largest_batch_is_unknown_when_memory_does_not_grow():
    assert bench.max_batch_extrapolated(256, 1000.0, 1000.0, 0.0, 16384, 1) is None


def test_summary_uses_only_windows_free_of_other_load():
    windows = [(10.0, 0.0), (2.0, 0.9), (12.0, 0.05), (11.0, None)]
    summary = measure.summarise(windows, max_other_load=0.1)
    assert summary["rate"] == 11.0 and summary["clean_windows"] == 3
    # With no clean window at all, the median of every window is reported (and says so).
    loaded = measure.summarise([(1.0, 0.5), (3.0, 0.6)], max_other_load=0.1)
    assert loaded["rate"] == 2.0 and loaded["clean_windows"] == 0


def test_a_tiny_sweep_reports_every_section(tmp_path):
    report = bench.main(["--archs", "vit-test", "--strategies", "flip", "--precisions", "fp32", "--batch-sizes", "8",
                         "--image-size", "32", "--context-length", "16", "--text-arch", "test", "--warmup", "1",
                         "--windows", "1", "--steps-per-window", "1", "--eval-batch", "4", "--tokenizer-texts", "20",
                         "--data-images", "2", "--workers", "0", "--max-other-load", "1.0", "--peak-sizes", "256",
                         "--json", str(tmp_path / "b.json")])
    row = report["train"][0]
    assert "error" not in row, row
    # MFU is the achieved rate over the peak the same run measured, in FLOPs (one multiply-add = 2).
    assert row["tflops"] == pytest.approx(row["samples_per_s"] * row["gflops"] / 1e3)
    assert row["mfu"] == pytest.approx(row["tflops"] / report["peak_tflops"]["fp32"])
    assert report["eval"][0]["images_per_s"] > 0 and report["tokenizer"][0]["texts"] == 20
    assert {r["preset"] for r in report["data"]} >= {"none", "crop-flip", "randaug", "stacked-randaug", "simclr"}
    assert (tmp_path / "b.json").exists()
