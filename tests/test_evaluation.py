"""Tests for tinyclip/evaluation.py: the evaluation math on hand-made inputs with known answers.

Checks top-k accuracy and Recall@K on hand-made score matrices (pessimistic ties, several captions
per image, chunking, and agreement with a naive sort-based reference), the mean per-class recall
(CLIP_benchmark's, i.e. sklearn's balanced accuracy: classes without a test sample left out),
zero-shot classifier weights against a hand computation with a fake model, ImageNet-A/-R class
subsets and the ObjectNet-style mapped correctness, the one encode loop (raw features, labels and keys passed through, eval mode
restored, bf16 autocast) and the feature cache keyed by the checkpoint file. Pair scoring and the
robustness average are checked end to end in tests/test_eval.py. Runs on CPU in a few seconds.
"""
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyclip.evaluation import (
    ASSETS, encode, image_features, label_ranks, load_class_subset, mapped_correct, mean_per_class_recall,
    retrieval_recall, subset_logits, topk_accuracy, zeroshot_classifier, zeroshot_logits,
)
from tinyclip.synthetic import SyntheticClassification
from tinyclip.tokenizer import tokenize


# --- top-k accuracy ------------------------------------------------------------------------

def test_topk_accuracy_known_answer_with_pessimistic_ties():
    logits = torch.tensor([
        [3.0, 1.0, 2.0],  # label 0, clear winner: rank 0
        [1.0, 2.0, 2.0],  # label 1 tied with class 2: rank 1 (a tie counts against)
        [5.0, 5.0, 5.0],  # label 2 tied with both others: rank 2
        [0.0, 1.0, 2.0],  # label 0, last: rank 2
    ])
    labels = torch.tensor([0, 1, 2, 0])
    assert topk_accuracy(logits, labels, ks=(1, 2, 3)) == {"top1": 0.25, "top2": 0.5, "top3": 1.0}
    assert topk_accuracy(logits, labels, ks=(1, 2, 3), chunk_size=1) == {"top1": 0.25, "top2": 0.5, "top3": 1.0}


def test_topk_accuracy_equals_torch_topk_without_ties():
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(500, 20, generator=generator), torch.randint(0, 20, (500,), generator=generator)
    result = topk_accuracy(logits, labels, ks=(1, 5), chunk_size=64)
    for k in (1, 5):
        expected = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean().item()
        assert result[f"top{k}"] == pytest.approx(expected)


def test_mean_per_class_recall_known_answer():
    # class 0: 3 samples, 2 right; class 1: 1 sample, right; class 3: 2 samples, none right; classes 2
    # and 4 have no sample (sklearn's balanced_accuracy_score leaves them out): (2/3 + 1 + 0) / 3
    labels = torch.tensor([0, 3, 0, 1, 0, 3])
    correct = torch.tensor([True, False, False, True, True, False])
    assert mean_per_class_recall(correct, labels) == pytest.approx(5 / 9)  # top-1 would be 3/6
    logits = torch.tensor([[2.0, 1.0], [1.0, 1.0], [0.0, 3.0]])  # ranks 0, 1 (a tie counts against), 0
    ranks = label_ranks(logits, torch.tensor([0, 0, 1]))
    assert ranks.tolist() == [0, 1, 0] and mean_per_class_recall(ranks == 0, torch.tensor([0, 0, 1])) == 0.75


# --- retrieval -----------------------------------------------------------------------------

# similarity[i, t] of image i and caption t; captions 0, 1 describe image 0, captions 2, 3 image 1, caption 4 image 2.
SIMILARITY = torch.tensor([
    [0.9, 0.1, 0.8, 0.2, 0.0],  # image 0: its caption 0 is first -> rank 0 (caption 1 far down does not matter)
    [0.5, 0.7, 0.7, 0.1, 0.3],  # image 1: its caption 2 ties wrong caption 1 -> rank 1
    [0.6, 0.6, 0.2, 0.4, 0.3],  # image 2: captions 0, 1, 3 above its caption 4 -> rank 3
])
TEXT_TO_IMAGE = torch.tensor([0, 0, 1, 1, 2])
# caption -> image ranks (columns): t0: 0; t1: 2; t2: 1 (image 0 at 0.8); t3: 2; t4: 1 (ties image 1 at 0.3)


@pytest.mark.parametrize("chunk_size", [1, 2, 1024])
def test_retrieval_recall_known_answer(chunk_size):
    # image features = identity and text features = similarity columns make the dot products exact
    result = retrieval_recall(torch.eye(3), SIMILARITY.t(), TEXT_TO_IMAGE, ks=(1, 2, 3, 4), chunk_size=chunk_size,
                              normalize=False)
    assert result["image_to_text_R@1"] == pytest.approx(1 / 3)
    assert result["image_to_text_R@2"] == pytest.approx(2 / 3)
    assert result["image_to_text_R@3"] == pytest.approx(2 / 3)
    assert result["image_to_text_R@4"] == pytest.approx(1.0)
    assert result["text_to_image_R@1"] == pytest.approx(1 / 5)
    assert result["text_to_image_R@2"] == pytest.approx(3 / 5)
    assert result["text_to_image_R@3"] == pytest.approx(1.0)


def _reference_first_hit(scores, positive):
    """Position of the first positive after sorting by score descending, wrong items first on ties."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], positive[j]))
    return next(position for position, j in enumerate(order) if positive[j])


def test_retrieval_recall_matches_naive_sort_reference_with_many_ties():
    generator = torch.Generator().manual_seed(0)
    n_images, per_image = 12, 3
    n_texts = n_images * per_image
    text_to_image = torch.arange(n_images).repeat_interleave(per_image)[torch.randperm(n_texts, generator=generator)]
    images, texts = torch.eye(n_images), (torch.rand(n_texts, n_images, generator=generator) * 4).round() / 4
    similarity = (images @ texts.t()).tolist()  # N, T, values in {0, .25, .5, .75, 1}: ties everywhere
    image_ranks = [_reference_first_hit(row, [int(t) == i for t in text_to_image]) for i, row in enumerate(similarity)]
    text_ranks = [_reference_first_hit([similarity[i][t] for i in range(n_images)],
                                       [i == int(text_to_image[t]) for i in range(n_images)])
                  for t in range(n_texts)]
    result = retrieval_recall(images, texts, text_to_image, ks=(1, 5, 10), chunk_size=5, normalize=False)
    for k in (1, 5, 10):
        assert result[f"image_to_text_R@{k}"] == pytest.approx(sum(r < k for r in image_ranks) / n_images)
        assert result[f"text_to_image_R@{k}"] == pytest.approx(sum(r < k for r in text_ranks) / len(texts))


def test_retrieval_recall_is_cosine():
    generator = torch.Generator().manual_seed(1)
    images, texts = torch.randn(6, 8, generator=generator), torch.randn(12, 8, generator=generator)
    text_to_image = torch.arange(6).repeat(2)
    scaled = retrieval_recall(images * torch.rand(6, 1, generator=generator) * 10, texts * 3, text_to_image)
    assert scaled == retrieval_recall(images, texts, text_to_image)  # per-row scaling cannot change cosines


# --- zero-shot -----------------------------------------------------------------------------

class FakeTextModel(nn.Module):
    """encode_text looks the prompt's CLIP token ids up in a fixed random table with non-unit norms."""

    def __init__(self, prompts, dim=5):
        super().__init__()
        self.prompt_ids = tokenize(prompts, context_length=12)  # P, L
        self.table = nn.Parameter(torch.randn(len(prompts), dim, generator=torch.Generator().manual_seed(0)) * 3)
        self.config = SimpleNamespace(context_length=12)
        self.calls = 0

    def encode_text(self, ids, normalize=False):
        assert not self.training, "zero-shot encoding must run in eval mode"
        assert ids.shape[1] == 12  # the context length is taken from model.config
        self.calls += 1
        return self.table[(ids[:, None, :] == self.prompt_ids[None]).all(dim=2).float().argmax(dim=1)]


def test_zeroshot_classifier_equals_hand_computation():
    class_names, templates = ["cat", "dog", "red car"], ["a photo of a {}.", "a {} in the wild.", "{}"]
    prompts = [t.format(c) for c in class_names for t in templates]
    model = FakeTextModel(prompts).train()
    assert len({tuple(ids) for ids in model.prompt_ids.tolist()}) == len(prompts)  # every prompt its own row
    weights = zeroshot_classifier(model, class_names, templates, batch_size=4)
    unit = {p: F.normalize(model.table[i], dim=0) for i, p in enumerate(prompts)}
    expected = torch.stack([F.normalize(torch.stack([unit[t.format(c)] for t in templates]).mean(0), dim=0)
                            for c in class_names], dim=1)  # D, C
    assert weights.shape == (5, 3)
    torch.testing.assert_close(weights, expected.detach())
    assert model.training and model.calls == 3  # 9 prompts in batches of 4; training mode restored
    one_by_one = zeroshot_classifier(model, class_names, templates, batch_size=1)
    torch.testing.assert_close(one_by_one, weights)
    with pytest.raises(ValueError, match="placeholder"):
        zeroshot_classifier(model, class_names, ["a photo"])


def test_zeroshot_logits_are_cosines():
    classifier = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # D=2, C=2
    logits = zeroshot_logits(torch.tensor([[3.0, 4.0]]), classifier)
    torch.testing.assert_close(logits, torch.tensor([[0.6, 0.8]]))


# --- robustness: class subsets, mappings, averages -----------------------------------------

def test_builtin_class_subsets_are_200_imagenet_classes():
    names = (ASSETS / "imagenet_classnames.txt").read_text().splitlines()
    for subset, first, last in (("imagenet-a", ["stingray", "goldfinch", "junco"], "acorn"),
                                ("imagenet-r", ["goldfish", "great white shark", "hammerhead shark"], "acorn")):
        indices = load_class_subset(subset)
        assert len(indices) == 200 and indices == sorted(set(indices)) and 0 <= indices[0] and indices[-1] < 1000
        assert [names[i] for i in indices[:3]] == first and names[indices[-1]] == last


def test_class_subset_file_of_indices(tmp_path):
    path = tmp_path / "subset.txt"
    path.write_text("# my subset\n3\n2  # a comment\n\n0\n")
    assert load_class_subset(path) == [3, 2, 0]
    path.write_text("3\nn002\n")
    with pytest.raises(ValueError, match="n002"):
        load_class_subset(path)  # a WordNet id is no class index
    with pytest.raises(FileNotFoundError):
        load_class_subset(tmp_path / "missing.txt")


def test_subset_logits_reindexes_labels():
    logits = torch.tensor([[9.0, 1.0, 0.0, 2.0, 0.0],   # argmax over all is class 0, over {1, 3} it is 3 -> label 1
                           [9.0, 5.0, 0.0, 2.0, 0.0]])  # over {1, 3} it is 1 -> label 0
    restricted = subset_logits(logits, [1, 3])
    torch.testing.assert_close(restricted, torch.tensor([[1.0, 2.0], [5.0, 2.0]]))
    assert topk_accuracy(restricted, torch.tensor([1, 1]), ks=(1,))["top1"] == 0.5


def test_mapped_accuracy_objectnet_style():
    logits = torch.tensor([
        [0.1, 0.9, 0.0, 0.0, 0.0, 2.0],  # label 0: best mapped class 1 is right; unmapped 5 wins if unrestricted
        [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],  # label 1: class 3 -> correct
        [1.0, 0.0, 0.0, 0.5, 0.0, 0.0],  # label 1: class 0 -> wrong
    ])
    labels, mapping = torch.tensor([0, 1, 1]), [[0, 1], [3]]
    assert mapped_correct(logits, labels, mapping).tolist() == [True, True, False]
    assert mapped_correct(logits, labels, mapping).float().mean().item() == pytest.approx(2 / 3)
    assert logits.argmax(dim=1).tolist() == [5, 3, 0]  # unrestricted, row 0 would go to unmapped class 5: 1/3


# --- the encode loop and the feature cache -----------------------------------------------

class FakeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_proj = nn.Linear(4, 3)
        self.text_proj = nn.Embedding(10, 3)
        self.image_calls = 0

    def encode_image(self, images, mask_ratio=0.0, normalize=False):
        assert not self.training, "encoding must run in eval mode"
        self.image_calls += 1
        return self.image_proj(images.flatten(1)[:, :4])

    def encode_text(self, ids, normalize=False):
        return self.text_proj(ids).mean(dim=1)


def test_encode_gives_raw_features_and_passes_the_rest_through():
    torch.manual_seed(0)
    model = FakeModel().train()
    images, labels = torch.randn(10, 4), torch.arange(10) % 3
    batches = [{"image": images[:4], "target": labels[:4]}, {"image": images[4:], "target": labels[4:]}]
    encoded = list(encode(model, batches))
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([b["image"] for b in encoded]), model.image_proj(images))
    assert torch.cat([b["target"] for b in encoded]).equal(labels) and model.image_calls == 2
    assert model.training and not encoded[0]["image"].requires_grad  # mode restored, no graph kept


def test_encode_pairs_with_keys_under_bf16():
    torch.manual_seed(0)
    model = FakeModel()
    ids = torch.randint(0, 10, (6, 5))
    batches = [{"image": torch.randn(3, 4), "text": ids[:3], "key": ["k0", "k1", "k2"]},
               {"image": torch.randn(3, 4), "text": ids[3:], "key": ["k3", "k4", "k5"]}]
    encoded = list(encode(model, batches, precision="bf16"))
    assert [key for b in encoded for key in b["key"]] == [f"k{i}" for i in range(6)]
    image = torch.cat([b["image"] for b in encoded])
    assert image.dtype == torch.float32 and image.shape == (6, 3)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([b["text"] for b in encoded]), model.encode_text(ids),
                                   atol=2e-2, rtol=2e-2)
    with pytest.raises(ValueError, match="precision"):
        list(encode(model, batches, precision="fp8"))


def test_feature_cache_is_keyed_by_the_checkpoint_file_and_the_transform(tmp_path):
    torch.manual_seed(0)
    model = FakeModel()
    model.visual = SimpleNamespace(image_size=16)
    dataset = SyntheticClassification("val", label_set="shape", size=5)
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"weights")

    def features(**options):
        settings = dict(image_size=None, normalize="clip", crop_ratio=None, device=None, precision="fp32",
                        batch_size=2, workers=0, cache_dir=tmp_path / "cache", checkpoint=checkpoint)
        return image_features(model, dataset, **{**settings, **options})

    first = features()
    assert model.image_calls == 3 and first["labels"].tolist() == [dataset[i][1] for i in range(5)]
    again = features()  # read back from the cache: the model is not called
    assert model.image_calls == 3 and again["image"].equal(first["image"]) and again["labels"].equal(first["labels"])
    features(image_size=32)  # another transform: another cache file
    assert model.image_calls == 6
    os.utime(checkpoint, ns=(0, 0))  # the checkpoint re-written in place: its mtime changes the key
    features()
    assert model.image_calls == 9 and len(list((tmp_path / "cache").glob("image-*.pt"))) == 3
    assert features(cache_dir=None)["image"].equal(first["image"]) and model.image_calls == 12
    sketch = image_features(model, SyntheticClassification("val", label_set="shape", size=5, style="sketch"),
                            **{**dict(image_size=None, normalize="clip", crop_ratio=None, device=None,
                                      precision="fp32", batch_size=2, workers=0), "cache_dir": tmp_path / "cache",
                               "checkpoint": checkpoint})  # the same scenes in another style: their own file
    assert model.image_calls == 15 and len(list((tmp_path / "cache").glob("image-*.pt"))) == 4
    assert not sketch["image"].equal(first["image"]) and sketch["labels"].equal(first["labels"])
