"""Tests for the evaluation tasks (tinyclip/evaluation.py, tinyclip/probe.py) and their command line
(eval.py).

Two kinds of model are used. A tiny random tinyclip ViT, saved as a real checkpoint, drives eval.py
end to end on the synthetic data: results have the right shape, counts and ranges, JSON is written,
the score file names exactly the training pairs, and OpenAI-format weights load and run. A fake
CLIP whose features we control (an image of grey level 20*j encodes to row j of a table, e_j by
default, and a text to the indicator of the NAMES it holds) gives known answers: zero-shot,
retrieval and probes are exactly 1.0 where the data are consistent, and exactly 0.0 when class
names are given in the wrong order, so label order (numeric ImageNet-V2 folders, ImageNet-A-style
subsets, ObjectNet-style mappings) and score keys are checked, not just run; and hand-made tables
give exact fractions for top-1/top-5 and both Recall@K directions, with ties that must count
against (pessimistic ranks), worked out by hand in the tests' comments; the per-class recall on
classes of different sizes skips classes without a test image as CLIP_benchmark (sklearn) does, and
`--metric-names clip_benchmark` gives those known answers under CLIP_benchmark's names and retrieval
directions. Bad input ends eval.py with one `eval.py: error:` line, status 2, before any work where
the flags alone show it, short for unreadable checkpoint files; --json keeps the tasks that finished.
Every result carries its provenance (data and image count, templates counted as the model encodes
them, class names, resize and crop, precision, tinyclip version and `git rev-parse HEAD`), in the JSON
and as a `# ...` line under the printed table; a missing git gives commit None, not an error.
"""
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import warnings
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import eval as eval_cli
import tinyclip
from tinyclip import evaluation, probe
from tinyclip.augment import CLIP_MEAN, CLIP_STD
from tinyclip.data import read_scores, select_indices
from tinyclip.evaluation import read_class_names
from tinyclip.model import create_model
from tinyclip.sources import open_source
from tinyclip.synthetic import label_set
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
    """encode_image: grey level 20*j -> image_table[j] (default e_j); encode_text: the indicator
    vector of the NAMES whose token the text holds (a text naming only NAMES[j] -> e_j)."""

    def __init__(self, image_table=None):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device
        self.config = SimpleNamespace(arch="fake", vocab_size=49408, context_length=16)
        self.visual = SimpleNamespace(image_size=16)
        self.name_ids = torch.tensor([tokenize(name)[0, 1].item() for name in NAMES])
        self.image_table = torch.eye(len(NAMES)) if image_table is None else image_table

    def encode_image(self, images):  # B, 3, S, S with CLIP's normalisation
        level = (images[:, 0].mean(dim=(1, 2)) * CLIP_STD[0] + CLIP_MEAN[0]) * 255  # B
        return self.image_table[(level / STEP).round().long()]  # B, K

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


@pytest.fixture
def fake_cli(monkeypatch):
    """eval.main(argv) with `model` in place of the checkpoint's (normalize "clip")."""
    def main(model, argv):
        monkeypatch.setattr(eval_cli, "load_model", lambda args: (model, {"path": "fake", "normalize": "clip"}))
        return eval_cli.main(["--checkpoint", "fake", *argv])
    return main


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


def test_zeroshot_on_the_robustness_styles_averages_them(checkpoint, tmp_path, capsys):
    """Zero-shot on several styles of the synthetic val split: each is scored on the label set's classes, the
    "average" is their unweighted mean top-1 (the paper's robustness number), and a provenance names each."""
    styles = ["synthetic:style=sketch", "synthetic:style=corrupt"]
    results = eval_cli.main(["--checkpoint", checkpoint, "--task", "zeroshot", "--data", *styles, "--size", "16",
                             "--label-set", "shape", "--device", "cpu"])["zeroshot"]
    assert [results[s]["n"] for s in styles] == [16, 16] and results[styles[0]]["classes"] == 7
    assert results["average"]["top1"] == pytest.approx(sum(results[s]["top1"] for s in styles) / 2)
    assert results[styles[1]]["provenance"]["data"] == styles[1]
    assert results[styles[1]]["provenance"]["class_names"] == "synthetic:shape"
    capsys.readouterr()
    err = run_cli(["--checkpoint", checkpoint, "--task", "zeroshot", "--data", "synthetic:noise=0.2", "--size", "16"],
                  capsys)
    assert "takes one option, style=NAME" in err


def test_json_keeps_the_finished_tasks_when_a_later_one_fails(checkpoint, tmp_path, capsys):
    root = make_folder(tmp_path / "data", [("cats", 1), ("dogs", 2)], per_class=2)  # no captions: no retrieval
    out = tmp_path / "results.json"
    with pytest.raises(SystemExit) as exit_info:  # after zeroshot ran: its progress bars come first
        eval_cli.main(["--checkpoint", checkpoint, "--task", "zeroshot", "retrieval", "--data", str(root),
                       "--templates", "generic", "--json", str(out)])
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and last_line.startswith("eval.py: error: ") and "missing_caption" in last_line
    written = json.loads(out.read_text())
    assert set(written) == {"model", "zeroshot"} and written["zeroshot"]["data"]["n"] == 4
    assert not list(tmp_path.glob(".*.tmp*"))  # written atomically: no temporary file left


@pytest.mark.parametrize("flag, where", [("--json", "a_file/results.json"), ("--json", "."),
                                         ("--out", "a_file/scores.csv")])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(flag, where, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    path = str(tmp_path / where)
    tasks = ["score", "--data", "synthetic"] if flag == "--out" else ["zeroshot"]
    with pytest.raises(SystemExit) as exit_info:  # no checkpoint is read: the refusal comes first
        eval_cli.main(["--checkpoint", str(tmp_path / "absent.pt"), "--task", *tasks, flag, path])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith(f"eval.py: error: {flag} {path}")


def test_probes_on_synthetic(checkpoint, tmp_path):
    results = eval_cli.main(["--checkpoint", checkpoint, "--task", "linear-probe", "fewshot", "--data", "synthetic",
                             "--label-set", "shape", "--size", "30", "--train-size", "84", "--fewshot-k", "2",
                             "--seeds", "0", "1", "--weight-decay", "0.01", "--cache", str(tmp_path / "cache")])
    probe = results["linear-probe"]["synthetic"]
    assert (probe["train"], probe["test"], probe["classes"], probe["weight_decay"]) == (84, 30, 7, 0.01)
    assert 0 <= probe["top1"] <= 1
    fewshot = results["fewshot"]["synthetic"]
    assert set(fewshot) == {"2-shot", "train", "test", "classes", "provenance"}
    assert len(fewshot["2-shot"]["per_seed"]) == 2
    for result in (probe, fewshot):  # the shots are drawn from the 84 training images, tested on all 30
        record = result["provenance"]
        assert (record["train_data"], record["train_images"], record["data"], record["images"]) == \
            ("synthetic", 84, "synthetic", 30)
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
# Provenance: what makes two results comparable

def git_head():
    """`git rev-parse HEAD` of the folder eval.py runs from, or None (no git, not a checkout)."""
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(eval_cli.__file__)),
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else None


def test_provenance_of_a_synthetic_zeroshot_run(checkpoint, tmp_path, capsys):
    out = tmp_path / "results.json"
    results = eval_cli.main(["--checkpoint", checkpoint, "--task", "zeroshot", "--data", "synthetic", "--size", "24",
                             "--label-set", "color", "--precision", "bf16", "--crop-ratio", "0.875", "--device", "cpu",
                             "--json", str(out)])
    record = json.loads(out.read_text())["zeroshot"]["synthetic"]["provenance"]
    templates = label_set("color")[1]  # the synthetic colour classes' own prompts
    assert (record["templates"], record["template_count"]) == ("synthetic:color", len(templates))
    assert (record["class_names"], record["class_subset"]) == ("synthetic:color", None)
    assert (record["data"], record["images"]) == ("synthetic", 24)  # --size
    assert (record["precision"], record["crop_ratio"]) == ("bf16", 0.875)  # the flags
    assert record["image_size"] == results["model"]["image_size"] == 32  # the checkpoint's
    assert (record["resize"], record["interpolation"], record["normalize"]) == (36, "bicubic", "clip")  # 32 / 0.875
    assert (record["checkpoint"], record["tinyclip"]) == (checkpoint, tinyclip.__version__)
    head = git_head()
    assert record["commit"] == head  # None where git or the checkout is missing
    line = (f"# synthetic 24 images, {len(templates)} templates (synthetic:color), class names: synthetic:color, "
            f"32 px bicubic, crop 0.875 (resize 36), clip mean/std, bf16, checkpoint {checkpoint}, "
            f"tinyclip {tinyclip.__version__} @ {head[:7] if head else 'unknown commit'}")
    assert line in capsys.readouterr().out.splitlines()  # pasted output carries it


def test_commit_is_the_checkouts_head():
    head = git_head()
    if head is None:
        pytest.skip("git or a git checkout is unavailable")
    assert eval_cli.code_version()["commit"] == head and len(head) == 40


class PromptCountingCLIP(FakeCLIP):
    """FakeCLIP that counts the class prompts it encodes."""

    def __init__(self):
        super().__init__()
        self.prompts = 0

    def encode_text(self, ids):
        self.prompts += len(ids)
        return super().encode_text(ids)


@pytest.mark.parametrize("templates, expected", [(None, ("imagenet", 80)), ("generic", ("generic", 6))])
def test_provenance_counts_the_templates_the_model_encoded(templates, expected, tmp_path, fake_cli, capsys):
    root = make_folder(tmp_path / "data", [("cats", 1), ("dogs", 2), ("birds", 3)], per_class=1)
    (tmp_path / "names.txt").write_text("bird\ncat\ndog\n")
    model = PromptCountingCLIP()
    flags = ["--templates", templates] if templates else []
    results = fake_cli(model, ["--data", str(root), "--classnames", str(tmp_path / "names.txt"), *flags])
    record = results["zeroshot"]["data"]["provenance"]
    assert (record["templates"], record["template_count"]) == expected  # CLIP's 80 ImageNet prompts, our 6
    assert record["template_count"] * 3 == model.prompts  # one prompt per class and template, each encoded once
    assert (record["class_names"], record["data"], record["images"]) == (str(tmp_path / "names.txt"), str(root), 3)
    assert (record["image_size"], record["crop_ratio"], record["resize"]) == (16, 0.875, 18)  # folders' default crop
    assert f"{expected[1]} templates ({expected[0]}), class names: {tmp_path / 'names.txt'}, 16 px bicubic, " \
           f"crop 0.875 (resize 18)" in capsys.readouterr().out


def test_provenance_of_retrieval_and_score(checkpoint, tmp_path):
    spec = "synthetic:noise=0.5,size=20"
    results = eval_cli.main(["--checkpoint", checkpoint, "--task", "retrieval", "--data", "synthetic", "--size", "12"])
    record = results["retrieval"]["synthetic"]["provenance"]
    assert (record["images"], record["precision"], record["crop_ratio"]) == (12, "fp32", 1.0)  # synthetic: no crop
    assert "templates" not in record  # zero-shot's alone
    results = eval_cli.main(["--checkpoint", checkpoint, "--task", "score", "--data", spec,
                             "--out", str(tmp_path / "scores.csv")])
    record = results["score"][spec]["provenance"]
    assert (record["data"], record["images"]) == (spec, 20)  # every training pair scored


def test_commit_is_none_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable to be found
    unknown = eval_cli.code_version.__wrapped__()  # uncached: asks git again
    assert unknown == {"tinyclip": tinyclip.__version__, "commit": None}
    steps = {"image_size": 32, "resize": 32, "interpolation": "bicubic", "crop_ratio": 1.0, "normalize": "clip"}
    record = {"data": "synthetic", "images": 8, **steps, "precision": "fp32", "checkpoint": "c.pt", **unknown}
    assert eval_cli.provenance_line(record).endswith(f"c.pt, tinyclip {tinyclip.__version__} @ unknown commit")


# ---------------------------------------------------------------------------------------------
# Known answers with the fake model

def test_zeroshot_on_a_folder_follows_class_names(tmp_path):
    root = make_folder(tmp_path / "data", [("dogs", 3), ("cats", 7)])  # sorted: cats (label 0), dogs (1)
    (tmp_path / "names.txt").write_text("seven\nthree\n")
    right = evaluation.zeroshot(FakeCLIP(), str(root), class_names=str(tmp_path / "names.txt"), templates="generic")
    assert (right["top1"], right["n"], right["classes"]) == (1.0, 4, 2)
    (tmp_path / "swapped.txt").write_text("three\nseven\n")
    assert evaluation.zeroshot(FakeCLIP(), str(root), class_names=str(tmp_path / "swapped.txt"))["top1"] == 0.0
    (tmp_path / "tabs.txt").write_text("dogs\tthree\ncats\tseven\n")  # folder<TAB>name, any order
    assert evaluation.zeroshot(FakeCLIP(), str(root), class_names=str(tmp_path / "tabs.txt"))["top1"] == 1.0
    # the one class-names reader (formerly also ImageFolderDataset's, tests/test_data.py)
    assert read_class_names(str(tmp_path / "tabs.txt"), ["cats", "dogs"]) == ["seven", "three"]
    assert read_class_names(str(tmp_path / "names.txt"), ["cats", "dogs"]) == ["seven", "three"]
    (tmp_path / "short.txt").write_text("seven\n")
    with pytest.raises(ValueError, match="1 class names for 2 class folders"):
        evaluation.zeroshot(FakeCLIP(), str(root), class_names=str(tmp_path / "short.txt"))
    (tmp_path / "half.txt").write_text("cats\tseven\n")
    with pytest.raises(ValueError, match="names no class for folder 'dogs'"):
        evaluation.zeroshot(FakeCLIP(), str(root), class_names=str(tmp_path / "half.txt"))


def test_zeroshot_reads_integer_folders_as_class_indices(tmp_path):
    root = make_folder(tmp_path / "v2", [(str(j), j) for j in range(11)], per_class=1)  # "10" sorts before "2" as text
    result = evaluation.zeroshot(FakeCLIP(), str(root), class_names=NAMES, templates=["a photo of a {}."])
    assert (result["top1"], result["classes"]) == (1.0, 11)
    root = make_folder(tmp_path / "part", [("2", 2), ("10", 10)], per_class=1)  # some classes only: still 11-way
    result = evaluation.zeroshot(FakeCLIP(), str(root), class_names=NAMES, templates=["a photo of a {}."])
    assert (result["top1"], result["classes"]) == (1.0, 11)
    with pytest.raises(ValueError, match="class indices"):
        evaluation.zeroshot(FakeCLIP(), str(root))  # numbers are no class names


def test_zeroshot_class_subset_and_mapping(tmp_path):
    root = make_folder(tmp_path / "a", [("n01", 2), ("n02", 5)])
    (tmp_path / "subset.txt").write_text("# ImageNet-A style: the folders are these classes, in order\n2\n5\n")
    result = evaluation.zeroshot(FakeCLIP(), str(root), class_names=NAMES, class_subset=str(tmp_path / "subset.txt"))
    assert (result["top1"], result["classes"]) == (1.0, 2)

    root = make_folder(tmp_path / "objectnet", [("Alarm_clock", 4), ("banana", 9), ("unmapped", 1)])
    (tmp_path / "map.json").write_text(json.dumps({"alarm clock": [3, 4], "banana": [9]}))
    result = evaluation.zeroshot(FakeCLIP(), str(root), class_names=NAMES, class_subset=str(tmp_path / "map.json"))
    assert (result["top1"], result["top5"], result["n"], result["classes"]) == (1.0, None, 4, 2)


def test_retrieval_from_a_captions_json(tmp_path):
    images = []
    for j in range(4):
        grey(tmp_path / "val2014" / f"{j}.jpg", j)
        images.append({"filepath": "val2014", "filename": f"{j}.jpg", "split": "test",
                       "sentences": [{"raw": f"a photo of {NAMES[j]}"}, {"raw": f"{NAMES[j]} again"}]})
    images.append({"filepath": "train2014", "filename": "x.jpg", "split": "train", "sentences": [{"raw": "no"}]})
    (tmp_path / "karpathy.json").write_text(json.dumps({"images": images}))
    result = evaluation.retrieval(FakeCLIP(), str(tmp_path / "karpathy.json"))
    assert (result["images"], result["captions"]) == (4, 8)  # the train image is not in the test split
    assert result["image_to_text_R@1"] == result["text_to_image_R@1"] == 1.0

    coco = {"images": [{"id": 7, "file_name": "val2014/2.jpg"}, {"id": 8, "file_name": "val2014/3.jpg"}],
            "annotations": [{"image_id": 8, "caption": "three"}, {"image_id": 7, "caption": "two"}]}
    (tmp_path / "captions_val.json").write_text(json.dumps(coco))
    assert evaluation.retrieval(FakeCLIP(), str(tmp_path / "captions_val.json"))["text_to_image_R@1"] == 1.0


def test_score_ranks_matching_pairs_first(tmp_path):
    rows = [("img/0.png", "zero"), ("img/1.png", "four"), ("img/2.png", "two"), ("img/2.png", "ten"),
            ("img/missing.png", "five")]
    for j in range(3):
        grey(tmp_path / "img" / f"{j}.png", j)
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filepath", "title"), *rows])
    model = FakeCLIP(3 * torch.eye(len(NAMES)))  # features of norm 3: a score is a cosine, not a dot product
    result = evaluation.score(model, str(tmp_path / "pairs.csv"), tmp_path / "scores.csv")
    scores = read_scores(str(tmp_path / "scores.csv"))
    # matching caption 1, wrong 0, two captions their mean, an unreadable image -inf (kept last)
    assert scores == {"img/0.png": 1.0, "img/1.png": 0.0, "img/2.png": 0.5, "img/missing.png": float("-inf")}
    assert (result["pairs"], result["scored"], result["skipped"]) == (4, 3, 1)


def test_probes_on_folders(tmp_path):
    classes = [("three", 3), ("six", 6), ("nine", 9)]
    train, test = make_folder(tmp_path / "train", classes, 4), make_folder(tmp_path / "test", classes, 2)
    assert probe.linear_probe(FakeCLIP(), str(train), str(test), weight_decay=1e-3)["top1"] == 1.0
    result = probe.fewshot(FakeCLIP(), str(train), str(test), ks=(2,), seeds=(0,), weight_decay=1e-3)
    assert result["2-shot"]["mean"] == 1.0 and result["classes"] == 3


# ---------------------------------------------------------------------------------------------
# Known fractions: hand-made feature tables, ties that must count against

def table(rows):
    """An image table for FakeCLIP: row j (padded with zeros to len(NAMES)) is grey level j's feature."""
    return torch.tensor([row + [0.0] * (len(NAMES) - len(row)) for row in rows])


def test_zeroshot_top1_top5_known_fractions_with_ties(tmp_path):
    # Folder c<j> holds one image of grey level j, class j, named NAMES[j]; the text side is e_j, so
    # the cosine logits of image j are its table row (scaled). Its rank = wrong classes scoring >= it.
    rows = [[3, 1, 1, 1, 1, 1, 1],  # class 0: rank 0
            [2, 2, 0, 0, 0, 0, 0],  # class 1: tied with class 0 -> rank 1 (a tie counts against)
            [0, 0, 1, 0, 0, 0, 0],  # class 2: rank 0
            [6, 5, 4, 1, 3, 2, 0],  # class 3: classes 0, 1, 2, 4, 5 above -> rank 5 (outside the top 5)
            [5, 4, 3, 2, 1, 0, 0],  # class 4: classes 0-3 above -> rank 4 (top-5, not top-1)
            [1, 1, 1, 1, 1, 1, 1],  # class 5: tied with all six others -> rank 6
            [0, 0, 0, 0, 0, 0, 1]]  # class 6: rank 0
    root = make_folder(tmp_path / "data", [(f"c{j}", j) for j in range(7)], per_class=1)
    result = evaluation.zeroshot(FakeCLIP(table(rows)), str(root), class_names=NAMES[:7],
                                 templates=["a photo of a {}.", "a {}."])
    assert (result["n"], result["classes"]) == (7, 7)
    assert result["top1"] == 3 / 7 and result["top5"] == 5 / 7  # ranks 0, 1, 0, 5, 4, 6, 0


def tied_pairs(tmp_path):
    """(pairs.csv, model): images 0-5 have grey levels 0-5; their features are e0, e1, e2, e3, e5, e5
    (image 4 looks like "five"). A caption's feature is the indicator of the NAMES it holds."""
    for j in range(6):
        grey(tmp_path / "img" / f"{j}.png", j)
    captions = [(0, "zero"), (1, "one"), (1, "zero"), (2, "two three"), (3, "three"), (4, "four"), (5, "five")]
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filepath", "title"), *((f"img/{j}.png", text) for j, text in captions)])
    return str(tmp_path / "pairs.csv"), FakeCLIP(table([[1], [0, 1], [0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0, 0, 1],
                                                        [0, 0, 0, 0, 0, 1]]))


def test_retrieval_recall_known_fractions_with_ties(tmp_path):
    result = evaluation.retrieval(*reversed(tied_pairs(tmp_path)))
    assert (result["images"], result["captions"]) == (6, 7)
    # image -> text, rank of its best caption: image 0's "zero" ties image 1's "zero" -> 1; image 4's
    # "four" scores 0, as do 5 wrong captions, and "five" scores 1 -> 6; images 1, 2, 3, 5 -> 0
    assert result["image_to_text_R@1"] == 4 / 6
    assert result["image_to_text_R@5"] == 5 / 6 and result["image_to_text_R@10"] == 1.0
    # text -> image: "zero"(0), "one", "three" -> 0; "two three" ties images 2 and 3 -> 1; "five" ties
    # images 4 and 5 -> 1; "four" scores 0 on every image -> 5; "zero"(1) is below image 0 and tied
    # with the other four -> 5
    assert result["text_to_image_R@1"] == 3 / 7
    assert result["text_to_image_R@5"] == 5 / 7 and result["text_to_image_R@10"] == 1.0


def test_mean_per_class_recall_weighs_classes_equally_and_skips_absent_ones(tmp_path):
    # cats: two images look like "seven" (right), one like "three" (wrong); dogs: one "three" (right).
    # top-1 = 3/4; per class (2/3 + 1) / 2 = 5/6
    for i, j in enumerate((7, 7, 3)):
        grey(tmp_path / "data" / "cats" / f"{i}.png", j)
    grey(tmp_path / "data" / "dogs" / "0.png", 3)
    result = evaluation.zeroshot(FakeCLIP(), str(tmp_path / "data"), class_names=["seven", "three"],
                                 templates=["a {}."])
    assert result["top1"] == 3 / 4 and result["mean_per_class_recall"] == pytest.approx(5 / 6)
    # 11-way (integer folders) with images of classes 2 and 10 only, one of class 2 taken for class 5:
    # the mean runs over the 2 classes with test images, as sklearn's balanced_accuracy_score
    # (CLIP_benchmark's) does: (2/3 + 1) / 2, not (2/3 + 1) / 11
    for i, j in enumerate((2, 2, 5)):
        grey(tmp_path / "v2" / "2" / f"{i}.png", j)
    grey(tmp_path / "v2" / "10" / "0.png", 10)
    result = evaluation.zeroshot(FakeCLIP(), str(tmp_path / "v2"), class_names=NAMES, templates=["a {}."])
    assert (result["top1"], result["classes"]) == (3 / 4, 11)
    assert result["mean_per_class_recall"] == pytest.approx(5 / 6)


def test_clip_benchmark_metric_names_and_directions(tmp_path, fake_cli):
    csv_path, model = tied_pairs(tmp_path)
    results = fake_cli(model, ["--task", "retrieval", "--data", csv_path, "--metric-names", "clip_benchmark",
                               "--json", str(tmp_path / "r.json")])
    retrieval = results["retrieval"]["pairs.csv"]
    assert json.loads((tmp_path / "r.json").read_text())["retrieval"] == results["retrieval"]
    # CLIP_benchmark's image_retrieval is text->image (3/7 at 1 here), text_retrieval image->text (4/6)
    assert retrieval["image_retrieval_recall@1"] == 3 / 7 and retrieval["image_retrieval_recall@5"] == 5 / 7
    assert retrieval["text_retrieval_recall@1"] == 4 / 6 and retrieval["text_retrieval_recall@10"] == 1.0
    assert not any("_R@" in key for key in retrieval) and (retrieval["images"], retrieval["captions"]) == (6, 7)
    root = make_folder(tmp_path / "data", [("c3", 3), ("c6", 6), ("c9", 9)], per_class=1)
    (tmp_path / "names.txt").write_text("three\nsix\nnine\n")
    zeroshot = fake_cli(FakeCLIP(), ["--data", str(root), "--classnames", str(tmp_path / "names.txt"),
                                     "--metric-names", "clip_benchmark"])["zeroshot"]["data"]
    assert (zeroshot["acc1"], zeroshot["acc5"], zeroshot["mean_per_class_recall"]) == (1.0, 1.0, 1.0)
    assert "top1" not in zeroshot and "top5" not in zeroshot


def test_csv_separator_for_pairs(tmp_path, fake_cli):
    for j in range(2):
        grey(tmp_path / "img" / f"{j}.png", j)
    (tmp_path / "pairs.csv").write_text("filepath;title\nimg/0.png;zero, a grey square\nimg/1.png;one\n")
    fake_cli(FakeCLIP(), ["--task", "score", "--data", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "s.csv"),
                          "--csv-separator", ";"])
    assert read_scores(str(tmp_path / "s.csv")) == {"img/0.png": 1.0, "img/1.png": 1.0}
    (tmp_path / "tabs.csv").write_text("filepath\ttitle\nimg/0.png\tzero, or nought\nimg/1.png\tone\n")
    result = fake_cli(FakeCLIP(), ["--task", "retrieval", "--data", str(tmp_path / "tabs.csv"),
                                   "--csv-separator", "\\t"])["retrieval"]["tabs.csv"]  # '\t' as a shell passes it
    assert (result["images"], result["captions"], result["text_to_image_R@1"]) == (2, 2, 1.0)


# ---------------------------------------------------------------------------------------------
# One-line errors

class Payload:
    """Pickles as a call of print: code that torch.load(weights_only=True) must refuse to run."""

    def __reduce__(self):
        return print, ("ran",)


def test_errors_are_one_line(checkpoint, tmp_path, capsys):
    assert "not found" in run_cli(["--checkpoint", str(tmp_path / "nope.pt")], capsys)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "--openai" in run_cli(["--checkpoint", str(tmp_path / "junk.pt")], capsys)
    assert "--checkpoint" in run_cli(["--openai", checkpoint], capsys)  # a tinyclip file given as OpenAI weights
    assert "unknown task 'segment'" in run_cli(["--checkpoint", checkpoint, "--task", "segment"], capsys)

    # unreadable files: one short line naming the file, the reason and the other flag, not torch's ~700 characters
    whole = open(checkpoint, "rb").read()
    (tmp_path / "truncated.pt").write_bytes(whole[:len(whole) // 2])  # a copy cut short
    torch.save({"model": Payload(), "config": {}}, tmp_path / "code.pt")
    with warnings.catch_warnings(record=True) as warned:  # a warning would be a second stderr line
        warnings.simplefilter("always")
        for flag, path, reason, hint in [
                ("--checkpoint", tmp_path / "junk.pt", "not a torch file", "--openai"),
                ("--openai", tmp_path / "junk.pt", "not a torch file", "--checkpoint"),
                ("--checkpoint", tmp_path / "truncated.pt", "truncated", "--openai"),
                ("--checkpoint", tmp_path / "code.pt", "code", "--openai"),
                ("--openai", tmp_path / "code.pt", "code", "--checkpoint"),
                ("--checkpoint", "tests/fixtures/openai_tiny_vit_jit.pt", "TorchScript", "--openai"),  # OpenAI's
                ("--checkpoint", "tests/fixtures/openai_tiny_vit.pt", "'model' and 'config'", "--openai"),  # state_dict
                ("--openai", checkpoint, "no OpenAI CLIP weight names", "--checkpoint")]:
            err = run_cli([flag, str(path)], capsys)
            assert str(path) in err and reason in err and err.endswith(f"use {hint}")
            assert len(err) - len(str(path)) <= 160 and "ran" not in capsys.readouterr().out
    assert not warned

    # flags that cannot work together are refused before any work
    err = run_cli(["--checkpoint", checkpoint, "--task", "zeroshot", "--size", "8", "--out", "s.csv"], capsys)
    assert "--out" in err and "score" in err
    assert "--out" in run_cli(["--checkpoint", checkpoint, "--task", "zeroshot", "score", "--size", "8"], capsys)
    assert "--csv-separator" in run_cli(["--checkpoint", checkpoint, "--csv-separator", ";;"], capsys)

    root = make_folder(tmp_path / "data", [("cats", 1), ("dogs", 2)], per_class=1)
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    err = run_cli(["--checkpoint", checkpoint, "--data", str(root), "--classnames", str(tmp_path / "names.txt")], capsys)
    assert "3 class names for 2 class folders" in err
    (tmp_path / "empty").mkdir()
    assert "no images" in run_cli(["--checkpoint", checkpoint, "--data", str(tmp_path / "empty")], capsys)
    assert "--train-data" in run_cli(["--checkpoint", checkpoint, "--task", "linear-probe", "--data", str(root)], capsys)
    assert "--out" in run_cli(["--checkpoint", checkpoint, "--task", "score"], capsys)
    average = make_folder(tmp_path / "average", [("cats", 1), ("dogs", 2)], per_class=1)
    with pytest.raises(SystemExit):  # found once both datasets ran: their progress bars come first
        eval_cli.main(["--checkpoint", checkpoint, "--data", str(root), str(average)])
    assert capsys.readouterr().err.endswith("eval.py: error: a dataset may not be named 'average'\n")
