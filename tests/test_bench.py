"""scripts/bench.py's arithmetic: the memory extrapolation behind the largest-batch figures, and
the choice of timed windows. (The timings themselves are benchmarks, never tests.)"""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench  # noqa: E402


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
    summary = bench.summarise(windows, max_other_load=0.1)
    assert summary["rate"] == 11.0 and summary["clean_windows"] == 3
    # With no clean window at all, the median of every window is reported (and says so).
    loaded = bench.summarise([(1.0, 0.5), (3.0, 0.6)], max_other_load=0.1)
    assert loaded["rate"] == 2.0 and loaded["clean_windows"] == 0
