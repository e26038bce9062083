"""Streamed tar shards (tinyclip/stream.py): samples grouped as the header index groups them, each epoch's
shards split over (rank, worker) slots with none read twice, a seeded shuffle buffer, resampling, exact
resume from any saved position (also through train.py: a run killed mid-epoch on 2 gloo processes x 2
workers ends bit-identical), and faults from local stand-ins for remote storage: a pipe: command that
fails half-way, an HTTP server on 127.0.0.1 that errors on some shards and cuts others short."""

import gzip
import http.server
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

import train
from tinyclip.augment import make_transform
from tinyclip.checkpoint import read_checkpoint
from tinyclip.data import make_train_loader
from tinyclip.shards import build_index
from tinyclip.stream import SlotStream, shard_samples, shard_urls

from test_data import add_member, jpeg_bytes, write_shard, write_shards
from test_train import TINY, _cli, ranks_said

NONE_8 = make_transform("none", 8)


def stream_keys(urls, **options):
    """The keys one slot gives out, in order, with its state after each."""
    defaults = dict(slot=0, slots=1, seed=0, buffer_size=3, resampled=False, retries=0, skipped=Counter())
    return SlotStream(urls, **{**defaults, **options})


def take(stream, n):
    out, states = [], []
    for item in stream:
        out.append(item)
        states.append(stream.state())
        if len(out) == n:
            return out, states


@pytest.fixture(scope="module")
def ten_shards(tmp_path_factory):
    """10 shards of 4 samples (keys k0000..k0039)."""
    folder = tmp_path_factory.mktemp("ten")
    write_shards(folder, 40, per_shard=4)
    return sorted(str(p) for p in folder.glob("*.tar"))


# -----------------------------------------------------------------------------
# reading, order, buffer


def test_a_stream_groups_members_as_the_index_does(tmp_path):
    shard = tmp_path / "odd.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in [("a.jpg", jpeg_bytes(1)), ("a.txt", b"cap a"), ("a.jpg", jpeg_bytes(2)),  # repeated member
                           ("sub/b.jpg", jpeg_bytes(3)), ("sub/b.txt", b"cap b"), ("sub/b.json", b"{}"),
                           ("c.txt", b"no image"), ("d.png", jpeg_bytes(4)), ("e.jpg", jpeg_bytes(5)),
                           ("e.txt", b"cap e")]:
            add_member(tar, name, data)
    streamed, skipped = Counter(), Counter()
    samples = [(key, image, text) for _, key, image, text in shard_samples(str(shard), 0, streamed, 0)]
    index = build_index([str(shard)])
    with open(shard, "rb") as f:
        data = f.read()
    indexed = [(key, data[i:i + n], data[t:t + m]) for key, (i, n), (t, m) in zip(index.keys, index.image, index.text)]
    assert samples == indexed and [k for k, *_ in samples] == ["a", "sub/b", "e"]
    assert samples[0][1] == jpeg_bytes(1)  # the first copy of a repeated member
    skipped.update(index.skipped)
    assert streamed == skipped == {"duplicate_key": 1, "missing_image": 1, "missing_caption": 1}


def test_each_epoch_splits_the_shards_over_slots_with_none_read_twice(ten_shards):
    per_epoch = {}
    for slot in range(4):  # 2 ranks x 2 workers: 10 // 4 = 2 shards each, 2 sit out each epoch
        items, _ = take(stream_keys(ten_shards, slot=slot, slots=4), 3 * 8)  # 3 epochs of 8 samples
        for epoch in range(3):
            per_epoch.setdefault(epoch, []).extend(key for _, key, _, _ in items[8 * epoch:8 * epoch + 8])
            assert all(draw.startswith(f"{epoch}:{slot}:") for draw, *_ in items[8 * epoch:8 * epoch + 8])
    for keys in per_epoch.values():
        assert len(keys) == len(set(keys)) == 32  # 8 of the 10 shards, no sample twice
    sat_out = [{f"k{i:04d}" for i in range(40)} - set(keys) for keys in per_epoch.values()]
    assert len({frozenset(s) for s in sat_out}) > 1  # a different two shards each epoch


def test_the_shuffle_buffer_is_seeded_and_mixes_across_shards(ten_shards):
    order = lambda seed, size: [k for _, k, _, _ in take(stream_keys(ten_shards, seed=seed, buffer_size=size), 40)[0]]
    runs = lambda keys: [keys[i:i + 4] for i in range(0, 40, 4)]
    shard_of = lambda key: int(key[1:]) // 4
    # a buffer of one is file order: each shard's 4 samples in a row, the shards in the epoch's permutation
    assert all(len({shard_of(k) for k in run}) == 1 and run == sorted(run) for run in runs(order(3, 1)))
    assert sorted(order(3, 8)) == sorted(order(3, 1))  # the same epoch, reordered
    assert order(3, 8) == order(3, 8) and order(3, 8) != order(4, 8)
    assert sum(len({shard_of(k) for k in run}) > 1 for run in runs(order(3, 8))) >= 5  # shards mixed


def test_a_slot_started_from_any_saved_state_goes_on_exactly(ten_shards):
    for resampled in (False, True):
        stream = stream_keys(ten_shards, slot=1, slots=3, buffer_size=5, resampled=resampled)
        items, states = take(stream, 30)  # 3 shards x 4 per epoch: crosses shards and epochs
        for k in (0, 4, 11, 12, 13, 20):
            again = stream_keys(ten_shards, slot=1, slots=3, buffer_size=5, resampled=resampled,
                                state=json.loads(json.dumps(states[k])))  # as a checkpoint stores it
            assert take(again, 30 - k - 1)[0] == items[k + 1:]


def test_resampled_draws_shards_with_replacement_forever(ten_shards):
    items, states = take(stream_keys(ten_shards, resampled=True, buffer_size=2), 120)  # 3 x the data
    keys = Counter(k for _, k, _, _ in items)
    assert max(keys.values()) > 1 and states[-1]["epoch"] == 0 and states[-1]["shard"] >= 29


def test_ranks_and_workers_of_the_loader_read_disjoint_samples(ten_shards):
    spec = "::".join(ten_shards)
    seen = []
    for rank in range(2):
        loader = make_train_loader(spec, transform=NONE_8, batch_size=2, rank=rank, world_size=2, workers=2,
                                   mode="stream", buffer_size=4, with_keys=True)
        batches = iter(loader)
        seen += [key for _ in range(8) for key in next(batches)["key"]]  # each worker's 2 shards: 8 samples
        assert set(loader.positions) == {0, 1} and loader.summary()["sit_out"] == 2
    assert len(seen) == len(set(seen)) == 32


# -----------------------------------------------------------------------------
# faults and bad input


def test_a_pipe_that_fails_half_way_is_retried_then_skipped(tmp_path, ten_shards):
    data = Path(ten_shards[0]).read_bytes()
    half = tmp_path / "half.tar"
    half.write_bytes(data[:len(data) // 2])
    tries = tmp_path / "tries"
    failing = f"pipe:echo x >> {tries}; cat {half}; exit 3"
    skipped = Counter()
    samples = list(shard_samples(failing, 0, skipped, retries=2))
    assert 0 < len(samples) < 4 and len(set(k for _, k, _, _ in samples)) == len(samples)  # each read once
    assert skipped == {"pipe_failed": 1} and len(tries.read_text().split()) == 3
    cut = Counter()
    assert len(list(shard_samples(f"pipe:cat {half}", 0, cut, retries=0))) == len(samples) and cut == {
        "truncated_shard": 1}
    good = list(shard_samples(f"pipe:cat {ten_shards[1]}", 0, Counter(), retries=0))
    assert [k for _, k, _, _ in good] == [f"k{i:04d}" for i in range(4, 8)]


def test_gzipped_shards_stream_and_storage_that_gives_nothing_stops_the_slot(tmp_path, ten_shards, monkeypatch):
    packed = tmp_path / "00000.tar.gz"
    packed.write_bytes(gzip.compress(Path(ten_shards[0]).read_bytes()))
    assert [k for _, k, _, _ in shard_samples(str(packed), 0, Counter(), 0)] == ["k0000", "k0001", "k0002", "k0003"]
    monkeypatch.setattr(SlotStream, "MAX_BARREN", 5)
    broken = stream_keys([f"pipe:exit 1 # {i}" for i in range(3)], resampled=True)
    with pytest.raises(ValueError, match="5 shards in a row gave no usable sample"):
        next(iter(broken))
    assert broken.skipped == {"pipe_failed": 5}


class _Shards(http.server.BaseHTTPRequestHandler):
    """/N.tar: shard N; /500.tar: an error; /cut.tar: a body shorter than its Content-Length."""
    files, hits = {}, Counter()

    def do_GET(self):
        name = self.path.strip("/")
        self.hits[name] += 1
        if name not in self.files:
            self.send_error(500)
            return
        data = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data) + (1000 if name == "cut.tar" else 0)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(ten_shards):
    _Shards.files = {f"{i}.tar": Path(p).read_bytes() for i, p in enumerate(ten_shards)}
    _Shards.files["cut.tar"] = Path(ten_shards[0]).read_bytes()[:3000]
    _Shards.hits.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Shards)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_errors_and_cut_bodies_are_retried_then_skipped(server, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    skipped = Counter()
    assert len(list(shard_samples(f"{server}/500.tar", 0, skipped, retries=1))) == 0
    assert skipped == {"http_error": 1} and _Shards.hits["500.tar"] == 2
    cut = list(shard_samples(f"{server}/cut.tar", 0, skipped, retries=1))
    assert skipped == {"http_error": 1, "truncated_shard": 1} and 0 < len(cut) < 4
    urls, _ = shard_urls(f"{server}/{{0..9}}.tar")
    loader = make_train_loader(f"{server}/{{0..9}}.tar::{server}/500.tar", transform=NONE_8, batch_size=4,
                               workers=0, buffer_size=2, with_keys=True, retries=0)
    keys = [k for _, batch in zip(range(11), loader) for k in batch["key"]]  # an epoch and a bit
    assert len(urls) == 10 and sorted(keys[:40]) == [f"k{i:04d}" for i in range(40)]
    assert loader.skipped["http_error"] >= 1  # the 500 shard was met in the first epoch, and the run went on


def test_stream_problems_found_before_training_are_one_line_errors(tmp_path, ten_shards, capsys):
    def error(*argv):
        with pytest.raises(SystemExit) as stop:
            train.main(TINY + ["--out", str(tmp_path / "run"), *argv])
        assert stop.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]
    assert "matches no file" in error("--data", str(tmp_path / "none" / "*.tar"), "--data-mode", "stream")
    assert "'no-such-tool' is not found" in error("--data", "pipe:no-such-tool s3://b/{0..3}.tar")
    assert "fewer than the 4 slots of 1 rank(s) x 4 worker(s)" in error(
        "--data", "::".join(ten_shards[:3]), "--data-mode", "stream", "--workers", "4")
    empty = tmp_path / "empty.tar"
    write_shard(empty, [("a", None, b"caption")])
    assert "no usable sample in the first 1 shard(s)" in error("--data", str(empty), "--data-mode", "stream")
    assert "--epochs needs the dataset's size" in error("--data", ten_shards[0], "--data-mode", "stream",
                                                        "--epochs", "1", "--batch-size", "2")
    assert "--dataset-size selects exact pairs" in error("--data", "pipe:cat {0..3}.tar", "--dataset-size", "2")
    assert "--dataset-resampled applies to --data-mode stream" in error("--dataset-resampled")
    assert "--data-mode stream reads tar shards; --data synthetic names none" in error("--data-mode", "stream")
    assert not (tmp_path / "run").exists()


# -----------------------------------------------------------------------------
# train.py: epochs in the log, and exact resume while streaming


def test_the_log_gives_epochs_as_samples_over_the_dataset_size(tmp_path, ten_shards):
    common = TINY + ["--data", "::".join(ten_shards), "--data-mode", "stream", "--batch-size", "4",
                     "--samples-seen", "48", "--dataset-resampled"]
    for extra, epoch in ((["--train-num-samples", "40"], 1.2), ([], "n/a")):
        out = tmp_path / f"run{len(extra)}"
        train.main(common + ["--out", str(out), *extra])
        assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["epoch"] == epoch


def test_a_streamed_run_resumes_only_over_the_same_slots(tmp_path, ten_shards, capsys):
    common = TINY + ["--data", os.path.dirname(ten_shards[0]), "--data-mode", "stream", "--batch-size", "4",
                     "--samples-seen", "8", "--out", str(tmp_path / "run")]
    train.main(common)
    assert "streamed over 1 slots, 10 each per epoch" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.main(common[:common.index("--workers")] + common[common.index("--workers") + 2:] +
                   ["--workers", "2", "--resume", "auto"])  # 0 and 1 worker are both one slot per rank
    assert "over 1 rank(s) x 1 --workers; stream mode resumes exactly only on the same" in capsys.readouterr().err


def test_a_streaming_run_killed_mid_epoch_resumes_bit_identical(tmp_path, ten_shards):
    """2 gloo processes x 2 workers (4 slots of 2 shards), a shuffle buffer spanning shards, SIGKILL."""
    folder = tmp_path / "shards"
    write_shards(folder, 96, per_shard=6)  # 16 shards: 4 per slot per epoch, 24 samples per slot
    common = ["--data", str(folder / "{00000..00015}.tar"), "--data-mode", "stream", "--shuffle-buffer", "5",
              "--workers", "2", "--batch-size", "8", "--samples-seen", str(8 * 20), "--save-every", "3",
              "--strategy", "flip"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    run = lambda out, *extra, **kw: subprocess.Popen(torchrun + _cli(*common, "--out", str(out), *extra)[1:],
                                                     cwd=tmp_path, env=env, **kw)

    def finished(out, *extra):
        """The run completes: exit 0, or the rare gloo abort at teardown after ckpt.pt was written
        (tests/test_train.py's _two_processes), which is not what this test is about."""
        proc = run(out, *extra, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stderr = proc.communicate()[1]
        teardown_abort = "terminate called without an active exception" in stderr and (out / "ckpt.pt").exists()
        assert proc.returncode == 0 or teardown_abort, ranks_said(stderr)

    finished(tmp_path / "full")

    killed = tmp_path / "killed"
    proc = run(killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_00000009.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-epoch (step 9 of 12 per epoch)
    proc.wait()
    assert not (killed / "ckpt.pt").exists(), "the run finished before it could be killed"
    finished(killed, "--resume", "auto")
    full, again = read_checkpoint(tmp_path / "full" / "ckpt.pt"), read_checkpoint(killed / "ckpt.pt")
    assert all(torch.equal(full["model"][k], again["model"][k]) for k in full["model"])
    assert full["data_state"]["positions"] == again["data_state"]["positions"]
    assert len(full["data_state"]["positions"]) == 2 and set(full["data_state"]["positions"][1]) == {0, 1}
