"""scripts/bench.py's arithmetic: the memory extrapolation behind the largest-batch figures, and
the choice of timed windows (scripts/measure.py); that the sigmoid-loss and locked-image steps are
timed on models of their own and counted at their own GFLOPs; and a tiny sweep reporting every
section. (The timings themselves are benchmarks, never tests.)"""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench  # noqa: E402
import measure  # noqa: E402
from tinyclip import create_model  # noqa: E402
from tinyclip.flops import gflops_per_sample  # noqa: E402

TINY = dict(kind="train", arch="vit-test", text_arch="test", strategy="clip", precision="fp32", batch=8, image_size=32,
            context_length=16, warmup=1, windows=1, steps=1, max_other_load=1.0)


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


def test_sigmoid_and_locked_steps_run_their_own_models_at_their_own_flops(monkeypatch):
    stepped = []  # what each timed step trained: (SigLIP's bias present, image tower locked)

    def recording_step(model, raw_model, *rest):
        stepped.append((raw_model.logit_bias is not None, raw_model.image_locked))
        return train_step(model, raw_model, *rest)
    train_step = bench.train.train_step
    monkeypatch.setattr(bench.train, "train_step", recording_step)
    variants = [{"name": name, "flags": flags} for name, flags in bench.STEP_VARIANTS.items()]
    timed = bench.run_train({**TINY, "variants": variants})["variants"]
    assert set(stepped) == {(False, False), (True, False), (False, True)}
    assert all(timed[name]["samples_per_s"] > 0 for name in ("plain", "sigmoid loss", "locked image"))

    # The loss is not counted, so SigLIP's step costs the plain one's. A locked tower has no image backward:
    # its image forward plus the text tower's forward and backward, which saves about two thirds of the image
    # tower's training FLOPs (a backward is ~2 forwards; the patch embedding needs no input gradient).
    model = create_model("vit-test", text_arch="test", image_size=32, context_length=16)
    plain, image_forward = gflops_per_sample(model), gflops_per_sample(model, train=False)["image"]
    assert timed["plain"]["gflops"] == timed["sigmoid loss"]["gflops"] == pytest.approx(plain["total"])
    assert timed["locked image"]["gflops"] == pytest.approx(image_forward + plain["text"])
    assert plain["total"] - timed["locked image"]["gflops"] == pytest.approx(2 / 3 * plain["image"], rel=0.05)


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
    steps = {r["variant"]: r for r in report["step_variants"]}
    assert list(steps) == ["plain", "sigmoid loss", "locked image"] and steps["plain"]["vs_plain"] == 1.0
    assert steps["locked image"]["gflops"] < steps["plain"]["gflops"] == steps["sigmoid loss"]["gflops"]
    assert report["eval"][0]["images_per_s"] > 0 and report["tokenizer"][0]["texts"] == 20
    assert {r["preset"] for r in report["data"]} >= {"none", "crop-flip", "randaug", "stacked-randaug", "simclr"}
    rates = report["loader"]["images_per_s"]
    assert list(rates) == ["folder", "tar index", "tar stream"] and all(r > 0 for r in rates.values())
    assert (tmp_path / "b.json").exists()
