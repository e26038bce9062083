"""Tests for tinyclip/probe.py: the L-BFGS linear probe and few-shot evaluation on frozen features.

Checks that the probe starts at zero, reaches its optimum (the gradient of the regularised objective
vanishes), is deterministic, scores ~100% on linearly separable features and ~chance on shuffled
labels, chooses its weight decay from the grid on a stratified held-out split; that few-shot
sampling takes exactly k per class, is reproducible per seed and names a class that is too small;
and that fewshot_accuracy reports mean, std and per-seed accuracies (the tasks end to end on a
model are in tests/test_eval.py). Runs on CPU in a few seconds.
"""
import pytest
import torch
import torch.nn.functional as F

from tinyclip.probe import (
    WEIGHT_DECAYS, LinearProbe, _stratified_holdout, fewshot_accuracy, probe_accuracy, sample_fewshot,
    train_linear_probe,
)

FAST = dict(max_iter=100, weight_decays=(1e-4, 1e-2, 1.0))  # a short grid keeps the file fast


def blobs(per_class, num_classes=4, dim=8, seed=0, spread=0.5):
    """Linearly separable features: class c is a Gaussian blob around 5 * e_c, offset and scaled."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = 5 * F.one_hot(labels, dim).float() + spread * torch.randn(len(labels), dim, generator=generator)
    return features * 30 + 7, labels  # a feature scale far from 1: the standardisation must handle it


def test_probe_starts_at_zero():
    assert WEIGHT_DECAYS == (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the default grid
    probe = LinearProbe(6, 3)
    assert probe.linear.weight.abs().sum() == 0 and probe.linear.bias.abs().sum() == 0
    assert probe(torch.randn(2, 6)).abs().sum() == 0


def test_probe_reaches_the_optimum_of_its_objective():
    features, labels = blobs(20, spread=3.0)
    probe = train_linear_probe(features, labels, 4, weight_decay=0.1, max_iter=500)
    weight = probe.linear.weight.detach().clone().requires_grad_(True)
    bias = probe.linear.bias.detach().clone().requires_grad_(True)
    x = (features - probe.mean) / probe.std
    loss = F.cross_entropy(x @ weight.t() + bias, labels) + 0.5 * 0.1 * weight.pow(2).sum()
    grad_weight, grad_bias = torch.autograd.grad(loss, (weight, bias))
    assert grad_weight.abs().max() < 1e-4 and grad_bias.abs().max() < 1e-4
    assert probe.weight_decay == 0.1


def test_linear_probe_separable_features_reach_full_accuracy():
    (train_x, train_y), (test_x, test_y) = blobs(50, seed=0), blobs(50, seed=1)
    result = probe_accuracy(train_x, train_y, test_x, test_y, 4, **FAST)
    assert result["top1"] >= 0.99
    assert result["weight_decay"] in FAST["weight_decays"]


def test_linear_probe_shuffled_labels_is_near_chance():
    generator = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(400, 16, generator=generator), torch.randn(2000, 16, generator=generator)
    train_y = torch.randint(0, 4, (400,), generator=generator)
    test_y = torch.randint(0, 4, (2000,), generator=generator)
    assert 0.18 < probe_accuracy(train_x, train_y, test_x, test_y, 4, **FAST)["top1"] < 0.32


def test_linear_probe_is_deterministic():
    features, labels = blobs(15, spread=3.0)
    first = train_linear_probe(features, labels, 4, **FAST)
    second = train_linear_probe(features, labels, 4, **FAST)
    assert first.weight_decay == second.weight_decay
    assert first.linear.weight.equal(second.linear.weight) and first.linear.bias.equal(second.linear.bias)


def test_weight_decay_search_holds_out_each_class():
    labels = torch.arange(3).repeat_interleave(10)
    fit, held_out = _stratified_holdout(labels, 0.2, seed=0)
    assert torch.bincount(labels[held_out]).tolist() == [2, 2, 2]
    assert sorted(fit.tolist() + held_out.tolist()) == list(range(30))
    features, few = blobs(3)
    with pytest.raises(ValueError, match="weight_decay"):
        train_linear_probe(features, few, 4)  # 3 per class: nothing to hold out at 20%


def test_sample_fewshot_takes_exactly_k_per_class_deterministically():
    labels = torch.tensor([0, 1, 2] * 7 + [2, 2])
    index = sample_fewshot(labels, 5, seed=0, num_classes=3)
    assert torch.bincount(labels[index]).tolist() == [5, 5, 5] and len(set(index.tolist())) == 15
    assert index.equal(sample_fewshot(labels, 5, seed=0, num_classes=3))
    assert not index.equal(sample_fewshot(labels, 5, seed=1, num_classes=3))
    with pytest.raises(ValueError, match="class 0 has only 7"):
        sample_fewshot(labels, 8, seed=0, num_classes=3)
    with pytest.raises(ValueError, match="class 3 has only 0"):
        sample_fewshot(labels, 5, seed=0, num_classes=4)


def test_fewshot_accuracy_reports_mean_std_and_seeds():
    (train_x, train_y), (test_x, test_y) = blobs(30, seed=0), blobs(25, seed=1)
    results = fewshot_accuracy(train_x, train_y, test_x, test_y, 4, ks=(5, 10), seeds=(0, 1, 2), **FAST)
    assert sorted(results) == [5, 10]
    for k, result in results.items():
        assert len(result["per_seed"]) == 3 and len(result["weight_decays"]) == 3
        assert result["mean"] == pytest.approx(sum(result["per_seed"]) / 3)
        assert result["mean"] >= 0.95 and result["std"] >= 0
