"""A short real training run, then evaluation of what it learned: zero-shot on the synthetic
held-out split is well above chance (an untrained model is near it), and pair scoring ranks
clean synthetic pairs above corrupted ones, which is what the paper's quality filter relies on."""

import csv

import pytest
import torch

import eval as eval_cli
import train
from tinyclip.checkpoint import load_checkpoint
from tinyclip.synthetic import SyntheticPairs
from tinyclip.evaluation import zeroshot

FLAGS = ["--arch", "vit-test", "--text-arch", "test", "--image-size", "32", "--context-length", "16",
         "--workers", "0", "--eval-data", "none", "--batch-size", "32", "--samples-seen", str(32 * 150),
         "--lr", "1e-3", "--warmup", "15", "--log-every", "50"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    train.main(FLAGS + ["--out", str(out)])
    return out / "ckpt.pt"


def test_zeroshot_trained_beats_chance_untrained_does_not(trained):
    model, _ = load_checkpoint(trained)
    chance = 1 / 7
    learned = zeroshot(model, "synthetic", label_set="color", size=300, normalize="clip")
    assert learned["top1"] > 3 * chance

    torch.manual_seed(0)
    untrained = train.create_model("vit-test", text_arch="test", image_size=32, context_length=16).eval()
    blind = zeroshot(untrained, "synthetic", label_set="color", size=300, normalize="clip")
    assert blind["top1"] < 2 * chance


def test_scores_rank_clean_pairs_above_corrupted(trained, tmp_path):
    spec = "synthetic:noise=0.5,size=300,image_size=32"
    out = tmp_path / "scores.csv"
    eval_cli.main(["--checkpoint", str(trained), "--task", "score", "--data", spec, "--out", str(out)])
    scores = {row["key"]: float(row["score"]) for row in csv.DictReader(out.open())}
    pool = SyntheticPairs("train", size=300, noise=0.5, image_size=32)
    clean = [scores[pool.meta(i)["key"]] for i in range(300) if pool.meta(i)["clean"]]
    noisy = [scores[pool.meta(i)["key"]] for i in range(300) if not pool.meta(i)["clean"]]
    # probability that a random clean pair outscores a random corrupted one (the ranking's AUC)
    auc = sum(c > n for c in clean for n in noisy) / (len(clean) * len(noisy))
    assert auc > 0.65, auc
