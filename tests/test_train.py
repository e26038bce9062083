"""train.py end to end on the built-in data: every strategy learns (the loss falls below chance),
two torchrun/gloo processes end with the same weights as one process, a run killed mid-way and
resumed with --resume auto ends bit-identical to an uninterrupted one, the autocast paths run,
and every bad configuration stops with a one-line error."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from tinyclip.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--arch", "vit-test", "--text-arch", "test", "--image-size", "32", "--context-length", "16",
        "--workers", "0", "--eval-data", "none", "--log-every", "1"]


def losses(out):
    return [r["loss"] for r in map(json.loads, (Path(out) / "log.jsonl").read_text().splitlines()) if "loss" in r]


def run_main(tmp_path, *extra, name="run"):
    out = tmp_path / name
    train.main(TINY + ["--out", str(out), *extra])
    return out


# -----------------------------------------------------------------------------
# learning


STRATEGY_FLAGS = {
    "clip": [],
    "flip": ["--strategy", "flip"],
    "slip": ["--strategy", "slip", "--ssl-mlp-dim", "256", "--ssl-emb-dim", "64"],
    # stacked RandAugment at 32 px needs far more than 60 steps to beat chance: the lightest preset
    "clip-aug": ["--strategy", "clip-aug", "--augment", "crop-flip"],
}


@pytest.mark.parametrize("strategy", list(STRATEGY_FLAGS))
def test_each_strategy_learns(tmp_path, strategy):
    steps, batch = 60, 16
    out = run_main(tmp_path, *STRATEGY_FLAGS[strategy], "--batch-size", str(batch),
                   "--samples-seen", str(batch * steps), "--lr", "1e-3", "--warmup", "10")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == steps and all(math.isfinite(r["loss"]) for r in log)
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)
    # the loss ends well below where it started ...
    assert mean(log[-8:], "loss") < mean(log[:3], "loss") - 0.3
    if strategy == "slip":
        # ... for SLIP mostly through its SimCLR term: at this size the CLIP term moves slower
        assert mean(log[-8:], "clip") < mean(log[:3], "clip")
    else:
        # ... and below chance, ln 16 = 2.77: image and text are matched, not just calibrated
        assert mean(log[-8:], "clip") < math.log(batch) - 0.15
    last = log[-1]
    assert last["samples_seen"] == batch * steps and last["gflops_per_sample"] > 0
    assert last["total_pflops"] == pytest.approx(last["gflops_per_sample"] * batch * steps / 1e6, rel=1e-3)


def test_flip_halves_the_image_compute_in_the_log(tmp_path):
    clip = run_main(tmp_path, "--samples-seen", "32", "--batch-size", "16", name="clip")
    flip = run_main(tmp_path, "--strategy", "flip", "--samples-seen", "32", "--batch-size", "16", name="flip")
    g = lambda out: json.loads((out / "log.jsonl").read_text().splitlines()[-1])["gflops_per_sample"]
    assert g(flip) < g(clip)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_paths_run(tmp_path, precision):
    out = run_main(tmp_path, "--precision", precision, "--batch-size", "16", "--samples-seen", "64")
    assert all(math.isfinite(x) for x in losses(out))
    ckpt = read_checkpoint(out / "ckpt.pt")
    assert all(t.dtype == torch.float32 for t in ckpt["model"].values() if t.is_floating_point())


# -----------------------------------------------------------------------------
# distributed and resume (subprocesses, as a user runs them)


def _cli(*args):
    return [sys.executable, str(ROOT / "train.py"), *TINY, *args]


def _weights(out):
    return read_checkpoint(Path(out) / "ckpt.pt")["model"]


def test_two_gloo_processes_match_one_process(tmp_path):
    common = ["--batch-size", "16", "--samples-seen", "64", "--lr", "1e-3", "--warmup", "1"]
    subprocess.run(_cli(*common, "--out", str(tmp_path / "one")), check=True, cwd=tmp_path, capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(torchrun + _cli(*common, "--out", str(tmp_path / "two"))[1:], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), abs=1e-4)
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-4), name


def test_killed_run_resumes_bit_identical(tmp_path):
    common = ["--strategy", "flip", "--batch-size", "16", "--samples-seen", str(16 * 30), "--save-every", "2",
              "--keep-checkpoints", "2"]
    subprocess.run(_cli(*common, "--out", str(tmp_path / "full")), check=True, cwd=tmp_path, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*common, "--out", str(killed)), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_00000006.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "ckpt.pt").exists(), "the run finished before it could be killed"

    subprocess.run(_cli(*common, "--out", str(killed), "--resume", "auto"), check=True, cwd=tmp_path,
                   capture_output=True)
    full, resumed = _weights(tmp_path / "full"), _weights(killed)
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert len(list((killed / "checkpoints").glob("step_*.pt"))) <= 2


def test_corrupt_newest_checkpoint_falls_back(tmp_path):
    out = run_main(tmp_path, "--batch-size", "16", "--samples-seen", str(16 * 6), "--save-every", "2",
                   "--keep-checkpoints", "0")
    (out / "ckpt.pt").unlink()
    newest = sorted((out / "checkpoints").glob("step_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])           # a half-written file
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        train.main(TINY + ["--out", str(out), "--batch-size", "16", "--samples-seen", str(16 * 6),
                           "--save-every", "2", "--resume", "auto"])
    assert read_checkpoint(out / "ckpt.pt")["step"] == 6


# -----------------------------------------------------------------------------
# bad configurations: one line each


def _error(capsys, tmp_path, *args):
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--out", str(tmp_path / "bad"), "--batch-size", "16", "--samples-seen", "32", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


@pytest.mark.parametrize("args, message", [
    (["--arch", "vit-x"], "unknown arch 'vit-x'; valid: "),
    (["--strategy", "mae"], "unknown strategy 'mae'; valid: clip, slip, flip, clip-aug"),
    (["--strategy", "clip-aug", "--augment", "mixup"], "unknown augment 'mixup'"),
    (["--augment", "randaug"], "--augment applies to --strategy clip-aug"),
    (["--strategy", "flip", "--arch", "rn-test"], "needs a ViT tower; rn-test is not one"),
    (["--accum-steps", "3"], "per-rank batch 16"),
    (["--data", "/nonexistent/pairs.csv"], "/nonexistent/pairs.csv"),
])
def test_bad_configurations(capsys, tmp_path, args, message):
    line = _error(capsys, tmp_path, *args)
    assert line.startswith("train.py: error: ") and message in line


def test_batch_not_divisible_by_world_size():
    args = train.resolve_defaults(train.parse_args(TINY + ["--batch-size", "10"]))
    with pytest.raises(train.ConfigError, match="--batch-size 10 .global. does not split over 3 ranks"):
        train.build_everything(args, 0, 3, torch.device("cpu"))


def test_out_dir_of_another_run_is_refused(capsys, tmp_path):
    run_main(tmp_path, "--batch-size", "16", "--samples-seen", "32", name="bad")
    assert "already holds a run" in _error(capsys, tmp_path)
    assert "holds a checkpoint of another run" in _error(capsys, tmp_path, "--strategy", "flip", "--resume", "auto")


def test_nan_loss_stops_naming_the_step(capsys, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train.loss_stage

    def poisoned(*a, **k):
        calls["n"] += 1
        terms = real(*a, **k)
        if calls["n"] == 4:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(train, "loss_stage", poisoned)
    line = _error(capsys, tmp_path, "--save-every", "2", "--samples-seen", str(16 * 8))
    assert "loss is nan at step 3" in line
    out = tmp_path / "bad"
    assert not (out / "ckpt.pt").exists()
    good = read_checkpoint(out / "checkpoints" / "step_00000002.pt")
    assert all(torch.isfinite(t).all() for t in good["model"].values() if t.is_floating_point())
