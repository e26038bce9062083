"""Linear-probe and few-shot classification on a frozen image tower, for "Scaling (Down) CLIP" (Li,
Xie, Cubuk 2024), which reports ImageNet linear probing and 5-/10-shot accuracy: the classifier on
features, and the two tasks end to end (a model and a train and test dataset in, metrics out).

The probe is L2-regularised multinomial logistic regression, as in CLIP's linear-probe evaluation
(Radford et al. 2021, appendix A.3, which used scikit-learn's L-BFGS logistic regression), written
in torch so it runs on the GPU next to the features:
- features are standardised with the mean and standard deviation of the split being fitted, so one
  weight-decay grid suits every architecture's feature scale and L-BFGS is well conditioned;
- a zero-initialised linear layer (weights + bias) minimises mean cross-entropy + (wd / 2) * ||W||^2
  (no decay on the bias) with full-batch L-BFGS and a strong-Wolfe line search;
- the weight decay wd is chosen from a small log-spaced grid by top-1 accuracy on a stratified
  held-out 20% of the training split (ties go to the larger decay), then the probe is refitted on
  the whole training split with that decay.
Everything is deterministic: the split comes from a seeded generator and the fit is full-batch.
Few-shot evaluation samples exactly k training examples per class per seed and runs the same probe.

The tasks read "synthetic" as its train split (`train_size` images) to fit and its val split
(`size`) to test, with `label_set`'s classes; folders are a train and a test ImageFolder with the
same class folders. Features come from tinyclip.evaluation's encode loop (and its feature cache).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyclip.evaluation import image_features, topk_accuracy
from tinyclip.sources import open_labelled

WEIGHT_DECAYS = tuple(10.0 ** e for e in range(-6, 1))  # 1e-6 ... 1


# --------------------------------------------------------------------------------------------
# The probe

class LinearProbe(nn.Module):
    """Standardise features with stored statistics, then a linear layer: [N, D] -> logits [N, C]."""

    def __init__(self, num_features, num_classes):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.linear = nn.Linear(num_features, num_classes)
        nn.init.zeros_(self.linear.weight)  # zero init: the paper's choice, and it makes the fit deterministic
        nn.init.zeros_(self.linear.bias)
        self.weight_decay = None  # set by _fit

    def forward(self, features):
        return self.linear((features.float() - self.mean) / self.std)  # N, C


def _fit(features, labels, num_classes, weight_decay, max_iter):
    """A fresh zero-initialised probe, standardised on `features` and fitted with full-batch L-BFGS."""
    probe = LinearProbe(features.shape[1], num_classes).to(features.device)
    probe.mean, std = features.mean(dim=0), features.std(dim=0, correction=0)
    probe.std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant features stay at 0
    x = (features - probe.mean) / probe.std  # N, D: standardised once, not in every closure call
    optimizer = torch.optim.LBFGS(probe.linear.parameters(), lr=1.0, max_iter=max_iter, history_size=10,
                                  tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe.linear(x), labels) + 0.5 * weight_decay * probe.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)  # one step runs up to max_iter L-BFGS iterations
    probe.weight_decay = float(weight_decay)
    return probe.requires_grad_(False)


def _stratified_holdout(labels, fraction, seed):
    """Split indices into (fit, held_out), holding out floor(fraction * n_c) of each class c."""
    generator = torch.Generator().manual_seed(seed)
    fit, held_out = [], []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels.cpu() == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_held = int(fraction * len(members) + 1e-9)
        held_out.append(members[:n_held])
        fit.append(members[n_held:])
    return torch.cat(fit).sort().values, torch.cat(held_out).sort().values


def train_linear_probe(train_feats, train_labels, num_classes, *, weight_decays=WEIGHT_DECAYS, weight_decay=None,
                       holdout_fraction=0.2, max_iter=1000, seed=0):
    """Fit a LinearProbe on features [N, D] and labels [N] (full batch, on the features' device); its
    `.weight_decay` is `weight_decay`, or with None the one of `weight_decays` that scores best on a
    stratified held-out `holdout_fraction` (split seeded by `seed`), refitted on all of the data."""
    features, labels = train_feats.float(), train_labels.to(train_feats.device)
    if weight_decay is None:
        fit, held_out = _stratified_holdout(labels, holdout_fraction, seed)
        if len(held_out) == 0:
            raise ValueError(f"too few examples per class to hold out {holdout_fraction:.0%} for choosing the "
                             "weight decay; pass weight_decay= explicitly")
        best_accuracy = -1.0
        for candidate in sorted(weight_decays):
            probe = _fit(features[fit], labels[fit], num_classes, candidate, max_iter)
            accuracy = (probe(features[held_out]).argmax(dim=1) == labels[held_out]).float().mean().item()
            if accuracy >= best_accuracy:  # >=: ties go to the larger (simpler) decay
                best_accuracy, weight_decay = accuracy, candidate
    return _fit(features, labels, num_classes, weight_decay, max_iter)


def probe_accuracy(train_feats, train_labels, test_feats, test_labels, num_classes, *, weight_decay=None,
                   weight_decays=WEIGHT_DECAYS, max_iter=1000, seed=0):
    """Train a probe on the train split, report {"top1": test accuracy, "weight_decay": chosen decay}."""
    probe = train_linear_probe(train_feats, train_labels, num_classes, weight_decay=weight_decay,
                               weight_decays=weight_decays, max_iter=max_iter, seed=seed)
    logits = probe(test_feats.to(probe.mean.device))  # N_test, C; the fitted probe needs no grad: no graph
    top1 = topk_accuracy(logits, test_labels.to(logits.device), ks=(1,))["top1"]
    return {"top1": top1, "weight_decay": probe.weight_decay}


# --------------------------------------------------------------------------------------------
# Few-shot

def sample_fewshot(labels, k, seed, num_classes):
    """Indices of exactly k examples of each class 0..num_classes-1, grouped by class, drawn by a
    generator seeded with `seed`; ValueError naming a class with fewer than k examples."""
    labels = labels.cpu()
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < k:
            raise ValueError(f"class {c} has only {len(members)} examples, fewer than k={k}")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(chosen)


def fewshot_accuracy(train_feats, train_labels, test_feats, test_labels, num_classes, *, ks=(5, 10), seeds=(0, 1, 2),
                     weight_decay=None, weight_decays=WEIGHT_DECAYS, max_iter=1000):
    """k-shot linear-probe accuracy over seeds: {k: {"mean", "std", "per_seed", "weight_decays"}}; each
    k-shot set gets its own probe (and decay search) and is tested on the whole test split; "std" is
    the sample standard deviation over seeds (0 for one seed)."""
    results = {}
    for k in ks:
        runs = []
        for seed in seeds:
            index = sample_fewshot(train_labels, k, seed, num_classes)
            runs.append(probe_accuracy(train_feats[index.to(train_feats.device)], train_labels[index], test_feats,
                                       test_labels, num_classes, weight_decay=weight_decay,
                                       weight_decays=weight_decays, max_iter=max_iter, seed=seed))
        top1 = torch.tensor([run["top1"] for run in runs], dtype=torch.float64)
        results[k] = {"mean": top1.mean().item(), "std": top1.std().item() if len(runs) > 1 else 0.0,
                      "per_seed": top1.tolist(), "weight_decays": [run["weight_decay"] for run in runs]}
    return results


# --------------------------------------------------------------------------------------------
# The tasks: a model and datasets in, metrics out

def _probe_features(model, train_data, test_data, *, label_set="shape-color", size=1000, train_size=2000, device=None,
                    **options):
    """(train features, train labels, test features, test labels) on the device, and the counts every probe
    reports: {"train", "test", "classes"}. options: image_features' (encoding, and cache_dir and checkpoint
    for its feature cache)."""
    device, splits = device or next(model.parameters()).device, []
    for data, split, n in ((train_data, "train", train_size), (test_data, "val", size)):
        dataset = open_labelled(data, split, label_set=label_set, size=n)
        features = image_features(model, dataset, device=device, **options)
        splits.append((features["image"].to(device), features["labels"].to(device), dataset.classes))
    (train_x, train_y, train_classes), (test_x, test_y, test_classes) = splits
    if list(train_classes) != list(test_classes):
        differ = next((f"{a!r} vs {b!r}" for a, b in zip(train_classes, test_classes) if a != b), "")
        raise ValueError(f"a probe needs the same classes in train and test data: {train_data} has "
                         f"{len(train_classes)}, {test_data} has {len(test_classes)} {differ}".rstrip())
    return train_x, train_y, test_x, test_y, {"train": len(train_y), "test": len(test_y), "classes": len(train_classes)}


def linear_probe(model, train_data="synthetic", test_data="synthetic", *, weight_decay=None, **data):
    """The linear probe of a model's frozen image features: {"top1", "weight_decay", "train", "test",
    "classes"}; weight_decay=None chooses the decay (see the top). data: label_set, size, train_size (see
    the top) and image_features' options (see _probe_features)."""
    *features, counts = _probe_features(model, train_data, test_data, **data)
    return {**probe_accuracy(*features, counts["classes"], weight_decay=weight_decay), **counts}


def fewshot(model, train_data="synthetic", test_data="synthetic", *, ks=(5, 10), seeds=(0, 1, 2), weight_decay=None,
            **data):
    """k-shot probes (fewshot_accuracy): {"5-shot": {"mean", "std", "per_seed", "weight_decays"}, ...,
    "train" (images the shots are drawn from), "test", "classes"}. Arguments as for linear_probe."""
    *features, counts = _probe_features(model, train_data, test_data, **data)
    results = fewshot_accuracy(*features, counts["classes"], ks=ks, seeds=seeds, weight_decay=weight_decay)
    return {**{f"{k}-shot": value for k, value in results.items()}, **counts}
