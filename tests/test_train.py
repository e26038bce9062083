"""train.py end to end on the built-in data: every strategy learns (the loss falls below chance),
two torchrun/gloo processes end with the same weights as one process, a run killed mid-way and
resumed with --resume auto ends bit-identical to an uninterrupted one, the autocast paths run,
and every bad configuration stops with a one-line error. Resuming refuses a checkpoint of other
settings or other data (naming what differs), lets reporting settings change, clears half-written
temporary files, and continues at another world size. The tuning stage is a stage of its own: FLIP's
unmasked tuning (schedule, masking, compute, resume inside it) and CLIPA's reduced tokens then full size
(batch sizes per stage, the interpolated positional embedding, compute, resume at and after the switch).
LiT: --init loads every weight or the image tower, --lock-image keeps it bit-identical while the rest
learns, with no optimiser state and a cheaper step, and resumes. --compile works under DDP with --accum-steps."""

import json
import random
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from tinyclip import train_flags
from tinyclip.checkpoint import read_checkpoint
from tinyclip.flops import gflops_per_sample
from tinyclip.model import CLIP

from test_data import write_pairs_csv, write_shards

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


def _two_processes(argv, out, cwd):
    """train.py under torchrun with 2 gloo processes into `out`: a fresh folder, or a run to resume.
    A rank could abort at exit after a finished run ("terminate called without an active exception"):
    a gloo worker thread let go of an all_gather's tensors while Python was shutting down (train.py's
    last barrier is the fix). That one crash, should it come back, is run once more from the same
    starting folder, so the assertions still need a clean run; PYTHONFAULTHANDLER prints the stacks."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    start = out.with_name(out.name + ".start")
    if out.exists():
        shutil.copytree(out, start)
    for attempt in range(2):
        done = subprocess.run(torchrun + _cli(*argv, "--out", str(out))[1:], cwd=cwd, env=env, capture_output=True,
                              text=True)
        teardown_abort = "terminate called without an active exception" in done.stderr and (out / "ckpt.pt").exists()
        if done.returncode == 0 or not teardown_abort or attempt == 1:
            return done
        shutil.rmtree(out)
        if start.exists():
            shutil.copytree(start, out)


def ranks_said(stderr: str) -> str:
    """What the ranks printed, without tqdm's progress bars: a failure's own lines, for its message."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "step/s" not in line]
    return "\n".join(lines[-80:])


def test_two_gloo_processes_match_one_process(tmp_path):
    common = ["--batch-size", "16", "--samples-seen", "64", "--lr", "1e-3", "--warmup", "1"]
    subprocess.run(_cli(*common, "--out", str(tmp_path / "one")), check=True, cwd=tmp_path, capture_output=True)
    done = _two_processes(common, tmp_path / "two", tmp_path)
    assert done.returncode == 0, ranks_said(done.stderr)
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
    args = train_flags.parse_args(TINY + ["--batch-size", "10"])
    with pytest.raises(train_flags.ConfigError, match="--batch-size 10 .global. does not split over 3 ranks"):
        train_flags.check_args(args, 3)


def test_out_dir_of_another_run_is_refused(capsys, tmp_path):
    run_main(tmp_path, "--batch-size", "16", "--samples-seen", "32", name="bad")
    assert "already holds a run" in _error(capsys, tmp_path)
    line = _error(capsys, tmp_path, "--strategy", "flip", "--resume", "auto")
    assert "is from a run with --strategy clip, not flip" in line


def test_nan_loss_stops_naming_the_step(capsys, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = CLIP.loss

    def poisoned(*a, **k):
        calls["n"] += 1
        terms = real(*a, **k)
        if calls["n"] == 4:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(CLIP, "loss", poisoned)
    line = _error(capsys, tmp_path, "--save-every", "2", "--samples-seen", str(16 * 8))
    assert "loss is nan at step 3" in line
    out = tmp_path / "bad"
    assert not (out / "ckpt.pt").exists()
    good = read_checkpoint(out / "checkpoints" / "step_00000002.pt")
    assert all(torch.isfinite(t).all() for t in good["model"].values() if t.is_floating_point())


# -----------------------------------------------------------------------------
# resuming: what may change, what is refused


class Interrupted(Exception):
    pass


def interrupt_at(monkeypatch, call):
    """Make the `call`-th train_step raise (a crash mid-run, after the checkpoints before it were written)."""
    real, calls = train.train_step, {"n": 0}

    def step(*a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            raise Interrupted
        return real(*a, **k)

    monkeypatch.setattr(train, "train_step", step)


def run_interrupted(tmp_path, monkeypatch, call, *args, name="interrupted"):
    interrupt_at(monkeypatch, call)
    with pytest.raises(Interrupted):
        run_main(tmp_path, *args, name=name)
    monkeypatch.undo()
    return tmp_path / name


RESUMABLE = ["--batch-size", "16", "--samples-seen", str(16 * 4), "--save-every", "2"]


@pytest.mark.parametrize("flag, value, saved", [
    ("--batch-size", "8", "16"), ("--seed", "1", "0"), ("--lr", "0.002", "0.001"), ("--samples-seen", "96", "64"),
    ("--warmup", "3", "0"), ("--dataset-size", "500", "None"), ("--text-arch", "small", "test"),
])
def test_resume_refuses_another_setting_naming_it(capsys, tmp_path, monkeypatch, flag, value, saved):
    out = run_interrupted(tmp_path, monkeypatch, 3, *RESUMABLE)
    changed = RESUMABLE + [flag, value]  # argparse: the last value of a flag wins
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--out", str(out), "--resume", "auto", *changed])
    assert e.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"is from a run with {flag} {saved}, not {value}" in line


def test_resume_may_change_how_the_run_reports(tmp_path, monkeypatch):
    full = run_main(tmp_path, *RESUMABLE, name="full")
    out = run_interrupted(tmp_path, monkeypatch, 3, *RESUMABLE)
    (out / "checkpoints" / ".step_00000004.pt.tmp4242").write_bytes(b"half a file")  # a writer killed mid-way
    (out / ".ckpt.pt.tmp4243").write_bytes(b"half a file")
    train.main(TINY + ["--out", str(out), "--resume", "auto", *RESUMABLE, "--log-every", "3", "--keep-checkpoints",
                       "5", "--save-every", "3"])
    assert not list(out.rglob(".*.tmp*"))
    assert all(torch.equal(a, b) for a, b in zip(_weights(full).values(), _weights(out).values()))


def test_a_run_saved_before_a_flag_existed_resumes_at_its_default(tmp_path, monkeypatch):
    full = run_main(tmp_path, *RESUMABLE, name="full")
    out = run_interrupted(tmp_path, monkeypatch, 3, *RESUMABLE)
    path = out / "checkpoints" / "step_00000002.pt"
    ckpt = torch.load(path, weights_only=True)
    for name in ("data_mode", "shuffle_buffer", "dataset_resampled", "train_num_samples", "data_retries"):
        del ckpt["args"][name]  # as a checkpoint written before stream mode came
    torch.save(ckpt, path)
    train.main(TINY + ["--out", str(out), "--resume", "auto", *RESUMABLE])
    assert all(torch.equal(a, b) for a, b in zip(_weights(full).values(), _weights(out).values()))


def test_resume_refuses_data_that_changed(capsys, tmp_path, monkeypatch):
    csv = write_pairs_csv(tmp_path / "data", 40)
    out = run_interrupted(tmp_path, monkeypatch, 3, *RESUMABLE, "--data", csv)
    write_pairs_csv(tmp_path / "data", 48)  # the same file name, eight more pairs
    with pytest.raises(SystemExit):
        train.main(TINY + ["--out", str(out), "--resume", "auto", *RESUMABLE, "--data", csv])
    assert "now selects 48 pairs, not the 40" in capsys.readouterr().err


def test_resume_at_another_world_size_continues_the_same_data(tmp_path, monkeypatch):
    # The loader's batches depend on the global batch only, and CLIP draws no random numbers in a
    # step: a run resumed on two processes ends where the uninterrupted single process does.
    common = ["--batch-size", "16", "--samples-seen", str(16 * 4), "--save-every", "2", "--lr", "1e-3",
              "--warmup", "1"]
    full = run_main(tmp_path, *common, name="full")
    out = run_interrupted(tmp_path, monkeypatch, 3, *common)
    done = _two_processes([*common, "--resume", "auto"], out, tmp_path)
    assert done.returncode == 0, ranks_said(done.stderr)
    assert "world size 1 -> 2" in done.stdout
    assert losses(out)[-2:] == pytest.approx(losses(full)[-2:], abs=1e-4)
    for name, value in _weights(full).items():
        assert torch.allclose(value, _weights(out)[name], atol=1e-4), name


# -----------------------------------------------------------------------------
# the tuning stage: FLIP's unmasked tuning, CLIPA's full-size tuning after reduced tokens


STAGE = ["--strategy", "flip", "--batch-size", "16", "--samples-seen", str(16 * 6), "--warmup", "2",
         "--tune-steps", "5", "--tune-lr", "1e-5"]
CLIPA = ["--batch-size", "16", "--samples-seen", str(16 * 6), "--warmup", "2", "--image-size", "16",
         "--context-length", "8", "--tune-steps", "4", "--tune-image-size", "32", "--tune-context-length", "16"]


def test_unmasked_tuning_is_a_stage_of_its_own(tmp_path, monkeypatch):
    ratios, real = [], train.train_step
    monkeypatch.setattr(train, "train_step", lambda *a: ratios.append(a[3]) or real(*a))
    out = run_main(tmp_path, *STAGE)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert ratios == [0.5] * 6 + [0.0] * 5
    assert [r["stage"] for r in log] == ["main"] * 6 + ["tune"] * 5
    assert log[-1]["samples_seen"] == 16 * 11
    # FLIP's schedule for the stage: warmup over 20% of it (1 step of 5), then cosine from 1e-5 to zero
    expected = [1e-5] + [0.5e-5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert [r["lr"] for r in log[6:]] == pytest.approx(expected)
    # the main run's own schedule is untouched: warmup 2, cosine over its 6 steps
    assert log[5]["lr"] == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 3 / 4)))
    # compute: the tuning steps cost an unmasked sample each
    masked, unmasked = log[0]["gflops_per_sample"], log[-1]["gflops_per_sample"]
    assert unmasked > masked
    assert log[-1]["total_pflops"] == pytest.approx((96 * masked + 80 * unmasked) / 1e6, rel=1e-4)


def test_resume_inside_the_tuning_stage_equals_uninterrupted(tmp_path, monkeypatch):
    full = run_main(tmp_path, *STAGE, "--save-every", "2", name="full")
    out = run_interrupted(tmp_path, monkeypatch, 10, *STAGE, "--save-every", "2")  # crashes in step 10 (stage)
    assert read_checkpoint(out / "checkpoints" / "step_00000008.pt")["step"] == 8
    train.main(TINY + ["--out", str(out), "--resume", "auto", *STAGE, "--save-every", "2"])
    assert all(torch.equal(a, b) for a, b in zip(_weights(full).values(), _weights(out).values()))
    assert losses(out)[-3:] == losses(full)[-3:]


def test_reduced_tokens_then_a_full_size_tuning_stage(tmp_path, monkeypatch):
    shapes, real = [], train.train_step
    monkeypatch.setattr(train, "train_step", lambda *a: shapes.append((a[2]["image"].shape[-1],
                                                                        a[2]["text"].shape[1])) or real(*a))
    out = run_main(tmp_path, *CLIPA, "--save-every", "6")
    assert shapes == [(16, 8)] * 6 + [(32, 16)] * 4  # 2 x 2 patches and 8 tokens, then 4 x 4 and 16
    before, after = read_checkpoint(out / "checkpoints" / "step_00000006.pt"), read_checkpoint(out / "ckpt.pt")
    assert before["model"]["visual.positional_embedding"].shape == (1 + 4, 64)
    assert after["model"]["visual.positional_embedding"].shape == (1 + 16, 64)
    assert before["model"]["positional_embedding"].shape == (16, 32)  # the text tower: the longer context
    assert after["config"]["image_size"] == 32 and after["config"]["context_length"] == 16
    # the positional embedding is new to the optimiser at the switch: its moments have counted 4 steps only
    steps = sorted(int(state["step"]) for state in after["optimizer"]["state"].values())
    assert steps == [4] + [10] * (len(steps) - 1)
    # compute per stage: each sample at its own stage's cost, the tuning stage's higher
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    low, full = log[0]["gflops_per_sample"], log[-1]["gflops_per_sample"]
    assert full > 2 * low
    assert log[-1]["total_pflops"] == pytest.approx((96 * low + 64 * full) / 1e6, rel=1e-4)


@pytest.mark.parametrize("crash", [7, 9])  # resumed from step 6 (at the switch) and from step 8 (inside it)
def test_resume_around_the_switch_to_full_size_equals_uninterrupted(tmp_path, monkeypatch, crash):
    full = run_main(tmp_path, *CLIPA, "--save-every", "2", name="full")
    out = run_interrupted(tmp_path, monkeypatch, crash, *CLIPA, "--save-every", "2")
    train.main(TINY + ["--out", str(out), "--resume", "auto", *CLIPA, "--save-every", "2"])
    assert all(torch.equal(a, b) for a, b in zip(_weights(full).values(), _weights(out).values()))
    assert losses(out)[-2:] == losses(full)[-2:]


# -----------------------------------------------------------------------------
# LiT: starting weights and a locked image tower


LIT = ["--batch-size", "16", "--samples-seen", str(16 * 4), "--warmup", "1", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A short run on a disjoint split of the built-in data: the image tower LiT starts from."""
    return run_main(tmp_path_factory.mktemp("pre"), "--data", "synthetic:seed=1", *LIT) / "ckpt.pt"


def test_init_loads_every_weight(tmp_path, pretrained):
    out = run_main(tmp_path, "--init", str(pretrained), *LIT, "--lr", "0")  # lr 0: the weights stay as loaded
    assert all(torch.equal(v, read_checkpoint(pretrained)["model"][k]) for k, v in _weights(out).items())


def test_locked_image_tower_stays_and_the_rest_learns(tmp_path, pretrained):
    lit = ["--init", str(pretrained), "--init-towers", "image", "--lock-image", *LIT]
    out = run_main(tmp_path, *lit)
    torch.manual_seed(0)
    fresh = train.make_model(train_flags.parse_args(TINY + LIT)).state_dict()  # the text tower's start
    start, end = read_checkpoint(pretrained)["model"], _weights(out)
    for name, value in end.items():
        if name.startswith("visual."):
            assert torch.equal(value, start[name]), name
        else:
            assert not torch.equal(value, fresh[name]), name  # it learnt, from a fresh start
    # no optimiser state for the image tower's weights
    trainable = [k for k in end if not k.startswith("visual.")]
    assert len(read_checkpoint(out / "ckpt.pt")["optimizer"]["state"]) == len(trainable)
    # a cheaper step: the image tower's backward is gone (its forward stays), and the log says so
    locked, unlocked = (train.stage_gflops(train_flags.parse_args(TINY + a))["main"] for a in (lit, LIT))
    model = train.make_model(train_flags.parse_args(TINY + LIT))
    image_forward = gflops_per_sample(model, strategy="clip", train=False)["image"]
    text_train = gflops_per_sample(model, strategy="clip")["text"]
    assert locked == pytest.approx(image_forward + text_train) and locked < unlocked
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert last["gflops_per_sample"] == pytest.approx(locked, rel=1e-4)


def test_resume_with_a_locked_image_tower_equals_uninterrupted(tmp_path, monkeypatch, pretrained):
    lit = ["--init", str(pretrained), "--init-towers", "image", "--lock-image", *LIT, "--save-every", "2"]
    full = run_main(tmp_path, *lit, name="full")
    out = run_interrupted(tmp_path, monkeypatch, 3, *lit)
    train.main(TINY + ["--out", str(out), "--resume", "auto", *lit])
    assert all(torch.equal(a, b) for a, b in zip(_weights(full).values(), _weights(out).values()))


# -----------------------------------------------------------------------------
# torch.compile under DDP with the gradient cache


def test_compile_with_two_processes_and_the_gradient_cache(tmp_path):
    common = ["--batch-size", "8", "--samples-seen", "16", "--accum-steps", "2", "--lr", "1e-3", "--warmup", "1"]
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        done = _two_processes([*common, *extra], tmp_path / name, tmp_path)
        assert done.returncode == 0, ranks_said(done.stderr)
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), abs=1e-4)
    eager, compiled = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    assert eager.keys() == compiled.keys()  # compiled in place: no _orig_mod. prefix in the checkpoint
    for name in eager:
        assert torch.allclose(eager[name], compiled[name], atol=1e-4), name


def test_the_papers_adafactor_trains(tmp_path):
    steps, batch = 40, 16
    out = run_main(tmp_path, "--optimizer", "adafactor", "--batch-size", str(batch), "--samples-seen",
                   str(batch * steps), "--lr", "3e-3", "--warmup", "5")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    args = json.loads((out / "args.json").read_text())
    assert (args["wd"], args["beta2"]) == (1e-4, 0.999)  # big_vision's decay and beta2 cap: the paper's
    first, last = sum(r["loss"] for r in log[:3]) / 3, sum(r["loss"] for r in log[-5:]) / 5
    assert last < first - 0.3
    optimizer = read_checkpoint(out / "ckpt.pt")["optimizer"]
    assert any("v_row" in state for state in optimizer["state"].values())  # factored second moments


def test_slip_trains_its_clip_view_on_slips_random_crop():
    # SLIP (main.py): RandomResizedCrop(scale 0.5-1) for the CLIP view, no flip; plain CLIP: a centre crop
    from PIL import Image
    from tinyclip.augment import make_transform
    image = Image.new("RGB", (32, 32), (255, 0, 0))
    image.paste((0, 0, 255), (16, 0, 32, 32))  # left half red, right half blue
    views = {}
    for strategy in ("clip", "slip"):
        preset = train_flags.STRATEGIES[strategy](train_flags.parse_args(["--strategy", strategy]))[0]
        views[strategy] = [make_transform(preset, 32, "pm1")(image, random.Random(seed)) for seed in range(8)]
    assert all(torch.equal(v, views["clip"][0]) for v in views["clip"])
    assert len({v[0].sum().item() for v in views["slip"]}) > 1  # random crops: the red share varies
    assert all(v[0, :, 0].mean() > 0.9 and v[2, :, -1].mean() > 0.9 for v in views["slip"])  # never mirrored


def test_a_tuning_stage_at_other_sizes_counts_the_datas_problems_once(tmp_path):
    # the loader is opened again for the tuning stage's sizes: a shard missing from the start is one problem
    spec = write_shards(tmp_path / "shards", 40, per_shard=10) + "::" + str(tmp_path / "shards" / "00099.tar")
    out = run_main(tmp_path, *CLIPA, "--data", spec)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert {r["stage"] for r in records} == {"main", "tune"}
    assert all(r["skipped"] == {"missing_shard": 1} for r in records)
