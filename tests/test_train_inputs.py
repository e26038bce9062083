"""train.py's answer to bad input and its reports, through main() as a user runs it.

Every bad flag, combination, file and dataset stops before any work with one line
`train.py: error: ...` naming the flag or file, exit 2 (a traceback is a bug); open_clip's flags
are accepted with open_clip's meaning or refused naming tinyclip's; data problems are visible at
start-up (one line about the data, a warning when shards are missing or samples skipped); and the
log records carry the time, the gradient norm, training-only samples/s and a record at a resume.
"""

import json
import tarfile
import time
import pytest
from PIL import Image

import train
from tinyclip import train_flags

TINY = ["--arch", "vit-test", "--text-arch", "test", "--image-size", "32", "--context-length", "16",
        "--workers", "0", "--eval-data", "none", "--log-every", "1", "--batch-size", "8", "--samples-seen", "16"]


def error_line(capsys, tmp_path, *args):
    """The one line train.py prints for bad input (and that it stops with exit 2, before writing a run)."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--out", str(out), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.py: error: "), err
    assert not (out / "ckpt.pt").exists()
    return err[0]


def test_init_that_does_not_fit_the_model_names_the_first_weight(capsys, tmp_path):
    train.main(TINY + ["--out", str(tmp_path / "pre")])
    capsys.readouterr()
    line = error_line(capsys, tmp_path, "--init", str(tmp_path / "pre" / "ckpt.pt"), "--embed-dim", "16")
    assert "does not fit --arch vit-test" in line and "text_projection is (32, 32) there, the model needs (32, 16)" in line


def write_csv(folder, rows, header="filepath,title", name="pairs.csv", images=()):
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / image)
    (folder / name).write_text("\n".join([header, *rows]) + "\n" if header is not None else "")
    return str(folder / name)


@pytest.mark.parametrize("args, names", [
    (["--batch-size", "0"], "--batch-size"), (["--accum-steps", "0"], "--accum-steps"),
    (["--log-every", "0"], "--log-every"), (["--save-every", "0"], "--save-every"), (["--lr", "-0.001"], "--lr"),
    (["--workers", "-1"], "--workers"), (["--image-size", "30"], "--image-size 30"),
    (["--text-arch", "bert"], "--text-arch 'bert'"), (["--context-length", "1"], "--context-length"),
    (["--keep-top", "0.4"], "--keep-top and --scores"), (["--scores", "s.csv"], "--keep-top and --scores"),
    (["--keep-top", "0", "--scores", "s.csv"], "--keep-top"), (["--keep-top", "1.5", "--scores", "s.csv"], "--keep-top"),
    (["--mask-ratio", "0.5"], "--mask-ratio is flip's"), (["--ssl-scale", "2"], "--ssl-scale is slip's"),
    (["--samples-seen", "4"], "--samples-seen 4 is less than one --batch-size 8"),
    (["--epochs", "2"], "--epochs and --samples-seen"), (["--eval-data", "/nonexistent/val"], "--eval-data"),
    (["--eval-data", "synthetic", "--eval-label-set", "animals"], "--eval-label-set"),
    (["--dataset-size", "0"], "--dataset-size"), (["--threads", "0"], "--threads"),
    (["--val-data", "x.csv"], "--val-data is open_clip's"), (["--train-num-samples", "100"], "--dataset-size"),
    (["--zeroshot-frequency", "1"], "--eval-every"), (["--lock-image"], "--lock-image"),
    (["--model", "ViT-B-32"], "--arch"), (["--resume", "yesterday"], "--resume"),
    (["--siglip"], "--loss sigmoid"), (["--pretrained", "openai"], "--init PATH"),
    (["--loss", "sigmoid", "--label-smoothing", "0.1"], "--label-smoothing applies to the softmax loss"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
    (["--tune-image-size", "64"], "--tune-image-size sets the tuning stage's size; give --tune-steps"),
    (["--tune-steps", "2", "--tune-image-size", "36"], "--tune-image-size 36 with --arch vit-test"),
    (["--tune-steps", "2", "--tune-image-size", "64", "--arch", "rn-test"], "needs a ViT image tower"),
    (["--tune-steps", "2", "--tune-context-length", "1"], "--tune-context-length must hold"),
    (["--init-towers", "image"], "--init-towers needs --init PATH"),
    (["--init", "/nonexistent/ckpt.pt"], "--init /nonexistent/ckpt.pt: no such file"),
    (["--init", __file__, "--lock-image", "--strategy", "slip"], "--lock-image freezes the image tower that SLIP"),
    (["--init", __file__], "not a checkpoint or weights file"),
])
def test_bad_flags_are_one_line(capsys, tmp_path, args, names):
    assert names in error_line(capsys, tmp_path, *args)


def test_bad_data_is_one_line_naming_the_file(capsys, tmp_path):
    cases = {
        "no column": (write_csv(tmp_path / "a", ["x.png,a caption"], header="path,caption"), "--csv-img-key"),
        "header only": (write_csv(tmp_path / "b", []), "pairs.csv"),
        "empty file": (write_csv(tmp_path / "c", [], header=None), "pairs.csv"),
        "missing images": (write_csv(tmp_path / "d", ["gone.png,a caption"]), "pairs.csv"),
        "brace": (str(tmp_path / "shards" / "{000..00"), "{000..00"),
        "no shard": (str(tmp_path / "shards" / "{000..003}.tar"), ".tar"),
    }
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar file at all" * 50)
    cases["garbage tar"] = (str(garbage), "garbage.tar")
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    cases["empty tar"] = (str(empty), "empty.tar")
    (tmp_path / "no_images").mkdir()
    cases["empty folder"] = (str(tmp_path / "no_images"), "no_images")
    for name, (data, expected) in cases.items():
        assert expected in error_line(capsys, tmp_path, "--data", data), name


def test_data_size_and_scores_checked_against_the_data(capsys, tmp_path):
    images = [f"{i}.png" for i in range(10)]
    csv = write_csv(tmp_path / "d", [f"{i},caption {i}" for i in images], images=images)
    assert "--dataset-size 20" in error_line(capsys, tmp_path, "--data", csv, "--dataset-size", "20")
    scores = tmp_path / "scores.csv"
    scores.write_text("key,score\n" + "".join(f"other{i}.png,0.5\n" for i in range(10)))
    assert str(scores) in error_line(capsys, tmp_path, "--data", csv, "--keep-top", "0.5", "--scores", str(scores))


# -----------------------------------------------------------------------------
# open_clip's flags with open_clip's meaning


def test_open_clip_flags_are_accepted_with_their_meaning():
    args = train_flags.parse_args(TINY[:-4] + ["--train-data", "pairs.csv", "--accum-freq", "2", "--grad-clip-norm", "0.5",
                                         "--precision", "amp_bf16", "--resume", "latest", "--local-loss",
                                         "--gather-with-grad", "--epochs", "3", "--csv-separator", ";"])
    assert (args.data, args.accum_steps, args.grad_clip, args.precision, args.resume) == \
        ("pairs.csv", 2, 0.5, "bf16", "auto")
    assert (args.epochs, args.csv_separator) == (3, ";")
    assert train_flags.parse_args(["--precision", "amp"]).precision == "fp16"


def test_epochs_below_one_batch_is_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:  # TINY[:-2]: without its --samples-seen
        train.main(TINY[:-2] + ["--data", "synthetic:size=24", "--epochs", "0.25", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and not (tmp_path / "run" / "ckpt.pt").exists()
    assert err[0] == "train.py: error: --epochs 0.25 of 24 pairs is 6 samples, less than one --batch-size 8"


def test_epochs_sets_the_budget_from_the_data(tmp_path):
    out = tmp_path / "run"
    train.main(TINY[:-2] + ["--data", "synthetic:size=24", "--epochs", "2", "--out", str(out)])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["samples_seen"] == 48  # 2 epochs of 24 pairs


# -----------------------------------------------------------------------------
# what a run reports


def test_start_up_line_and_warning_name_the_data(capsys, tmp_path):
    images = [f"{i}.png" for i in range(8)]
    rows = [f"{i},caption {i}" for i in images] + ["gone.png,lost", "7.png,"]  # a missing file, an empty caption
    csv = write_csv(tmp_path / "d", rows, images=images)
    train.main(TINY + ["--data", csv, "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert f"data: {csv} | 9 pairs | 16 samples = 1.78 epochs" in captured.out
    # found when the CSV is read: warned at once; found when an image is read: on the bar and at the end
    assert "train.py: warning: " in captured.err and "1 empty_caption" in captured.err
    done = [line for line in captured.out.splitlines() if line.startswith("done: ")]
    assert len(done) == 1 and "missing_file" in done[0]


def test_log_records_time_grad_norm_and_a_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    common = TINY[:-2] + ["--samples-seen", "48", "--save-every", "2", "--eval-every", "2", "--eval-data", "synthetic",
                          "--eval-size", "20", "--out", str(out)]
    real, calls = train.train_step, {"n": 0}

    def crash_in_the_fourth_step(*a):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(train, "train_step", crash_in_the_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        train.main(common)
    monkeypatch.undo()
    train.main(common + ["--resume", "auto"])
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert all({"time", "elapsed_s", "grad_norm", "eval_s", "save_s"} <= set(r) for r in steps)
    assert all(r["grad_norm"] > 0 for r in steps)
    resumed = [r for r in records if "resumed" in r]
    assert len(resumed) == 1 and resumed[0]["step"] == 2 and resumed[0]["resumed"].endswith("step_00000002.pt")
    assert steps[-1]["time"] >= resumed[0]["time"] >= steps[0]["time"]
    # the step after an eval and a checkpoint (at step 2): both timed apart from training
    after = next(r for r in steps if r["step"] == 3)
    assert after["eval_s"] > 0 and after["save_s"] > 0


def test_the_wait_for_data_is_logged_apart_and_a_slow_loader_is_named(tmp_path, monkeypatch, capsys):
    import tinyclip.data
    common = TINY + ["--batch-size", "8", "--samples-seen", str(8 * 6), "--log-every", "2"]
    real_step = train.train_step

    def slow_step(*a):  # a step that computes 0.3 s: the loader's share is small
        time.sleep(0.3)
        return real_step(*a)

    monkeypatch.setattr(train, "train_step", slow_step)
    train.main(common + ["--out", str(tmp_path / "fast")])
    assert "waited for data" not in capsys.readouterr().err
    monkeypatch.undo()
    real = tinyclip.data.assemble

    def slow(*a):  # a loader that makes every step wait 0.3 s
        time.sleep(0.3)
        return real(*a)

    monkeypatch.setattr(tinyclip.data, "assemble", slow)
    train.main(common + ["--out", str(tmp_path / "slow")])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "waited for data" in line]
    assert len(warnings) == 1 and "raise --workers (now 0)" in warnings[0] and "steps 3-4" in warnings[0]
    for name, slowed in (("fast", False), ("slow", True)):
        steps = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        assert all(r["data_s"] >= 0 and r["step_s"] > 0 for r in steps)
        if slowed:  # two steps per record, each waiting 0.3 s for its batch
            assert all(0.6 <= r["data_s"] < 0.6 + r["step_s"] + 0.5 for r in steps)
        else:  # two steps per record, each computing for 0.3 s
            assert all(0.6 <= r["step_s"] and r["data_s"] < r["step_s"] for r in steps)


def test_threads_flag_sets_torchs_threads(tmp_path):
    import torch
    before = torch.get_num_threads()
    try:
        train.main(TINY + ["--threads", "1", "--out", str(tmp_path / "run")])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_missing_shards_are_said_at_start_up(capsys, tmp_path):
    from tinyclip.data import main as data_main
    data_main(["shard", "--input", "synthetic:size=24,image_size=32", "--output", str(tmp_path / "shards"),
               "--shard-size", "8"])  # 3 shards
    train.main(TINY + ["--data", str(tmp_path / "shards" / "{00000..00009}.tar"), "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert "| 24 pairs | 3 shards, 7 missing |" in captured.out
    assert "train.py: warning: " in captured.err and "7 of 10 shards missing" in captured.err
