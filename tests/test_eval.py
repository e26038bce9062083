"""Tests for the evaluation tasks (tinyclip/tasks.py) and their command line (eval.py).

Two kinds of model are used. A tiny random tinyclip ViT, saved as a real checkpoint, drives eval.py
end to end on the synthetic data: results have the right shape, counts and ranges, JSON is written,
the score file names exactly the training pairs, and OpenAI-format weights load and run. A fake
CLIP whose features we control (an image of grey level 20*j and any text naming NAMES[j] both
encode to the unit vector e_j) gives known answers: zero-shot, retrieval and probes are exactly 1.0
where the data are consistent, and exactly 0.0 when class names are given in the wrong order, so
label order (numeric ImageNet-V2 folders, ImageNet-A-style subsets, ObjectNet-style mappings) and
score keys are checked, not just run. Bad input ends eval.py with one `eval.py: error:` line, status 2.
"""
import csv
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import eval as eval_cli
from tinyclip import tasks
from tinyclip.augment import CLIP_MEAN, CLIP_STD
from tinyclip.data import read_scores, select_indices
from tinyclip.model import create_model
from tinyclip.sources import open_source
from tinyclip.tokenizer import tokenize

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]  # one BPE token each
STEP = 20  # grey level of class j is STEP * j


# ---------------------------------------------------------------------------------------------
# Fixtures: a real tiny checkpoint, a fake model with known answers, tiny image folders

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vit-test", context_length=32)  # 32 px
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    torch.save({"model": model.state_dict(), "config": dataclasses.asdict(model.config), "optimizer": {},
                "scaler": {}, "step": 0, "samples_seen": 0, "rng": {}, "data_state": {},
                "args": {"image_size": 32, "normalize": "clip", "context_length": 32}}, path)
    return str(path)


class FakeCLIP(torch.nn.Module):
    """encode_image: grey level 20*j -> e_j; encode_text: a text holding NAMES[j]'s token -> e_j."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device
        self.config = SimpleNamespace(arch="fake", vocab_size=49408, context_length=16)
        self.visual = SimpleNamespace(image_size=16)
        self.name_ids = torch.tensor([tokenize(name)[0, 1].item() for name in NAMES])

    def encode_image(self, images):  # B, 3, S, S with CLIP's normalisation
        level = (images[:, 0].mean(dim=(1, 2)) * CLIP_STD[0] + CLIP_MEAN[0]) * 255  # B
        return F.one_hot((level / STEP).round().long(), len(NAMES)).float()  # B, K

    def encode_text(self, ids):  # B, L
        return (ids[:, :, None] == self.name_ids[None, None, :]).any(dim=1).float()  # B, K


def grey(path, j, size=12):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (STEP * j,) * 3).save(path)


def make_folder(root, classes, per_class=2):
    """root/<folder>/<i>.png holding grey level of class j, for (folder, j) in classes."""
    for folder, j in classes:
        for i in range(per_class):
            grey(root / folder / f"{i}.png", j)
    return root


def run_cli(argv, capsys):
    """eval.main(argv) expected to fail: returns its single stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err.startswith("eval.py: error: ") and "\n" not in err, err
    return err


# ---------------------------------------------------------------------------------------------
# eval.py end to end with a real (random) tiny checkpoint

def test_zeroshot_and_retrieval_on_synthetic_write_json(checkpoint, tmp_path):
    out = tmp_path / "results.json"
    results = eval_cli.main(["--checkpoint", checkpoint, "--task", "zeroshot", "retrieval", "--data", "synthetic",
                             "--size", "24", "--label-set", "shape", "--device", "cpu", "--json", str(out)])
    zeroshot = results["zeroshot"]["synthetic"]
    assert (zeroshot["n"], zeroshot["classes"]) == (24, 7)
    assert 0 <= zeroshot["top1"] <= zeroshot["top5"] <= 1
    retrieval = results["retrieval"]["synthetic"]
    assert (retrieval["images"], retrieval["captions"]) == (24, 24 * 5)  # every phrasing of every image
    for direction in ("image_to_text", "text_to_image"):
        recalls = [retrieval[f"{direction}_R@{k}"] for k in (1, 5, 10)]
        assert 0 <= recalls[0] <= recalls[1] <= recalls[2] <= 1
    assert json.loads(out.read_text()) == results
    assert results["model"]["normalize"] == "clip" and results["model"]["image_size"] == 32


def test_probes_on_synthetic(checkpoint, tmp_path):
    results = eval_cli.main(["--checkpoint", checkpoint, "--task", "linear-probe", "fewshot", "--data", "synthetic",
                             "--label-set", "shape", "--size", "30", "--train-size", "84", "--fewshot-k", "2",
                             "--seeds", "0", "1", "--weight-decay", "0.01", "--cache", str(tmp_path / "cache")])
    probe = results["linear-probe"]["synthetic"]
    assert (probe["train"], probe["test"], probe["classes"], probe["weight_decay"]) == (84, 30, 7, 0.01)
    assert 0 <= probe["top1"] <= 1
    fewshot = results["fewshot"]["synthetic"]
    assert set(fewshot) == {"2-shot", "classes"} and len(fewshot["2-shot"]["per_seed"]) == 2
    assert len(list((tmp_path / "cache").glob("image-*.pt"))) == 2  # train and test features, shared by both tasks


def test_score_names_every_training_pair(checkpoint, tmp_path, capsys):
    spec, out = "synthetic:noise=0.5,size=20", tmp_path / "scores.csv"
    results = eval_cli.main(["--checkpoint", checkpoint, "--task", "score", "--data", spec, "--out", str(out)])
    scores = read_scores(str(out))
    source = open_source(spec)  # as train.py reads it: the train split
    assert list(scores) == [source.key(i) for i in range(len(source))]
    assert all(-1 <= s <= 1 for s in scores.values()) and results["score"][spec]["scored"] == 20
    assert len(select_indices(source, keep_top=0.4, score_file=str(out))) == 8  # train.py --keep-top 0.4 works
    assert "score" in capsys.readouterr().out  # the table


def test_folders_from_the_command_line_average_and_probe(checkpoint, tmp_path):
    first = make_folder(tmp_path / "first", [("cats", 1), ("dogs", 2)], per_class=2)
    second = make_folder(tmp_path / "second", [("n01", 3), ("n02", 5)], per_class=1)
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    (tmp_path / "subset.txt").write_text("0\n1\n")
    results = eval_cli.main(["--checkpoint", checkpoint, "--data", str(first), str(second), "--classnames",
                             str(tmp_path / "names.txt"), "--class-subset", "none", str(tmp_path / "subset.txt"),
                             "--templates", "generic"])["zeroshot"]
    assert (results["first"]["n"], results["second"]["n"]) == (4, 2)
    assert results["average"]["top1"] == pytest.approx((results["first"]["top1"] + results["second"]["top1"]) / 2)
    probe = eval_cli.main(["--checkpoint", checkpoint, "--task", "linear-probe", "--train-data", str(first),
                           "--test-data", str(first), "--weight-decay", "0.1"])["linear-probe"]["first"]
    assert (probe["train"], probe["test"], probe["classes"]) == (4, 4, 2)


def test_openai_weights_run(tmp_path, capsys):
    fixture = torch.load("tests/fixtures/openai_tiny_vit.pt", weights_only=True)["state_dict"]
    path = tmp_path / "openai.pt"
    torch.save(fixture, path)
    run_cli(["--openai", str(path), "--task", "zeroshot", "--size", "8"], capsys)  # vocabulary 256: refused
    embedding = torch.zeros(49408, fixture["token_embedding.weight"].shape[1], dtype=torch.float16)
    embedding[:256] = fixture["token_embedding.weight"]  # the CLIP tokenizer's ids must fit
    torch.save({**fixture, "token_embedding.weight": embedding}, path)
    results = eval_cli.main(["--openai", str(path), "--task", "zeroshot", "--data", "synthetic", "--size", "16"])
    assert 0 <= results["zeroshot"]["synthetic"]["top1"] <= 1
    assert results["model"]["normalize"] == "clip"


# ---------------------------------------------------------------------------------------------
# Known answers with the fake model

def test_zeroshot_on_a_folder_follows_class_names(tmp_path):
    root = make_folder(tmp_path / "data", [("dogs", 3), ("cats", 7)])  # sorted: cats (label 0), dogs (1)
    (tmp_path / "names.txt").write_text("seven\nthree\n")
    right = tasks.zeroshot(FakeCLIP(), str(root), class_names=str(tmp_path / "names.txt"), templates="generic")
    assert (right["top1"], right["n"], right["classes"]) == (1.0, 4, 2)
    (tmp_path / "swapped.txt").write_text("three\nseven\n")
    assert tasks.zeroshot(FakeCLIP(), str(root), class_names=str(tmp_path / "swapped.txt"))["top1"] == 0.0
    (tmp_path / "tabs.txt").write_text("dogs\tthree\ncats\tseven\n")  # folder<TAB>name, any order
    assert tasks.zeroshot(FakeCLIP(), str(root), class_names=str(tmp_path / "tabs.txt"))["top1"] == 1.0


def test_zeroshot_reads_integer_folders_as_class_indices(tmp_path):
    root = make_folder(tmp_path / "v2", [(str(j), j) for j in range(11)], per_class=1)  # "10" sorts before "2" as text
    result = tasks.zeroshot(FakeCLIP(), str(root), class_names=NAMES, templates=["a photo of a {}."])
    assert (result["top1"], result["classes"]) == (1.0, 11)
    root = make_folder(tmp_path / "part", [("2", 2), ("10", 10)], per_class=1)  # some classes only: still 11-way
    result = tasks.zeroshot(FakeCLIP(), str(root), class_names=NAMES, templates=["a photo of a {}."])
    assert (result["top1"], result["classes"]) == (1.0, 11)
    with pytest.raises(ValueError, match="class indices"):
        tasks.zeroshot(FakeCLIP(), str(root))  # numbers are no class names


def test_zeroshot_class_subset_and_mapping(tmp_path):
    root = make_folder(tmp_path / "a", [("n01", 2), ("n02", 5)])
    (tmp_path / "subset.txt").write_text("# ImageNet-A style: the folders are these classes, in order\n2\n5\n")
    result = tasks.zeroshot(FakeCLIP(), str(root), class_names=NAMES, class_subset=str(tmp_path / "subset.txt"))
    assert (result["top1"], result["classes"]) == (1.0, 2)

    root = make_folder(tmp_path / "objectnet", [("Alarm_clock", 4), ("banana", 9), ("unmapped", 1)])
    (tmp_path / "map.json").write_text(json.dumps({"alarm clock": [3, 4], "banana": [9]}))
    result = tasks.zeroshot(FakeCLIP(), str(root), class_names=NAMES, class_subset=str(tmp_path / "map.json"))
    assert (result["top1"], result["top5"], result["n"], result["classes"]) == (1.0, None, 4, 2)


def test_retrieval_from_a_captions_json(tmp_path):
    images = []
    for j in range(4):
        grey(tmp_path / "val2014" / f"{j}.jpg", j)
        images.append({"filepath": "val2014", "filename": f"{j}.jpg", "split": "test",
                       "sentences": [{"raw": f"a photo of {NAMES[j]}"}, {"raw": f"{NAMES[j]} again"}]})
    images.append({"filepath": "train2014", "filename": "x.jpg", "split": "train", "sentences": [{"raw": "no"}]})
    (tmp_path / "karpathy.json").write_text(json.dumps({"images": images}))
    result = tasks.retrieval(FakeCLIP(), str(tmp_path / "karpathy.json"))
    assert (result["images"], result["captions"]) == (4, 8)  # the train image is not in the test split
    assert result["image_to_text_R@1"] == result["text_to_image_R@1"] == 1.0

    coco = {"images": [{"id": 7, "file_name": "val2014/2.jpg"}, {"id": 8, "file_name": "val2014/3.jpg"}],
            "annotations": [{"image_id": 8, "caption": "three"}, {"image_id": 7, "caption": "two"}]}
    (tmp_path / "captions_val.json").write_text(json.dumps(coco))
    assert tasks.retrieval(FakeCLIP(), str(tmp_path / "captions_val.json"))["text_to_image_R@1"] == 1.0


def test_score_ranks_matching_pairs_first(tmp_path):
    rows = [("img/0.png", "zero"), ("img/1.png", "four"), ("img/2.png", "two"), ("img/2.png", "ten"),
            ("img/missing.png", "five")]
    for j in range(3):
        grey(tmp_path / "img" / f"{j}.png", j)
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filepath", "title"), *rows])
    result = tasks.score(FakeCLIP(), str(tmp_path / "pairs.csv"), tmp_path / "scores.csv")
    scores = read_scores(str(tmp_path / "scores.csv"))
    # matching caption 1, wrong 0, two captions their mean, an unreadable image -inf (kept last)
    assert scores == {"img/0.png": 1.0, "img/1.png": 0.0, "img/2.png": 0.5, "img/missing.png": float("-inf")}
    assert (result["pairs"], result["scored"], result["skipped"]) == (4, 3, 1)


def test_probes_on_folders(tmp_path):
    classes = [("three", 3), ("six", 6), ("nine", 9)]
    train, test = make_folder(tmp_path / "train", classes, 4), make_folder(tmp_path / "test", classes, 2)
    assert tasks.linear_probe(FakeCLIP(), str(train), str(test), weight_decay=1e-3)["top1"] == 1.0
    result = tasks.fewshot(FakeCLIP(), str(train), str(test), ks=(2,), seeds=(0,), weight_decay=1e-3)
    assert result["2-shot"]["mean"] == 1.0 and result["classes"] == 3


# ---------------------------------------------------------------------------------------------
# One-line errors

def test_errors_are_one_line(checkpoint, tmp_path, capsys):
    assert "not found" in run_cli(["--checkpoint", str(tmp_path / "nope.pt")], capsys)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "--openai" in run_cli(["--checkpoint", str(tmp_path / "junk.pt")], capsys)
    assert "--checkpoint" in run_cli(["--openai", checkpoint], capsys)  # a tinyclip file given as OpenAI weights
    assert "unknown task 'segment'" in run_cli(["--checkpoint", checkpoint, "--task", "segment"], capsys)

    root = make_folder(tmp_path / "data", [("cats", 1), ("dogs", 2)], per_class=1)
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    err = run_cli(["--checkpoint", checkpoint, "--data", str(root), "--classnames", str(tmp_path / "names.txt")], capsys)
    assert "3 class names for 2 class folders" in err
    (tmp_path / "empty").mkdir()
    assert "no images" in run_cli(["--checkpoint", checkpoint, "--data", str(tmp_path / "empty")], capsys)
    assert "--train-data" in run_cli(["--checkpoint", checkpoint, "--task", "linear-probe", "--data", str(root)], capsys)
    assert "--out" in run_cli(["--checkpoint", checkpoint, "--task", "score"], capsys)
